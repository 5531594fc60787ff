"""The heavy data steps on each engine against the batch size: validate, drift and
score at 1M, 3M and 10M rows a batch with ``data.engine: pandas`` and ``spark``
(``./run bench spark [--sizes N,N,...]``); and the drift decisions of the sample
against those of the whole batch.

Batches are the scale benchmark's (:mod:`benchmarks.scale`: flights resampled from
2013 with noise, fresh ids, in the batch's month), on a home whose champion the demo
trained on January. Each step runs in a fresh process (a task process as Airflow's
LocalExecutor starts it) with an address-space cap, timed on its call alone. Two
memories per cell: the **worker's** peak (the step's Python process, ``VmHWM``, its
imports included) and the **machine's**: the step's process's peak plus the peak of
every process below it still alive at the end (Spark's JVM, its Python workers), an
upper bound of their simultaneous peak (or the sum of their resident memory sampled
every 0.2 s, when that is higher). Spark runs in local mode on both cores
(``local[*]``), ``data.spark.driver_memory`` as given (4g by default): the JVM's heap,
which holds the persisted frames and spills the rest to disk.

**Sample against whole batch.** Drift compares at most ``drift.sample_size`` rows
(100,000) of a batch, drawn by id hash (both engines draw the same rows). For batches
drawn from each month of 2013 (``--decision-rows`` each, 1M by default), the
decision on the sample is compared with the decision on the whole batch (Evidently on
every row), column by column.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.report import DOC, write_section
from benchmarks.scale import _batch, _prepare, address_cap, bench_home, result_of, size_parser

ROOT = Path(__file__).resolve().parent.parent
PNG = DOC.parent / "img" / "spark_scale.png"
SIZES = (1_000_000, 3_000_000, 10_000_000)
STEPS = ("validate", "drift", "score")
ENGINES = ("pandas", "spark")

STEP = r"""
import json, resource, sys, time
args = json.loads(sys.argv[1])
t0 = time.perf_counter()
from pipeline import flow
env = flow.build_env()
imports = time.perf_counter() - t0
step, batch = args["step"], args["batch"]
t = time.perf_counter()
if step == "land":
    out = flow.land(env, args["source"], batch_id=batch, trusted=True)
elif step == "validate":
    out = flow.validate(env, batch)
elif step == "drift":
    out = flow.drift(env, batch)
elif step == "score":
    out = flow.score(env, batch)
seconds = time.perf_counter() - t


def hwm_mb(pid="self"):
    # VmHWM: the peak resident memory of this process image (ru_maxrss would carry the
    # forking parent's, which exec does not reset)
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


import psutil
below = 0.0
for child in psutil.Process().children(recursive=True):
    try:
        below += hwm_mb(child.pid)
    except OSError:
        pass
peak_mb = hwm_mb()
print("RESULT " + json.dumps(
    {"seconds": seconds, "peak_mb": peak_mb, "below_mb": below, "imports": imports,
     "out": repr(out)[:300]}), flush=True)
if env.config.data.engine == "spark":
    from pipeline.base.spark import stop_session
    stop_session()
