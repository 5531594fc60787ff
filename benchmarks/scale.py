"""How far the pandas path goes: each step of the loop timed with its peak memory at
0.3M, 1M, 3M and 10M rows a batch (``./run bench scale [--sizes N,N,...]``).

Measure before moving anything to Spark (issue 25): every data step runs pandas in
the Airflow worker, and the benchmarks stopped at 1M rows. Flights-shaped batches are
generated from the 2013 example by resampling rows with replacement, Gaussian noise on
every numeric feature (2 % of its standard deviation, nulls kept), fresh ids and
departures moved into the batch's month; never stored in git. The home is a fresh
one where ``./run demo`` trained a champion on January with a tiny training config
(the spec is the flights spec with ``row_count_max`` raised to 30M, so that the size
itself is never the refusal).

For each size, three consecutive monthly batches of that size are landed, validated
and labelled (the retrain's window is the latest three); each step of the third is
timed in a fresh process of its own, the step's call only (imports and the
environment are paid before the clock, and reported apart), with its peak resident
memory (``ru_maxrss``, the imports included) and an address-space limit of
``--memory-gib`` (20 of the machine's 24), so a step that needs more fails with
MemoryError instead of the kernel's OOM killer:

- land: the file read, checked, fingerprinted and written to the store;
- validate: the spec's Great Expectations suite on the whole batch;
- drift: Evidently against the champion's reference (sampled above
  ``drift.sample_size``);
- score: the champion scores every row (the canary path is the same code);
- land labels;
- review: the champion's live quality on the labelled rows (predictions joined to
  labels);
- window: the retrain's plan and ``export_window`` (the three batches concatenated
  into one Parquet file, three times the batch);
- train: the training job on that window with a bounded schedule (95 steps of 256
  rows; its data loading and preprocessing are what grow).

A step that fails at a size is reported with its error, and the larger sizes do not
try it again ("-"); the steps after it at that size, which need its output, are not
run. The baseline, in the same run, is the smallest size: the table gives each step's
growth against it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from benchmarks.report import DOC, write_section

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "configs" / "datasets" / "flights.yaml"
PNG = DOC.parent / "img" / "scale.png"
SIZES = (300_000, 1_000_000, 3_000_000, 10_000_000)
STEPS = ("land", "validate", "drift", "score", "land_labels", "review", "window", "train")
TINY_TRAIN = ROOT / "tests" / "fixtures" / "tiny_train.yaml"  # 95 steps of 256 rows
SETTINGS = {
    "COSINE_RETRAIN_GATE__MIN_AUC": "0.55",
    "COSINE_RETRAIN_GATE__MIN_SLICE_AUC": "0.45",
    "COSINE_RETRAIN_GATE__MAX_AUC_DROP": "0.05",
}

STEP = r"""
import json, resource, sys, time
args = json.loads(sys.argv[1])
t0 = time.perf_counter()
import great_expectations, evidently.presets, evidently.core.report, torch, mlflow
from pipeline import flow
env = flow.build_env()
imports = time.perf_counter() - t0
base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
step, batch = args["step"], args["batch"]


def plan():
    return flow.plan_retrain(env, flow.RetrainRequest(trigger="drift", reasons=["bench scale"]))


if step == "train":  # the plan and window of the step before, reused; then the clock
    p = plan()
    w = flow.export_window(env, p)
t = time.perf_counter()
if step == "land":
    out = flow.land(env, args["source"], batch_id=batch, trusted=True)
elif step == "land_labels":
    out = flow.land(env, args["source"], labels=True, batch_id=batch, trusted=True)
elif step == "validate":
    out = flow.validate(env, batch)
elif step == "drift":
    out = flow.drift(env, batch)
elif step == "score":
    out = flow.score(env, batch)
elif step == "review":
    out = flow.quality(env, batch)
elif step == "window":
    p = plan()
    out = (p.window, flow.export_window(env, p))
elif step == "train":
    out = flow.train(env, p, w)
seconds = time.perf_counter() - t
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(
    {"seconds": seconds, "peak_mb": peak_mb, "base_mb": base_mb, "imports": imports,
     "out": repr(out)[:400]}))
"""


def _batch(year: pd.DataFrame, labels: pd.DataFrame, rows: int, batch: str, seed: int) -> Any:
    """``rows`` flights resampled from the year, noised, with fresh ids, in ``batch``'s
    month: (features, labels)."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(year), rows)
    features = year.iloc[pick].reset_index(drop=True)
    target = labels.iloc[pick].reset_index(drop=True)
    for column in features.select_dtypes("float64").columns:  # kept in the year's range
        values = features[column].to_numpy()
        low, high = np.nanmin(values), np.nanmax(values)
        spread = float(np.nanstd(values)) * 0.02
        features[column] = np.clip(values + rng.normal(0.0, spread, rows), low, high)
    ids = pd.Series([f"{batch}-{i:09d}" for i in range(rows)])
    features["flight_id"] = ids
    target["flight_id"] = ids
    start = pd.Timestamp(f"{batch}-01")
    dep = features["sched_dep"]
    day = np.minimum(dep.dt.day.to_numpy() - 1, 27)
    features["sched_dep"] = (
        start + pd.to_timedelta(day, unit="D") + (dep - dep.dt.normalize())
    ).astype("datetime64[ns]")
    return features, target


