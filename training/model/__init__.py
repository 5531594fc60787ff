"""The model: :mod:`.network` (a tabular MLP), :mod:`.build` (model and optimizer
from the config), :mod:`.serving` (scoring raw rows with cycle-best checkpoints, the
pyfunc and its signature) and :mod:`.mlflow_model` (the code MLflow stores with
every registered model)."""