"""


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def _run(
    home: Path, env: dict[str, str], args: dict[str, Any], memory_gib: float, timeout: float
) -> dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, "-c", STEP, json.dumps(args)],
        cwd=ROOT,
        env={**env, "COSINE_RETRAIN_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=address_cap(memory_gib),
    )
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            done.wait(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return {"error": f"over {timeout:.0f} s"}
    finally:
        done.set()
        watcher.join()
    cell = result_of(out)
    if cell is not None:
        # the processes' own peaks summed (an upper bound), or the sampled sum if higher
        cell["machine_mb"] = max(peak[0] / 2**20, cell["peak_mb"] + cell.pop("below_mb"))
        return cell
    tail = [x for x in err.strip().splitlines() if x.strip()]
    return {"error": (tail or [f"exit {proc.returncode}"])[-1][:300]}


def measure(
    sizes: list[int],
    memory_gib: float,
    timeout: float,
    driver: str,
    engines: tuple[str, ...] = ENGINES,
    steps: tuple[str, ...] = STEPS,
) -> dict[str, Any]:
    import shutil

    from training.data.flights import load_months

    work, home, env = bench_home("bench-spark-")
    results: dict[str, Any] = {"sizes": sizes, "cells": {}, "driver": driver}
    try:
        _prepare(home, work, env)
        year, labels = load_months(list(range(1, 13)))
        for k, rows in enumerate(sizes):
            batch = f"{2014 + k}-03"
            features, _ = _batch(year, labels, rows, batch, seed=200 + k)
            source = work / f"{batch}.parquet"
            features.to_parquet(source, index=False)
            del features
            landed = _run(home, env, {"step": "land", "batch": batch, "source": str(source)},
                          memory_gib, timeout)  # fmt: skip
            source.unlink()
            if "error" in landed:
                raise RuntimeError(f"landing {rows:,} rows failed: {landed['error']}")
            for engine in engines:
                # each engine its own copy of the home's reports and predictions: the
                # second would otherwise reuse what the first stored
                engine_home = work / f"home-{engine}-{rows}"
                shutil.copytree(home, engine_home, symlinks=True)
                engine_env = {**env, "COSINE_RETRAIN_DATA__ENGINE": engine,
                              "COSINE_RETRAIN_DATA__SPARK__DRIVER_MEMORY": driver}  # fmt: skip
                for step in steps:
                    args = {"step": step, "batch": batch, "source": ""}
                    cell = _run(engine_home, engine_env, args, memory_gib, timeout)
                    results["cells"][f"{engine}/{step}/{rows}"] = cell
                    shown = (
                        f"{cell['seconds']:.1f} s, worker {cell['peak_mb']:,.0f} MB, "
                        f"machine {cell['machine_mb']:,.0f} MB"
                        if "error" not in cell
                        else f"FAILED: {cell['error']}"
                    )
                    print(f"  {rows:,} rows, {engine}: {step}: {shown}", flush=True)
                shutil.rmtree(engine_home, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def decisions(rows: int, months: list[int]) -> list[dict[str, Any]]:
    """Drift of a batch drawn from each month against January: sampled and whole."""
    from pipeline.base.layout import BatchRef
    from pipeline.base.sections import DriftConfig
    from pipeline.steps.quality.drift import compute_drift
    from training.api import load_spec
    from training.data.flights import load_months

    spec = load_spec(ROOT / "configs" / "datasets" / "flights.yaml")
    reference, _ = load_months([1])
    out = []
    for month in months:
        year, labels = load_months([month])
        batch, _ = _batch(year, labels, rows, f"2014-{month:02d}", seed=month)
        row = {"month": month}
        for label, size in (("sample", 100_000), ("whole", rows)):
            t = time.perf_counter()
            summary = compute_drift(
                batch, reference, spec, DriftConfig(sample_size=size, html=False),
                ref=BatchRef(spec.name, f"2014-{month:02d}", 1), reference_id="january",
            )  # fmt: skip
            row[label] = {
                "drifted": summary.drifted,
                "share": summary.drift_share,
                "columns": sorted(summary.drifted_columns),
                "scores": summary.scores(),
                "seconds": time.perf_counter() - t,
            }
        sample, whole = row["sample"], row["whole"]
        row["max_score_gap"] = max(
            abs(sample["scores"][c] - whole["scores"][c]) for c in whole["scores"]
        )
        print(f"  month {month}: sample {sample['drifted']} {sample['columns']}, whole "
              f"{whole['drifted']} {whole['columns']}, largest score gap "
              f"{row['max_score_gap']:.4f}", flush=True)  # fmt: skip
        out.append(row)
    return out


def _cell(cell: dict[str, Any] | None) -> str:
    if not cell:
        return "-"
    if "error" in cell:
        return "**fails**"
    return (
        f"{cell['seconds']:.0f} s / {cell['peak_mb'] / 1024:.2f} / "
        f"{cell['machine_mb'] / 1024:.1f} GiB"
    )


def _plot(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = results["sizes"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for engine, style in (("pandas", "--"), ("spark", "-")):
        for step in STEPS:
            cells = [results["cells"].get(f"{engine}/{step}/{s}", {}) for s in sizes]
            xs = [s for s, c in zip(sizes, cells, strict=True) if "seconds" in c]
            ok = [c for c in cells if "seconds" in c]
            for ax, key, scale in ((axes[0], "seconds", 1), (axes[1], "peak_mb", 1024),
                                   (axes[2], "machine_mb", 1024)):  # fmt: skip
                ax.plot(xs, [c[key] / scale for c in ok], style, marker="o",
                        label=f"{step} ({engine})")  # fmt: skip
    titles = ("seconds (the step's call)", "worker's peak GiB", "machine's peak GiB")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows per batch")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].axhline(1.0, color="red", linestyle=":", label="target 1 GiB")
    axes[2].axhline(12.0, color="red", linestyle=":", label="target 12 GiB")
    axes[0].legend(fontsize=7)
    fig.suptitle("validate, drift, score: pandas (dashed) against Spark local[*] (solid)")
    fig.tight_layout()
    PNG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PNG, dpi=110)
    plt.close(fig)


def _body(results: dict[str, Any], rows: list[dict[str, Any]], elapsed: float) -> str:
    sizes = results["sizes"]
    lines = [
        "| step | engine | " + " | ".join(f"{s:,}" for s in sizes) + f" | {sizes[0]:,} -> "
        f"{sizes[-1]:,} ({sizes[-1] / sizes[0]:.0f}x rows) |",
        "|---|---|" + "---:|" * (len(sizes) + 1),
    ]
    for step in STEPS:
        for engine in ENGINES:
            cells = [results["cells"].get(f"{engine}/{step}/{s}") for s in sizes]
            first, last = cells[0], cells[-1]
            growth = ""
            if first and last and "seconds" in first and "seconds" in last:
                growth = f"{last['seconds'] / first['seconds']:.1f}x time"
            lines.append(
                f"| {step} | {engine} | " + " | ".join(_cell(c) for c in cells) + f" | {growth} |"
            )
    agree = sum(r["sample"]["drifted"] == r["whole"]["drifted"] for r in rows)
    same_columns = sum(r["sample"]["columns"] == r["whole"]["columns"] for r in rows)
    table = ["| month | sample: drifted (columns) | whole batch: drifted (columns) | "
             "largest score gap |", "|---|---|---|---:|"]  # fmt: skip
    for r in rows:
        s, w = r["sample"], r["whole"]
        table.append(
            f"| {r['month']} | {s['drifted']} ({', '.join(s['columns']) or '-'}) | "
            f"{w['drifted']} ({', '.join(w['columns']) or '-'}) | {r['max_score_gap']:.4f} |"
        )
    months = ", ".join(str(r["month"]) for r in rows)
    return f"""Each cell: the step's call in seconds / the worker's peak resident memory / the