def address_cap(memory_gib: float) -> Callable[[], None]:
    """A ``preexec_fn``: the child's address space capped at ``memory_gib`` (a step that
    needs more fails with MemoryError, not the kernel's OOM killer)."""
    limit = int(memory_gib * 2**30)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return cap


def result_of(stdout: str) -> dict[str, Any] | None:
    """The ``RESULT {json}`` line a measured child printed, or None."""
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    return None


def run_measured(
    code: str, args: str, memory_gib: float, timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """``python -c code args`` under an address-space cap: its ``RESULT`` line, or the
    error it ended with (the last exception line of its stderr) and its wall time."""
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=address_cap(memory_gib),
        )
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    result = result_of(proc.stdout)
    if result is not None:
        return result
    tail = [x for x in proc.stderr.strip().splitlines() if x.strip()]
    raised = [x for x in tail if re.match(r"^[\w.]*(Error|Exception|Failed|Killed)\b", x)]
    error = (raised or tail or [f"exit {proc.returncode}"])[-1]
    return {"error": error[:300], "wall": time.perf_counter() - started}


def _run_step(
    home: Path, env: dict[str, str], args: dict[str, Any], memory_gib: float, timeout: float
) -> dict[str, Any]:
    return run_measured(
        STEP, json.dumps(args), memory_gib, timeout, {**env, "COSINE_RETRAIN_HOME": str(home)}
    )


def _prepare(home: Path, work: Path, env: dict[str, str]) -> None:
    """The bench spec, January and February as the demo's batches, the demo's champion."""
    from training.data.flights import load_months

    spec = yaml.safe_load(SPEC.read_text())
    spec["row_count_max"] = 30_000_000
    spec_path = work / "flights-scale.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    folder = work / "first"
    folder.mkdir()
    for month in (1, 2):
        features, labels = load_months([month])
        frame = features.merge(labels[["flight_id", "late"]], on="flight_id")
        frame.to_parquet(folder / f"2013-{month:02d}.parquet", index=False)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "demo", "--spec", str(spec_path), "--batches",
         str(folder), "--home", str(home)],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0 or "first model: champion" not in proc.stdout:
        raise RuntimeError(
            "the demo made no champion:\n" + proc.stdout[-3000:] + proc.stderr[-2000:]
        )


