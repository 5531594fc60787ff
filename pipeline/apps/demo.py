"""``python -m pipeline demo`` (``./run demo``): replay batches through the real DAGs.

By default the bundled example: 2013's flights, month by month. With
``--spec SPEC.yaml --batches DIR`` your own data: DIR holds one file per batch,
``<batch_id>.csv`` or ``<batch_id>.parquet`` (batch ids sort in time order: a
folder whose batches' first timestamps do not follow that order is refused), each
with the spec's columns and the target column. The target is split off as the
batch's labels, which land one batch later, as in production. ``--example gss``
replays a bundled second example (:mod:`pipeline.apps.examples`): its batch files
are written to ``<home>/examples/gss`` and read from there like a user's folder.

For each batch the ``ingest`` DAG lands its features and the previous batch's
labels; the assets they emit start ``drift_monitor`` and ``canary_review``, whose
``retrain_request`` starts ``retrain`` (:mod:`pipeline.apps.replay`): the same
DAGs and assets as in production, each run with ``dag.test()`` in this process,
on local defaults (SQLite for Airflow and MLflow, the object store under
``<home>/store``). Nothing is forced: every retrain, refusal and promotion comes
from the data and the configuration. A second run reuses what it can (landed
batches, validations, drift reports, finished training windows, registered
versions) and says so. Exit code 0 when every batch went through, 1 when a
batch failed somewhere (the reason is printed under it), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.apps.replay import BatchSource, Replay
from pipeline.base.config import HOME_SPEC, home_spec
from training.api import DEFAULT_HOME, PROJECT_ROOT, atomic_write_text

__all__ = [
    "claim_home",
    "folder_batches",
    "main",
    "migrate",
    "prepare_environment",
]

ROOT = PROJECT_ROOT
DAGS = ROOT / "dags"
FLIGHTS_SPEC = ROOT / "configs" / "datasets" / "flights.yaml"
FLIGHTS_TRAIN = ROOT / "configs" / "flights.yaml"


class UsageError(Exception):
    """A mistake in the demo's arguments or input folder (exit 2, one line)."""


def _say(text: str = "") -> None:
    print(text, flush=True)


def claim_home(home: Path, spec: Path, record: bool = False) -> None:
    """Refuse a home that holds another data set's replay (its store, registry and
    Airflow runs would mix with this one's); ``record``: remember ``spec`` there."""
    held = home_spec(home)
    if held is not None and held != spec:
        raise UsageError(
            f"--home {home} holds the replay of {held}, not {spec}: "
            "give each data set its own --home"
        )
    if record and held is None:
        home.mkdir(parents=True, exist_ok=True)
        atomic_write_text(home / HOME_SPEC, f"{spec}\n")