machine's (the step's process and every process below it: Spark's JVM and Python
workers), GiB. Spark: `local[*]` on this machine's 2 cores, driver memory
{results["driver"]}. The worker's figure includes its imports (the pipeline imports GX,
Evidently, torch and MLflow only in the steps that use them). Whole run:
{elapsed / 60:.0f} min.

{chr(10).join(lines)}

![each engine against the batch size](img/spark_scale.png)

**The sample's decisions against the whole batch's.** A batch of
{results["decision_rows"]:,} rows drawn from each of the months {months} of 2013 (the
scale benchmark's noise and fresh ids), each against January (the champion's
reference): the drift decision on the 100,000-row sample equals the decision on every
row in {agree} of {len(rows)} batches, and the drifted columns are the same in
{same_columns} of {len(rows)}. The gap is the largest difference of one column's
score (a normed Wasserstein distance or a Jensen-Shannon distance) between the two.

{chr(10).join(table)}
"""


def main(argv: list[str] | None = None) -> None:
    parser = size_parser("./run bench spark", __doc__ or "", SIZES)
    parser.add_argument("--driver-memory", default="4g", help="data.spark.driver_memory")
    parser.add_argument("--decision-rows", type=int, default=1_000_000,
                        help="rows of each batch, sample against whole")  # fmt: skip
    parser.add_argument("--months", default="2,4,6,8,10,12", help="months of that comparison")
    parser.add_argument("--engines", default=",".join(ENGINES), help="engines to measure")
    parser.add_argument("--steps", default=",".join(STEPS), help="steps to measure")
    args = parser.parse_args(argv or [])
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    started = time.perf_counter()
    months = [int(m) for m in args.months.split(",") if m.strip()]
    rows = decisions(args.decision_rows, months)
    results = measure(sizes, args.memory_gib, args.timeout, args.driver_memory,
                      tuple(args.engines.split(",")), tuple(args.steps.split(",")))  # fmt: skip
    results["decisions"] = rows
    results["decision_rows"] = args.decision_rows
    elapsed = time.perf_counter() - started
    body = _body(results, rows, elapsed)
    print(body)
    if not args.no_write:
        _plot(results)
        write_section("spark", "The heavy steps on Spark against the batch size", body)
