"""The training job's peak memory against the window's rows, streamed
(``./run bench stream_memory [--sizes 1000000,30000000]``).

Issue 25's target: the training process's peak on a 30M-row window at most 1.5x its
peak on 1M rows, as a ratio within one run (never a timed test). Each window is
written as ``export_window`` writes it: one Parquet file per batch of at most 1M
rows, each row with its label and ``_batch``, in row groups of
``training.data.sources.ROW_GROUP_ROWS`` rows. The batches are the scale
benchmark's (``benchmarks.scale._batch``: flights resampled from 2013 with noise,
fresh ids, departures in the batch's month), one month per batch.

For each size the job runs in a fresh process under an address-space limit
(``--memory-gib``, so that a job that needs more fails with MemoryError instead of
meeting the kernel's OOM killer), with the tests' tiny training config
(``tests/fixtures/tiny_train.yaml``: 95 steps of 256 rows, three cycles) evaluated
at each cycle's end only (``eval.every_steps`` past the run), so the figures are
the data path's: opening the window (the passes that find the cut and fit the
preprocessor) and training on it (row groups read per step, the whole validation
set predicted three times). Peak memory is ``ru_maxrss`` of the process, imports
included; the baseline is the smallest size, and the in-memory path
(``data.streaming=off``) at the smallest size is shown for reference.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import write_section
from benchmarks.scale import run_measured

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "configs" / "datasets" / "flights.yaml"
TINY_TRAIN = ROOT / "tests" / "fixtures" / "tiny_train.yaml"
SIZES = (1_000_000, 30_000_000)
BATCH_ROWS = 1_000_000

JOB = r"""
import json, resource, sys, time
args = json.loads(sys.argv[1])
t0 = time.perf_counter()
from training.config.train import load_config
from training.data.dataset import open_for
from training.data.spec import load_spec
from training.engine.trainer import Trainer
config = load_config(args["config"], args["sets"])
spec = load_spec(config.data.dataset)
imports = time.perf_counter() - t0
base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
data = open_for(config, spec)
opened = time.perf_counter() - t
open_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
result = Trainer(config, data=data, spec=spec, hooks=[]).run()
trained = time.perf_counter() - t
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps({
    "imports": imports, "open_s": opened, "train_s": trained, "base_mb": base_mb,
    "open_mb": open_mb, "peak_mb": peak_mb, "status": result.status,
    "steps": result.steps_done, "data": data.describe(), "kind": type(data).__name__}))
