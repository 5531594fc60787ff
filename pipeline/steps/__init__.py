"""The steps floor: plain typed functions over base objects, returning frozen records.

Data: :mod:`.sources` (input files), :mod:`.ingest` and :mod:`.labels` (landing),
:mod:`.suite`, :mod:`.gx_results` and :mod:`.validation` (Great Expectations),
:mod:`.reference`, :mod:`.drift` (Evidently), :mod:`.quality` (live AUC),
:mod:`.decision` (the retrain decision). Models: :mod:`.holdout`,
:mod:`.versions` and :mod:`.registration` (MLflow registry), :mod:`.aliases`
(moves, lock, audit), :mod:`.scoring`, :mod:`.gate`, :mod:`.canary`,
:mod:`.promotion`. Operations: :mod:`.spend`, :mod:`.health`, :mod:`.report`.
Steps import only the base floor (and the training package), never the flow or
an app; no step knows Airflow.
"""