def bench_home(prefix: str) -> tuple[Path, Path, dict[str, str]]:
    """A scratch folder, the home in it (not made yet: :func:`_prepare` makes it) and
    the environment the steps run with (the tiny training config, the bench's gate)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    env = {**os.environ, **SETTINGS, "COSINE_RETRAIN_RETRAIN__TRAIN_CONFIG": str(TINY_TRAIN)}
    env.pop("COSINE_RETRAIN_SPEC", None)
    return work, work / "home", env


def measure(sizes: list[int], memory_gib: float, timeout: float) -> dict[str, Any]:
    from training.data.flights import load_months

    work, home, env = bench_home("bench-scale-")
    results: dict[str, Any] = {"sizes": sizes, "steps": {}, "memory_gib": memory_gib}
    try:
        _prepare(home, work, env)
        year, labels = load_months(list(range(1, 13)))
        broke: dict[str, int] = {}
        for k, rows in enumerate(sizes):
            batches = [f"{2014 + k}-{m:02d}" for m in (1, 2, 3)]
            cells: dict[str, Any] = {}
            files = {}
            for j, batch in enumerate(batches):
                t = time.perf_counter()
                features, target = _batch(year, labels, rows, batch, seed=100 * k + j)
                files[batch] = (work / f"{batch}.parquet", work / f"{batch}-labels.parquet")
                features.to_parquet(files[batch][0], index=False)
                target[["flight_id", "late"]].to_parquet(files[batch][1], index=False)
                del features, target
                print(f"  {rows:,} rows: {batch} generated in {time.perf_counter() - t:.0f} s",
                      flush=True)  # fmt: skip
            failed = False
            for step in STEPS:
                if step in broke or failed:
                    cells[step] = {"skipped": f"failed at {broke[step]:,}" if step in broke else
                                   "a step before failed"}  # fmt: skip
                    failed = True
                    continue
                targets = batches if step in ("land", "validate", "land_labels") else batches[-1:]
                for batch in targets:
                    source = {"land": files[batch][0], "land_labels": files[batch][1]}.get(step)
                    args = {"step": step, "batch": batch, "source": str(source or "")}
                    cell = _run_step(home, env, args, memory_gib, timeout)
                    if "error" in cell:
                        break
                cells[step] = cell
                shown = (
                    f"{cell['seconds']:.1f} s, peak {cell['peak_mb']:,.0f} MB"
                    if "error" not in cell
                    else f"FAILED: {cell['error']}"
                )
                print(f"  {rows:,} rows: {step}: {shown}", flush=True)
                if "error" in cell:
                    broke[step] = rows
                    failed = True
            results["steps"][rows] = cells
            for paths in files.values():
                for path in paths:
                    path.unlink(missing_ok=True)
            shutil.rmtree(home / "work", ignore_errors=True)  # the window's export, not kept
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def _cell(cell: dict[str, Any]) -> str:
    if "skipped" in cell:
        return "-"
    if "error" in cell:
        return "**fails**"
    return f"{cell['seconds']:.1f} s / {cell['peak_mb'] / 1024:.1f} GiB"


def _plot(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = results["sizes"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for step in STEPS:
        xs, secs, mem = [], [], []
        for rows in sizes:
            cell = results["steps"].get(rows, {}).get(step, {})
            if "seconds" in cell:
                xs.append(rows)
                secs.append(cell["seconds"])
                mem.append(cell["peak_mb"] / 1024)
        if xs:
            left.plot(xs, secs, marker="o", label=step)
            right.plot(xs, mem, marker="o", label=step)
    for ax, what in ((left, "seconds (the step's call)"), (right, "peak resident GiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows per batch")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
    right.axhline(results["memory_gib"], color="red", linestyle="--", label="limit")
    left.legend(fontsize=8)
    fig.suptitle("The pandas path: each step against the batch size")
    fig.tight_layout()
    PNG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PNG, dpi=110)
    plt.close(fig)


def _body(results: dict[str, Any], elapsed: float) -> str:
    sizes = results["sizes"]
    head = (
        "| step | "
        + " | ".join(f"{s:,}" for s in sizes)
        + f" | growth {sizes[0]:,} -> largest run |"
    )
    lines = [head, "|---|" + "---:|" * (len(sizes) + 1)]
    first_failure = None
    for step in STEPS:
        cells = [results["steps"].get(s, {}).get(step, {"skipped": ""}) for s in sizes]
        done = [(s, c) for s, c in zip(sizes, cells, strict=True) if "seconds" in c]
        growth = ""
        if len(done) >= 2:
            (s0, c0), (s1, c1) = done[0], done[-1]
            growth = (
                f"{c1['seconds'] / c0['seconds']:.1f}x time, "
                f"{c1['peak_mb'] / c0['peak_mb']:.1f}x memory for {s1 / s0:.0f}x rows"
            )
        lines.append(f"| {step} | " + " | ".join(_cell(c) for c in cells) + f" | {growth} |")
        for s, c in zip(sizes, cells, strict=True):
            if "error" in c and (first_failure is None or s < first_failure[0]):
                first_failure = (s, step, c["error"])
    imports = [
        c.get("imports") for cs in results["steps"].values() for c in cs.values() if "imports" in c
    ]
    base = [
        c.get("base_mb") for cs in results["steps"].values() for c in cs.values() if "base_mb" in c
    ]
    verdict = (
        f"**The first step to break: `{first_failure[1]}` at {first_failure[0]:,} rows a batch** "
        f"({first_failure[2]})."
        if first_failure
        else f"No step broke up to {sizes[-1]:,} rows a batch."
    )
    return f"""Each cell: the step's call in seconds / the process's peak resident memory (GiB,
imports included: {min(base) / 1024:.2f}-{max(base) / 1024:.2f} GiB before the call; the
imports themselves {min(imports):.0f}-{max(imports):.0f} s, paid once per task process).
Address space capped at {results["memory_gib"]:g} GiB a step. Batches of the given rows,
three of them in the window (the `window` and `train` columns handle three times the
batch). Whole run: {elapsed / 60:.0f} min.

{verdict}

{chr(10).join(lines)}

![each step against the batch size](img/scale.png)
"""


def size_parser(prog: str, doc: str, sizes: tuple[int, ...]) -> argparse.ArgumentParser:
    """The options every batch-size benchmark takes: sizes, the address-space cap, the
    per-step timeout, --no-write."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in sizes),
                        help="rows a batch, comma-separated")  # fmt: skip
    parser.add_argument("--memory-gib", type=float, default=20.0, help="address space per step")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per step")
    parser.add_argument("--no-write", action="store_true", help="print, leave the docs alone")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = size_parser("./run bench scale", __doc__ or "", SIZES)
    args = parser.parse_args(argv or [])
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    started = time.perf_counter()
    results = measure(sizes, args.memory_gib, args.timeout)
    elapsed = time.perf_counter() - started
    body = _body(results, elapsed)
    print(body)
    if not args.no_write:
        _plot(results)
        write_section("scale", "The pandas path against the batch size", body)
