"""Every mistake a user can make with the job ends in one clear message (exit 2).

Config, data and checkpoint problems are driven through the real command line
(``training.cli.main``); none may end in a traceback or lose a stored file.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.training.helpers import TINY
from training.checkpoint.files import MAGIC, CheckpointError, load_checkpoint, save_checkpoint
from training.cli.main import main
from training.config.train import TrainConfig
from training.data import flights
from training.engine.trainer import Trainer

Tiny = Callable[..., TrainConfig]


def _train(capsys: pytest.CaptureFixture[str], out: Path, *args: str) -> tuple[int, str]:
    argv = ["train", "--output-dir", str(out), "--no-mlflow"]
    for item in TINY:
        argv += ["--set", item]
    rc = main([*argv, *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.batch_size=0", "optim.batch_size: Input should be greater than or equal to 1"),
        ("optim.bogus=1", "optim.bogus: unknown field; valid fields here: name, "),
        ("optim.name=adam", "optim.name: Input should be 'adamw' or 'sgd'"),
        ("optim.grad_accum_steps=3", "must be a multiple of optim.grad_accum_steps 3"),
        ("schedule.cycle_mult=0.5", "schedule.cycle_mult: must be >= 1"),
        ("schedule.lr_min=0.5", "schedule.lr_min: must be in [0, lr_max="),
        ("schedule.peak_decay=0", "schedule.peak_decay: must be in (0, 1]"),
        (
            "schedule.restart_warmup_steps=5000",
            "schedule.restart_warmup_steps: must be smaller than",
        ),
        ("schedule.lr_max=.nan", "schedule.lr_max"),
        ("schedule.cycle_epochs=2", "cycle_steps and schedule.cycle_epochs are exclusive"),
        ("data.months=[13]", "data.months must be a non-empty list of months 1..12"),
        ("data.valid_fraction=1.5", "data.valid_fraction: Input should be less than 1"),
        ("runtime.device=tpu", "runtime.device: Input should be 'auto', 'cpu' or 'cuda'"),
        ("nan_guard.rollback_factor=2", "nan_guard.rollback_factor"),
    ],
)
def test_bad_config_values_name_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, message: str
) -> None:
    rc, err = _train(capsys, tmp_path, "--run-name", "x", "--set", override)
    assert rc == 2
    assert err.startswith("error: ")
    assert message in err
    assert not (tmp_path / "x").exists(), "nothing is written for a refused config"


@pytest.mark.parametrize(
    "override",
    [
        "schedule.lr_min=0.5",
        # the epoch forms too: their rates are checked before the size of the data is known
        'schedule={"cycle_epochs": 1, "cycle_steps": null, "peak_decay": 1.5}',
        'schedule={"cycle_epochs": 1, "cycle_steps": null, "restart_warmup_epochs": 2}',
    ],
)
def test_an_invalid_schedule_is_reported_before_the_data_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str
) -> None:
    # the data cannot even be opened: an error about the schedule proves it came first
    rc, err = _train(
        capsys,
        tmp_path,
        "--run-name",
        "x",
        "--set",
        "data.source=files",
        "--set",
        f"data.features={tmp_path / 'missing.parquet'}",
        "--set",
        override,
    )
    assert rc == 2, err
    assert "schedule" in err, err
    assert "missing.parquet" not in err, err


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 101])
def test_run_names_cannot_escape_the_output_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    rc, err = _train(capsys, tmp_path / "runs", "--run-name", name)
    assert rc == 2
    assert "run_name: String should match pattern" in err
    assert not (tmp_path / "escape").exists()


def test_missing_and_malformed_config_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, err = _train(capsys, tmp_path, "--config", str(tmp_path / "nope.yaml"))
    assert rc == 2
    assert "does not exist" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("schedule: [1, 2\n")
    rc, err = _train(capsys, tmp_path, "--config", str(bad))
    assert rc == 2
    assert "is not valid YAML" in err
    bad.write_text("- just\n- a list\n")
    rc, err = _train(capsys, tmp_path, "--config", str(bad))
    assert rc == 2
    assert "must be a mapping of sections" in err


def test_resume_needs_a_run_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _train(capsys, tmp_path, "--resume")
    assert rc == 2
    assert "--resume needs --run-name" in err


# --------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def january() -> tuple[pd.DataFrame, pd.DataFrame]:
    features, labels = flights.load_months([1])
    return features.tail(3000).reset_index(drop=True), labels.tail(3000).reset_index(drop=True)


def _files_args(tmp_path: Path, features: pd.DataFrame, labels: pd.DataFrame) -> list[str]:
    f, lab = tmp_path / "features.parquet", tmp_path / "labels.csv"
    features.to_parquet(f)
    labels.to_csv(lab, index=False)
    return ["--set", "data.source=files", "--set", f"data.features={f}"] + [
        "--set",
        f"data.labels={lab}",
    ]


def test_files_source_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], january: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    features, labels = january
    args = _files_args(tmp_path, features, labels)
    rc, err = _train(capsys, tmp_path, "--run-name", "ok", *args, "--set", "schedule.max_cycles=1")
    assert rc == 0, err


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f, lab: (f.drop(columns=["carrier"]), lab), "lacks column(s) ['carrier']"),
        (
            lambda f, lab: (f.assign(distance=f["distance"].astype(str) + " mi"), lab),
            "distance should be numeric but is object",
        ),
        (lambda f, lab: (f, lab.assign(late=0)), "has a single class (0)"),
        (lambda f, lab: (f, lab.assign(late=lab["late"] * 2)), "target 'late' must be 0 or 1"),
        (
            lambda f, lab: (f, lab.assign(late=lab["late"].where(lab.index != 5))),
            "(never null) but 1 row(s) hold ['null'], e.g. ids [",
        ),
        (lambda f, lab: (f, lab.rename(columns={"late": "delayed"})), "labels lack column 'late'"),
        (
            lambda f, lab: (f, pd.concat([lab, lab.head(3)])),
            "labels: id column 'flight_id' holds duplicate ids (6 rows share 3 id(s)), e.g. [",
        ),
        # the features' ids too, as validation checks them (they once trained silently)
        (
            lambda f, lab: (pd.concat([f, f.head(2)]), lab),
            "features: id column 'flight_id' holds duplicate ids (4 rows share 2 id(s))",
        ),
        (
            lambda f, lab: (f.assign(flight_id=f["flight_id"].where(f.index != 7)), lab),
            "features: id column 'flight_id' has 1 null value(s)",
        ),
        (
            lambda f, lab: (f, lab.assign(flight_id="other-" + lab["flight_id"])),
            "no feature row has a label",
        ),
        (lambda f, lab: (f.head(0), lab), "features has no rows"),
    ],
)
def test_bad_training_data_is_refused_with_the_reason(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    january: tuple[pd.DataFrame, pd.DataFrame],
    mutate: Callable[[pd.DataFrame, pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]],
    message: str,
) -> None:
    features, labels = mutate(january[0].copy(), january[1].copy())
    rc, err = _train(capsys, tmp_path, "--run-name", "x", *_files_args(tmp_path, features, labels))
    assert rc == 2
    assert message in err, err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"PAR1 this is not really parquet", "is not readable"),
        (b"\x00\x01\x02\x03binary junk\xff\xfe", "is not readable CSV"),
    ],
)
def test_unreadable_files_are_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    january: tuple[pd.DataFrame, pd.DataFrame],
    content: bytes,
    message: str,
) -> None:
    args = _files_args(tmp_path, *january)
    (tmp_path / "features.parquet").write_bytes(content)
    rc, err = _train(capsys, tmp_path, "--run-name", "x", *args)
    assert rc == 2
    assert message in err, err


def test_missing_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _train(
        capsys,
        tmp_path,
        "--set",
        "data.source=files",
        "--set",
        f"data.features={tmp_path / 'no.csv'}",
        "--set",
        f"data.labels={tmp_path / 'no.csv'}",
    )
    assert rc == 2
    assert "does not exist" in err


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture
def finished(tiny: Tiny) -> Path:
    """A completed tiny run (one cycle): its ``last`` and ``last.prev`` checkpoints."""
    result = Trainer(tiny("schedule.max_cycles=1", name="done")).run()
    return Path(result.run_dir)


def test_a_run_is_never_overwritten(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (finished / "checkpoints" / "last.ckpt").read_bytes()
    rc, err = _train(
        capsys, finished.parent, "--run-name", "done", "--set", "schedule.max_cycles=1"
    )
    assert rc == 2
    assert "already has checkpoints" in err
    assert "nothing was overwritten" in err
    assert (finished / "checkpoints" / "last.ckpt").read_bytes() == before


def test_resume_without_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _train(capsys, tmp_path, "--run-name", "ghost", "--resume")
    assert rc == 2
    assert "no usable checkpoint" in err
    assert "does not exist" in err


def _flip_byte(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: _flip_byte(p), "checksum does not match"),
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "checksum"),
        (lambda p: p.write_bytes(b"garbage"), "not a cosine-retrain checkpoint"),
        (lambda p: p.write_bytes(b""), "not a cosine-retrain checkpoint"),
    ],
)
def test_corrupt_checkpoints_are_refused(
    tmp_path: Path, damage: Callable[[Path], None], message: str
) -> None:
    path = tmp_path / "x.ckpt"
    save_checkpoint(path, {"kind": "last", "model": {"w": torch.ones(64)}})
    damage(path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_a_pickle_that_runs_code_is_refused_even_with_a_valid_checksum(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("owned",))

    buffer = io.BytesIO()
    torch.save({"format": "cosine-retrain/checkpoint/v1", "x": Evil()}, buffer)
    data = buffer.getvalue()
    path = tmp_path / "evil.ckpt"
    path.write_bytes(MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(path)
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="not a cosine-retrain checkpoint"):
        load_checkpoint(plain)


def _sealed(path: Path, payload: object) -> Path:
    """``payload`` in a checkpoint file with a valid header and checksum."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    path.write_bytes(MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)
    return path


