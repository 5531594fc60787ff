"""The training job: a cosine-scheduled, resumable PyTorch run over a tabular data set.

Grouped by concept, each package's docstring says what lives there:
:mod:`.config` (the validated config and the text around it), :mod:`.schedule`
(the cosine math and its torch adapter), :mod:`.data` (dataset specs, sources,
preprocessing), :mod:`.model` (the network, its construction, scoring and the
MLflow pyfunc), :mod:`.checkpoint` (atomic files, the payload), :mod:`.engine`
(the trainer and what it composes), :mod:`.telemetry` (MLflow, Pushgateway,
plots, health, cost), :mod:`.cli` (``python -m training``), and
:mod:`.results` (the events and the result a run reports).

:mod:`training.api` is the one door: the pipeline imports nothing else of it.
Nothing here imports the pipeline, the DAGs or Airflow (the trainer image ships
this package alone).
"""
