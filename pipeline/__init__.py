"""cosine-retrain's pipeline, in floors (each imports only the floors below it):

- :mod:`pipeline.apps`: what knows Airflow or a terminal (CLI, demo, UI, notifiers,
  the DAGs' shared wiring);
- :mod:`pipeline.flow`: the one API that DAG tasks and the CLI call, with typed records;
- :mod:`pipeline.steps`: ingest, validation, drift, registration, gate, canary...:
  plain typed functions over base objects;
- :mod:`pipeline.base`: config, object store, key layout, MLflow client, alerts.

``.importlinter`` holds the contracts (checked by ``./run lint`` and the tests).
Importing this package imports nothing else: heavy libraries (Great Expectations,
Evidently, boto3, Airflow) load inside the functions that need them.
"""
