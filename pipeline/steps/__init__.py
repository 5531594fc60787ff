"""The steps floor: plain typed functions over base objects, returning frozen records,
in rooms by domain (each package's docstring lists what lives there):

- :mod:`.landing`: input files, features and labels landing in the store;
- :mod:`.quality`: the expectation suite, validation and release, reference
  snapshots, drift, live quality, and the retrain decision;
- :mod:`.registry`: runs and versions in MLflow, aliases, scoring, smoke test,
  holdout, run health, model cards;
- :mod:`.promotion`: the gate and its rules, promote/reject/rollback, approval;
- :mod:`.canary`: routing and shadow scoring, the evidence, the review;
- :mod:`.tuning`: the Optuna study and the tuned configs;
- :mod:`.ops`: spend and the replay's report.

What may use what (.importlinter, "Steps rooms"): canary -> promotion ->
registry, quality, tuning, ops (independent of each other) -> landing. Steps
import only the base floor (and training through :mod:`training.api`), never the
flow or an app; no step knows Airflow.
"""
