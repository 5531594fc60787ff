"""The training job's configuration, validated once at load.

:mod:`.train` holds :class:`~training.config.train.TrainConfig` (its sections and
loading from YAML and ``--set`` items), :mod:`.schedule` the ``schedule`` section
(lengths in epochs or steps), :mod:`.updates` a config changed by dotted fields and
the ``--set`` items a command line carries, :mod:`.text` the text around a config
(YAML files, override items, one error line per field), and :mod:`.locations`
where things live by default (home, MLflow, the code revision).
"""
