"""Registry: training runs and model versions in MLflow.

:mod:`.registration` turns a run's cycle bests into versions (logged by
:mod:`.versions`), :mod:`.aliases` moves ``champion``/``challenger``/``canary``
under one lock with an audit trail, :mod:`.scoring` loads a registered model and
scores raw rows, :mod:`.smoke` has it score every value its spec allows,
:mod:`.holdout` rebuilds a run's validation rows, :mod:`.health` judges a finished
run's curves, and :mod:`.model_card` writes each version's card. Imports no
other room.
"""