def prepare_environment(home: Path, spec: Path | None = None) -> dict[str, str]:
    """Point Airflow and the pipeline at ``home`` (before Airflow is imported). With no
    ``spec`` (and none in the environment): the one the home's replay ran with."""
    home.mkdir(parents=True, exist_ok=True)
    if spec is None and "COSINE_RETRAIN_DATASET_SPEC" not in os.environ:
        spec = home_spec(home)
    env = {
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "COSINE_RETRAIN_HOME": str(home),
        "GIT_PYTHON_REFRESH": "quiet",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    # the DAG files import pipeline/ and training/: make them importable from any folder
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    if spec is not None:
        env["COSINE_RETRAIN_DATASET_SPEC"] = str(spec)
    os.environ.update(env)
    # the shipped spec and training config, unless the caller chose others
    os.environ.setdefault("COSINE_RETRAIN_DATASET_SPEC", str(FLIGHTS_SPEC))
    os.environ.setdefault("COSINE_RETRAIN_RETRAIN__TRAIN_CONFIG", str(FLIGHTS_TRAIN))
    return env


def migrate(home: Path, *, always: bool = False) -> str:
    """``airflow db migrate`` unless this home already has a database (``always``: the
    metadata database is elsewhere, e.g. PostgreSQL; migrating is idempotent)."""
    if not always and (home / "airflow" / "airflow.db").exists():
        return "reused the Airflow database"
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"airflow db migrate failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return f"created the Airflow database ({time.monotonic() - t0:.0f} s)"


def _parse_months(text: str) -> list[int]:
    months: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            months += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        months = []
    if not months or any(not 1 <= m <= 12 for m in months):
        raise UsageError(f"--months must name months 1..12, e.g. 1-7, got {text!r}")
    return sorted(set(months))


def _month(m: int) -> BatchSource:
    return BatchSource(f"2013-{m:02d}", f"2013-{m:02d}", f"2013-{m:02d}")


def flights_batches(months: list[int]) -> tuple[list[BatchSource], BatchSource | None]:
    """The months' batches, and the month before the first (its labels land with it)."""
    return [_month(m) for m in months], (_month(months[0] - 1) if months[0] > 1 else None)


def folder_batches(folder: Path, spec_path: Path, incoming: Path) -> list[BatchSource]:
    """One batch per ``<batch_id>.csv|.parquet`` in ``folder``, in batch-id order. Each
    file is split into ``incoming/<batch_id>/features.parquet`` (every column but the
    target) and ``labels.parquet`` (id and target, rows with a target only), which
    is where the ingest DAG may read files from (``ingest.source_roots``)."""
    from pipeline.base.store import InvalidKey, check_id
    from pipeline.steps.landing.sources import IngestError, load_source, read_source
    from training.api import atomic_writer, load_spec

    spec = load_spec(spec_path)
    if not folder.is_dir():
        raise UsageError(f"--batches {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".csv", ".parquet"))
    if not files:
        raise UsageError(f"--batches {folder} holds no <batch_id>.csv or <batch_id>.parquet")
    seen: dict[str, Path] = {}
    starts: list[tuple[str, Any]] = []  # (file, its earliest timestamp)
    out = []
    for path in files:
        try:
            batch_id = check_id(path.stem, "batch id")
        except InvalidKey as exc:
            raise UsageError(f"{path.name}: the file name is the batch id: {exc}") from None
        if batch_id in seen:
            raise UsageError(f"{path.name} and {seen[batch_id].name} are both batch {batch_id}")
        seen[batch_id] = path
        try:
            frame = read_source(load_source(str(path)))
        except IngestError as exc:
            raise UsageError(str(exc)) from None
        for column in (spec.id_column, spec.target):
            if column not in frame.columns:
                raise UsageError(
                    f"{path.name} has no column {column!r} (the spec's "
                    f"{'id' if column == spec.id_column else 'target'}); found "
                    f"{list(frame.columns)[:12]}"
                )
        start = _first_time(frame, spec.timestamp_column)
        if starts and start is not None and start < starts[-1][1]:
            raise UsageError(
                f"{path.name} starts at {start} but sorts after {starts[-1][0]}, which starts "
                f"at {starts[-1][1]}: name the files so that batch ids sort in time order "
                "(e.g. 2024-01.csv, 2024-02.csv)"
            )
        if start is not None:
            starts.append((path.name, start))
        target = frame[spec.target]
        labels = frame.loc[target.notna(), [spec.id_column, spec.target]]
        folder_out = incoming / batch_id
        for name, part in (
            ("features.parquet", frame.drop(columns=[spec.target])),
            ("labels.parquet", labels),
        ):
            with atomic_writer(folder_out / name) as fh:
                part.to_parquet(fh, index=False)
        out.append(
            BatchSource(
                batch_id,
                str(folder_out / "features.parquet"),
                str(folder_out / "labels.parquet"),
                is_file=True,
            )
        )
    return out


def _example(args: argparse.Namespace, home: Path) -> tuple[Path, Path]:
    """The example's spec, and the folder its batch files were written to."""
    from pipeline.apps.examples import EXAMPLES, write_example

    if args.spec is not None or args.batches is not None:
        raise UsageError("--example replaces --spec and --batches: give one or the other")
    if args.example not in EXAMPLES:
        raise UsageError(f"--example {args.example!r} is unknown; known: {', '.join(EXAMPLES)}")
    claim_home(home, EXAMPLES[args.example].spec)
    folder = home / "examples" / args.example
    write_example(args.example, folder)
    return EXAMPLES[args.example].spec, folder


def _first_time(frame: Any, column: str) -> Any:
    """The batch's earliest timestamp, or None when there is none to read (validation
    then names the column's problem)."""
    import pandas as pd

    if column not in frame.columns:
        return None
    try:
        times = pd.to_datetime(frame[column], errors="coerce", format="ISO8601")
    except (TypeError, ValueError):
        return None
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    first = times.min()
    return None if pd.isna(first) else first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--months", default="1-12", help="flights: months of 2013 (default 1-12)")
    parser.add_argument("--spec", type=Path, help="your data's dataset spec (with --batches)")
    parser.add_argument("--batches", type=Path, help="a folder of <batch_id>.csv|.parquet files")
    parser.add_argument(
        "--example", help="a bundled example instead (gss): its spec and batch files"
    )
    parser.add_argument("--home", default=str(DEFAULT_HOME), help="local state folder")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    home = Path(args.home).resolve()
    try:
        if args.example is not None:
            args.spec, args.batches = _example(args, home)
        if (args.spec is None) != (args.batches is None):
            raise UsageError("--spec and --batches go together (your data); neither: flights")
        if args.spec is not None:
            spec = args.spec.resolve()
            claim_home(home, spec)
            prepare_environment(home, spec)
            batches, before = folder_batches(args.batches, spec, home / "incoming"), None
            title = f"cosine-retrain: {args.batches.name} replayed through the DAGs"
        else:
            spec = Path(os.environ.get("COSINE_RETRAIN_DATASET_SPEC", FLIGHTS_SPEC)).resolve()
            claim_home(home, spec)
            prepare_environment(home, spec)
            batches, before = flights_batches(_parse_months(args.months))
            title = "cosine-retrain: 2013 replayed through the DAGs"
        claim_home(home, spec, record=True)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from training.api import DataError

    _say(
        f"== cosine-retrain demo: replaying {batches[0].batch_id}..{batches[-1].batch_id} "
        f"({len(batches)} batches) through the Airflow DAGs (local state in {home})"
    )
    _say(f"   {migrate(home)}")
    try:
        replay = Replay(home, batches, before)
        _ = replay.env.spec  # a bad spec fails here, with its message, before any run
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for i, source in enumerate(batches):
        t = time.monotonic()
        month = replay.batch(i)
        replay.months.append(month)
        _say(f"-- {source.batch_id} ({time.monotonic() - t:.0f} s)")
        for line in month.lines:
            _say(line)
    report = replay.write_report(title)
    failed = [m.batch for m in replay.months if m.failed]
    from pipeline.apps.summary import totals_line

    _say(f"\n== done in {time.monotonic() - t0:.0f} s; report: {report}")
    _say(totals_line(replay.months))
    _say(f"   Airflow's own task logs of the replay: {replay.task_log}")
    _say("   open the Airflow and MLflow UIs on this data: ./run ui")
    atomic_write_text(
        home / "reports" / "replay.json",
        json.dumps([{"batch": m.batch, **m.steps} for m in replay.months], indent=2, default=str),
    )
    if failed:
        _say(f"   FAILED: {len(failed)} batch(es) did not go through: {', '.join(failed)}")
        return 1
    return 0
