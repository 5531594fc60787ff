"""The streamed window against the in-memory path, its order, S3, and resume after SIGKILL.

The references are independent: the in-memory path (pandas reads the same files
whole, sorts and fits :meth:`Preprocessor.fit`) for the split and the statistics,
numpy's sort for the order statistics, a fresh stream for any step's rows, and a
run never interrupted for the resumed one.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.training.helpers import ROOT, TINY, final_weights, lr_trace, same_weights
from training.config.train import ConfigError, TrainConfig, load_config
from training.data import flights, select
from training.data.dataset import PreparedData, WindowIds, open_for
from training.data.order import TrainStream
from training.data.spec import BATCH_COLUMN, DataError, load_spec
from training.data.stream import StreamedData
from training.telemetry.recorder import read_metrics

SPEC = load_spec(ROOT / "configs" / "datasets" / "flights.yaml")
# TINY's model and schedule, on the streamed window instead of the bundled months
TINY_MODEL = [s for s in TINY if not s.startswith("data.")]


def write_window(folder: Path, months: tuple[int, ...] = (1, 2), rows: int = 6000) -> Path:
    """The months as the pipeline exports them: one labelled file a batch, with its
    batch column, in small row groups; a few rows not labelled yet."""
    folder.mkdir(parents=True, exist_ok=True)
    for m in months:
        features, labels = flights.month_batch(m)
        frame = features.merge(labels, on=SPEC.id_column).iloc[:rows]
        frame = frame.assign(**{BATCH_COLUMN: f"2013-{m:02d}"})
        frame.loc[frame.index[::97], SPEC.target] = None  # unlabelled: left out
        frame.to_parquet(folder / f"2013-{m:02d}.parquet", index=False, row_group_size=1000)
    return folder


def config(features: str, *extra: str) -> TrainConfig:
    return load_config(
        None,
        [
            "data.source=files",
            f"data.features={features}",
            f"data.batch_column={BATCH_COLUMN}",
            "mlflow.enabled=false",
            *extra,
        ],
    )


def both(features: str, *extra: str) -> tuple[StreamedData, PreparedData]:
    cfg = config(features, *extra)
    off = cfg.model_copy(update={"data": cfg.data.model_copy(update={"streaming": "off"})})
    streamed, whole = open_for(cfg, SPEC), open_for(off, SPEC)
    assert isinstance(streamed, StreamedData)
    assert isinstance(whole, PreparedData)
    return streamed, whole


@pytest.fixture(scope="module")
def window(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_window(tmp_path_factory.mktemp("window"))


# ------------------------------------------------------------------ same data, same result


@pytest.mark.parametrize("extra", [[], ["data.max_rows=7000", "data.valid_fraction=0.3"]])
def test_streamed_and_in_memory_give_the_same_split_and_preprocessor(
    window: Path, extra: list[str]
) -> None:
    streamed, whole = both(str(window), *extra)
    assert streamed.describe() | {"data_fingerprint": ""} == whole.describe() | {
        "data_fingerprint": ""
    }
    assert (len(streamed.train), len(streamed.valid)) == (len(whole.train), len(whole.valid))
    # the same rows held out, ties at the cut's timestamp included
    held = streamed.valid_frame  # all of them: fewer than its sample's bound
    assert len(held) == len(whole.valid)
    assert set(held.columns) == {*SPEC.column_names, SPEC.target}  # what scoring needs
    cut = pd.Timestamp(streamed.first_valid_time)
    assert (held[SPEC.timestamp_column] >= cut).all()
    assert sorted(held[SPEC.id_column]) == sorted(whole.valid_frame[SPEC.id_column])
    a, b = streamed.preprocessor, whole.preprocessor
    assert (a.vocab, a.median, a.indicators, a.empty) == (b.vocab, b.median, b.indicators, b.empty)
    for name in a.numeric:
        assert a.mean[name] == pytest.approx(b.mean[name], rel=1e-12, abs=1e-12)
        assert a.std[name] == pytest.approx(b.std[name], rel=1e-12)
    # the same validation rows, preprocessed alike
    targets = np.concatenate([y for _, _, y in streamed.valid_chunks()])
    assert sorted(targets) == sorted(whole.valid.y)


def test_the_cut_falls_inside_a_timestamp_shared_by_both_sides(window: Path) -> None:
    """The case a quantile of timestamps alone gets wrong: rows at the cut's timestamp
    on both sides, ordered by (batch, id) as the in-memory sort orders them."""
    streamed, whole = both(str(window))
    frame = pd.read_parquet(window)
    at_cut = frame[pd.to_datetime(frame[SPEC.timestamp_column]) == whole.first_valid_time]
    held = set(whole.valid_frame[SPEC.id_column])
    assert 0 < at_cut[SPEC.id_column].isin(held).sum() < len(at_cut)
    assert set(streamed.valid_frame[SPEC.id_column]) == held


def test_a_list_of_files_an_s3_prefix_and_a_folder_are_the_same_window(
    window: Path, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    bucket = s3_server.new_bucket()
    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    files = sorted(window.glob("*.parquet"))
    for path in files:
        client.upload_file(str(path), bucket, f"runs/r1/window/{path.name}")
    for key, value in {
        "AWS_ENDPOINT_URL_S3": s3_server.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(key, value)
    folder = open_for(config(str(window)), SPEC)
    listed = open_for(config(f"[{','.join(str(p) for p in files)}]"), SPEC)
    remote = open_for(config(f"s3://{bucket}/runs/r1/window/"), SPEC)
    assert folder.describe() == listed.describe() == remote.describe()
    assert folder.preprocessor == remote.preprocessor


# ------------------------------------------------------------------ exact order statistics


@pytest.mark.parametrize("collect", [1 << 20, 50])  # one pass and collect; bucket passes
def test_kth_smallest_is_numpys_sort(collect: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(select, "COLLECT", collect)
    rng = np.random.default_rng(7)
    values = np.concatenate(
        [
            rng.integers(-(2**62), 2**62, 3000),
            np.full(500, 12345),  # a tie spanning buckets' worth of ranks
            [np.iinfo(np.int64).min, np.iinfo(np.int64).max],
        ]
    ).astype(np.int64)
    chunks = np.array_split(rng.permutation(values), 7)
    ordered = np.sort(values)
    for k in (0, 1, 1500, 2999, 3100, len(values) - 1):
        s = select.KthSmallest(k, int(values.min()), int(values.max()), len(values))
        passes = 0
        while not s.done:
            for chunk in chunks:
                s.feed(chunk)
            s.end_pass()
            passes += 1
        assert s.value == ordered[k]
        assert s.below == int((values < ordered[k]).sum())
        assert passes <= 7


def test_float_keys_keep_the_order_of_floats() -> None:
    values = np.array([-np.inf, -1e300, -2.0, -1.0, -1e-300, 0.0, 1e-300, 1.0, 2.5, np.inf])
    keys = select.float_keys(values)
    assert (np.diff(keys) > 0).all()
    assert np.array_equal(select.key_floats(keys), values)


# ------------------------------------------------------------------ the order


def _stream(seed: int, rank: int = 0, world: int = 1) -> TrainStream:
    sizes = np.array([700, 0, 1000, 1000, 350, 1000, 999, 5, 1000])
    starts = np.concatenate([[0], np.cumsum(sizes)])

    def load(g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = np.arange(starts[g], starts[g + 1])  # the row's global number as its target
        return ids[:, None], ids[:, None].astype(np.float32), ids.astype(np.float32)

    return TrainStream(
        sizes, load, shuffle_units=2, seed=seed, rank=rank, world_size=world, rows_per_step=64
    )


def test_a_seed_fixes_the_order_and_any_step_reads_alone_as_in_sequence() -> None:
    a, b, other = _stream(3), _stream(3), _stream(4)
    sequence = [a.rows(s)[2] for s in range(200)]  # about 2.1 epochs
    assert all(np.array_equal(sequence[s], b.rows(s)[2]) for s in (150, 7, 199, 0, 80))
    assert not np.array_equal(sequence[5], other.rows(5)[2])
    epoch = np.concatenate(sequence)[: int(a.group_rows.sum())]
    assert np.array_equal(np.sort(epoch), np.arange(a.group_rows.sum()))  # each row once


def test_each_rank_reads_its_own_units() -> None:
    ranks = [_stream(3, r, 2) for r in range(2)]
    seen = [set(np.concatenate([s.rows(k)[2] for k in range(20)]).tolist()) for s in ranks]
    assert not seen[0] & seen[1]
    firsts = [{int(u) for w in s.windows(0) for u in w} for s in ranks]
    assert not firsts[0] & firsts[1]
    assert firsts[0] | firsts[1] == {0, 2, 3, 4, 5, 6, 7, 8}


# ------------------------------------------------------------------ mistakes


def test_input_mistakes_are_one_clear_data_error(window: Path, tmp_path: Path) -> None:
    csv = tmp_path / "w.csv"
    pd.read_parquet(window).to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"not readable Parquet.*data.streaming: off"):
        open_for(config(str(csv)), SPEC)
    bad = tmp_path / "bad"
    bad.mkdir()
    frame = pd.read_parquet(window)
    frame.loc[frame.index[5], SPEC.target] = 3
    frame.to_parquet(bad / "b.parquet", index=False)
    with pytest.raises(DataError, match=r"target 'late' must be 0 or 1"):
        open_for(config(str(bad)), SPEC)
    frame.drop(columns=["carrier"]).to_parquet(bad / "b.parquet", index=False)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['carrier'\]"):
        open_for(config(str(bad)), SPEC)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \.parquet file"):
        open_for(config(str(tmp_path / "empty")), SPEC)
    with pytest.raises(ConfigError, match=r"data.streaming 'on' reads Parquet features that"):
        config("f.parquet", "data.labels=l.parquet", "data.streaming=on")


def test_an_id_in_two_batches_of_a_window_is_refused_when_ids_are_global(
    window: Path,
) -> None:
    files = sorted(window.glob("*.parquet"))
    frames = [pd.read_parquet(f) for f in files]
    recurring = frames[0][SPEC.id_column].iloc[17]
    frames[1].loc[frames[1].index[3], SPEC.id_column] = recurring
    copies = [window.parent / f"copy-{f.name}" for f in files]
    for frame, path in zip(frames, copies, strict=True):
        frame.to_parquet(path, index=False)
    ids = WindowIds(SPEC.model_copy(update={"id_scope": "global"}))
    for frame in frames:
        ids.add(frame)
    with pytest.raises(DataError, match=rf"the window: .*\['{recurring}'\].*id_scope is 'global'"):
        ids.check(copies, BATCH_COLUMN)
    panel = WindowIds(SPEC)  # id_scope batch, the default
    for frame in frames:
        panel.add(frame)
    panel.check(copies, BATCH_COLUMN)  # ids may recur across batches


# ------------------------------------------------------------------ resume after SIGKILL


def _cmd(run: str, out: Path, features: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "training", "train", "--run-name", run, "--output-dir", str(out)]
    sets = [*TINY_MODEL, "schedule.max_cycles=4", "schedule.cycle_steps=60"]
    sets += ["data.source=files", f"data.features={features}", f"data.batch_column={BATCH_COLUMN}"]
    for item in sets:
        cmd += ["--set", item]
    return [*cmd, "--no-mlflow", *extra]


def test_sigkill_at_random_points_then_resume_equals_uninterrupted(
    window: Path, tmp_path: Path
) -> None:
    ref = subprocess.run(
        _cmd("ref", tmp_path, window), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    seed = random.randrange(1 << 30)
    rng, target = random.Random(seed), 0
    metrics = tmp_path / "victim" / "metrics.jsonl"
    for attempt in range(2):
        target += rng.randint(15, 120)
        proc = subprocess.Popen(
            _cmd("victim", tmp_path, window, *(["--resume"] if attempt else [])),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            records = read_metrics(metrics)
            if records and max(r["step"] for r in records) >= target:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.05))
        assert proc.poll() is None, f"the run ended before the kill at step {target} (seed {seed})"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    final = subprocess.run(
        _cmd("victim", tmp_path, window, "--resume"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert final.returncode == 0, f"seed {seed}: {final.stderr[-3000:]}"
    assert same_weights(final_weights(tmp_path / "victim"), final_weights(tmp_path / "ref"))
    assert lr_trace(tmp_path / "victim") == lr_trace(tmp_path / "ref"), f"seed {seed}"