@pytest.mark.parametrize("payload", [[1, 2, 3], torch.ones(3), "last", 7], ids=type)
def test_a_payload_that_is_not_a_mapping_is_a_checkpoint_error(
    tmp_path: Path, payload: object
) -> None:
    # it used to pass the checksum and fail later with AttributeError (.get on a list)
    path = _sealed(tmp_path / "odd.ckpt", payload)
    kind = type(payload).__name__
    with pytest.raises(CheckpointError, match=rf"holds a {kind}, not a mapping"):
        load_checkpoint(path)


def test_resume_from_a_non_mapping_checkpoint_names_it(
    finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("last.ckpt", "last.prev.ckpt"):
        _sealed(finished / "checkpoints" / name, [0.1, 0.2])
    rc, err = _train(
        capsys, finished.parent, "--run-name", "done", "--set", "schedule.max_cycles=1", "--resume"
    )
    assert rc == 2, err
    assert "holds a list, not a mapping" in err
    assert "Traceback" not in err


def test_resume_falls_back_to_the_previous_generation(
    finished: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    last = finished / "checkpoints" / "last.ckpt"
    prev = finished / "checkpoints" / "last.prev.ckpt"
    assert prev.exists()
    _flip_byte(last)
    rc, err = _train(
        capsys, finished.parent, "--run-name", "done", "--set", "schedule.max_cycles=1", "--resume"
    )
    assert rc == 0, err
    assert "checksum does not match" in caplog.text
    assert "resuming from" in caplog.text
    assert "last.prev.ckpt instead" in caplog.text


def test_resume_refuses_when_every_generation_is_corrupt(
    finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("last.ckpt", "last.prev.ckpt"):
        _flip_byte(finished / "checkpoints" / name)
    rc, err = _train(
        capsys, finished.parent, "--run-name", "done", "--set", "schedule.max_cycles=1", "--resume"
    )
    assert rc == 2
    assert "no usable checkpoint" in err
    assert err.count("checksum does not match") == 2


def test_resume_refuses_a_best_checkpoint(
    finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpts = finished / "checkpoints"
    best = next(ckpts.glob("best-*.ckpt"))
    for name in ("last.ckpt", "last.prev.ckpt"):
        (ckpts / name).write_bytes(best.read_bytes())
    rc, err = _train(
        capsys, finished.parent, "--run-name", "done", "--set", "schedule.max_cycles=1", "--resume"
    )
    assert rc == 2
    assert "needs a 'last' checkpoint" in err


OUT_OF_MEMORY = r"""
import os, resource, sys
from pathlib import Path
from training.data.dataset import _read_local
from training.data.spec import DataError

def vm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize")

import pandas as pd  # pyarrow's threads and allocator started before the cap
import pyarrow as pa
pa.set_cpu_count(1)
pa.set_io_thread_count(1)
pd.read_parquet(sys.argv[2])
cap = vm_bytes() + 48 * 2**20  # what is mapped now, and 48 MiB more
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
try:
    _read_local(Path(sys.argv[1]), "labels", "labels.parquet")
    print("read within the cap: make the file bigger", flush=True)
except DataError as exc:
    print(exc, flush=True)
os._exit(0)  # no interpreter teardown: arrow's threads may not end cleanly under the cap
"""


def test_a_window_too_big_for_memory_is_said_to_be_too_big_not_unreadable(
    tmp_path: Path,
) -> None:
    """Measured by ``./run bench scale``: a 30M-row window's labels failed to load with
    pyarrow's "malloc of size 4294967296 failed", which the job reported as "not readable
    Parquet". A real read under an address-space cap (a child process): the error names
    memory, the file's size and what to change."""
    import os
    import subprocess
    import sys

    import numpy as np

    path = tmp_path / "labels.parquet"
    rng = np.random.default_rng(0)
    pd.DataFrame({"flight_id": rng.integers(0, 2**62, 16_000_000), "late": 1}).to_parquet(path)
    small = tmp_path / "small.parquet"
    pd.DataFrame({"flight_id": [1, 2], "late": 1}).to_parquet(small)
    proc = subprocess.run(
        [sys.executable, "-c", OUT_OF_MEMORY, str(path), str(small)],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "MALLOC_ARENA_MAX": "1"},  # no 64 MiB arena per new thread
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    message = proc.stdout
    assert "does not fit in this process's memory" in message, message
    assert "MiB on disk" in message
    assert "retrain.window_batches" in message
    assert "not readable" not in message
