"""Tuning: an Optuna study over the cosine schedule, and the configs it produces.

:mod:`.space` holds the tuner's parts (search space, sampler, pruner at cycle
ends), :mod:`.study` runs the trials through the training job's API, :mod:`.pick`
chooses among what they measured, :mod:`.report` puts the study on its MLflow run, and
:mod:`.configs` keeps each tuned config as a version in the store with its
held-out verdict. Imports no other room.
"""
