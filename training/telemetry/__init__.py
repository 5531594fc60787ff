"""Telemetry: what a run reports while it runs and what its curves say after.

:mod:`.recorder` writes metrics to a local ``metrics.jsonl`` and to MLflow through
:mod:`.sender` (its own process), :mod:`.pushgateway` pushes the latest values to
Prometheus, :mod:`.progress` shows a bar or log lines, :mod:`.cost` meters device
time, :mod:`.plots` draws the schedule and the curves, and :mod:`.health` judges
a finished run's loss and cycle bests.
"""