"""


def write_window(folder: Path, rows: int) -> int:
    """``rows`` flights-shaped labelled rows in batches of at most ``BATCH_ROWS``, one
    file each, as ``export_window`` writes them; the number of batches."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.scale import _batch
    from training.data.flights import load_months
    from training.data.sources import ROW_GROUP_ROWS
    from training.data.spec import BATCH_COLUMN

    year, labels = load_months(list(range(1, 13)))
    n = -(-rows // BATCH_ROWS)
    folder.mkdir(parents=True)
    for i in range(n):
        batch = f"{2014 + i // 12}-{i % 12 + 1:02d}"
        part = rows * (i + 1) // n - rows * i // n
        features, target = _batch(year, labels, part, batch, seed=i)
        frame = features.assign(late=target["late"].to_numpy(), **{BATCH_COLUMN: batch})
        table = pa.Table.from_pandas(frame, preserve_index=False)
        pq.write_table(table, folder / f"{i:04d}-{batch}.parquet", row_group_size=ROW_GROUP_ROWS)
        del features, target, frame, table
    return n


def run_job(folder: Path, out: Path, memory_gib: float, timeout: float, *extra: str) -> Any:
    sets = [
        f"data.dataset={SPEC}",
        "data.source=files",
        f"data.features={folder}",
        "data.batch_column=_batch",
        "mlflow.enabled=false",
        "progress=off",
        "eval.every_steps=100000",
        "checkpoint.every_steps=100000",
        "runtime.threads=2",
        f"output_dir={out}",
        f"run_name=bench-{time.time_ns()}",
        *extra,
    ]
    args = json.dumps({"config": str(TINY_TRAIN), "sets": sets})
    return run_measured(JOB, args, memory_gib, timeout)


def measure(sizes: list[int], memory_gib: float, timeout: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    results: dict[str, Any] = {"sizes": sizes, "memory_gib": memory_gib, "runs": []}
    try:
        for k, rows in enumerate(sizes):
            folder = work / f"window-{rows}"
            t = time.perf_counter()
            batches = write_window(folder, rows)
            mb = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
            print(f"  {rows:,} rows: {batches} batches, {mb:,.0f} MB written in "
                  f"{time.perf_counter() - t:.0f} s", flush=True)  # fmt: skip
            modes = ["on", "off"] if k == 0 else ["on"]
            for mode in modes:
                cell = run_job(folder, work / "runs", memory_gib, timeout, f"data.streaming={mode}")
                cell.update(rows=rows, streaming=mode, batches=batches, disk_mb=mb)
                results["runs"].append(cell)
                print(f"  {rows:,} rows, streaming {mode}: {json.dumps(cell)[:400]}", flush=True)
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def _body(results: dict[str, Any], elapsed: float) -> str:
    runs = results["runs"]
    base = next(r for r in runs if r["streaming"] == "on" and "error" not in r)
    lines = [
        "| rows | batches | on disk | path | open (passes) | 95 steps + 3 evaluations "
        "| peak after open | peak | x the streamed 1st size |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        path = "streamed" if r["streaming"] == "on" else "in memory"
        if "error" in r:
            lines.append(
                f"| {r['rows']:,} | {r['batches']} | {r['disk_mb']:,.0f} MB | {path} | "
                f"failed: {r['error']} | | | | |"
            )
            continue
        lines.append(
            f"| {r['rows']:,} | {r['batches']} | {r['disk_mb']:,.0f} MB | {path} | "
            f"{r['open_s']:.0f} s | {r['train_s']:.0f} s | {r['open_mb']:,.0f} MB | "
            f"{r['peak_mb']:,.0f} MB | {r['peak_mb'] / base['peak_mb']:.2f}x |"
        )
    streamed = [r for r in runs if r["streaming"] == "on" and "error" not in r]
    top = streamed[-1]
    ratio = top["peak_mb"] / base["peak_mb"]
    verdict = "meets" if ratio <= 1.5 else "misses"
    return (
        __doc__.split("\n\n", 1)[1]
        + "\n\n"
        + "\n".join(lines)
        + f"\n\nThe streamed job's peak at {top['rows']:,} rows is {ratio:.2f}x its peak at "
        f"{base['rows']:,} rows: it {verdict} the target (at most 1.5x). Imports alone "
        f"peak at {base['base_mb']:,.0f} MB, most of either figure: above its own imports' "
        f"peak, the job grows by {base['peak_mb'] - base['base_mb']:,.0f} MB at "
        f"{base['rows']:,} rows and {top['peak_mb'] - top['base_mb']:,.0f} MB at "
        f"{top['rows']:,} (two bits a row for the split, five bytes a validation row for "
        "its metrics, one window of row groups). Run time "
        f"{elapsed / 60:.0f} min (generating "
        "the windows included); address-space limit "
        f"{results['memory_gib']:g} GiB.\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks stream_memory")
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--memory-gib", type=float, default=16.0)
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args(argv if argv is not None else [])
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.perf_counter()
    results = measure(sizes, args.memory_gib, args.timeout)
    body = _body(results, time.perf_counter() - started)
    command = "./run bench stream_memory" + (
        f" --sizes {args.sizes}" if args.sizes != ",".join(map(str, SIZES)) else ""
    )
    path = write_section(
        "stream_memory", "The training job's memory against the window, streamed", body, command
    )
    print(body)
    print(f"written to {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
