"""``python -m pipeline.apps.preload airflow scheduler`` (or ``... celery worker``):
an Airflow component whose task processes start with the pipeline's heavy libraries
already imported.

On Linux, Airflow 3's LocalExecutor forks its workers from the scheduler, and each
task's supervisor forks the task process from its worker (the Celery worker forks
likewise): a module the parent imported before the fork is in every task process
for free. A task of the pipeline otherwise pays its imports each time (measured in
fresh processes: Great Expectations about 6 s, Evidently 7 s, torch 2 s, MLflow 3 s;
docs/benchmarks.md, "One month through the live stack"). This wrapper imports them
once, then hands over to Airflow's own command line, unchanged.

What is imported: :data:`PRELOAD` (``COSINE_RETRAIN_PRELOAD`` overrides it: a
comma-separated list of modules, empty for none). A module that fails to import is
reported and skipped: the task that needs it imports it itself, as without the
wrapper. Nothing here starts a thread or opens a connection before the fork.
"""

from __future__ import annotations

import importlib
import os
import sys
import time

__all__ = ["PRELOAD", "main", "preload"]

PRELOAD = (
    "pandas",
    "pyarrow.parquet",
    "great_expectations",
    "great_expectations.expectations",
    "evidently.presets",
    "evidently.core.report",
    "mlflow",
    "mlflow.pyfunc",
    "torch",
    "sklearn.metrics",
    "scipy.stats",
    "pipeline.flow",
)
ENV = "COSINE_RETRAIN_PRELOAD"


def preload(modules: tuple[str, ...] | list[str] = PRELOAD) -> dict[str, float]:
    """Import ``modules``; the seconds each took (a failure is reported, not raised)."""
    took = {}
    for name in modules:
        t0 = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing extra must not stop the scheduler
            print(f"[preload] {name} not preloaded: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        took[name] = time.perf_counter() - t0
    return took


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "airflow":
        print(
            "usage: python -m pipeline.apps.preload airflow <component> [args...] "
            "(e.g. airflow scheduler, airflow celery worker)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    wanted = os.environ.get(ENV)
    modules = PRELOAD if wanted is None else [m.strip() for m in wanted.split(",") if m.strip()]
    t0 = time.perf_counter()
    took = preload(modules)
    print(
        f"[preload] {len(took)} modules in {time.perf_counter() - t0:.1f} s before "
        f"'airflow {' '.join(args[1:])}': {', '.join(took) or 'none'}",
        file=sys.stderr,
        flush=True,
    )
    from airflow.__main__ import main as airflow_main

    sys.argv = args
    airflow_main()


if __name__ == "__main__":
    main()
