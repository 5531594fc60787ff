"""``python -m benchmarks NAME [NAME ...]`` (or ``all``): results go to docs/benchmarks.md.

``python -m benchmarks NAME --option ...`` hands the options to that one benchmark
(``./run bench cycle_stopping --dataset gss``)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "scheduler": "benchmarks.scheduler",
    "training_overhead": "benchmarks.training_overhead",
    "quality": "benchmarks.quality",
    "data": "benchmarks.data",
    "live_month": "benchmarks.live_month",
    "cycle_stopping": "benchmarks.cycle_stopping",
    "canary_sequential": "benchmarks.canary_sequential",
    "tuning": "benchmarks.tuning",
    "scale": "benchmarks.scale",
    "spark": "benchmarks.spark_scale",
    "stream_memory": "benchmarks.stream_memory",
}


def main(argv: list[str]) -> int:
    options = [i for i, a in enumerate(argv) if a.startswith("-")]
    passed: list[str] | None = None
    if options:
        names, passed = argv[: options[0]], argv[options[0] :]
        if len(names) != 1:
            print("error: options go to one benchmark: NAME --option ...", file=sys.stderr)
            return 2
    else:
        names = argv or ["all"]
    if names == ["all"]:
        names = list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(
            f"error: unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)} or 'all'",
            file=sys.stderr,
        )
        return 2
    for name in names:
        print(f"== {name}", flush=True)
        module = importlib.import_module(BENCHMARKS[name])
        if passed is None:
            module.main()
        else:
            module.main(passed)
    print("results written to docs/benchmarks.md")
    return 0


raise SystemExit(main(sys.argv[1:]))
