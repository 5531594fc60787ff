"""The code of every registered model ("models from code": MLflow copies this file
into the model and runs it at load time; the checkpoints are the model's artifacts)."""

import mlflow

from training.model.serving import TabularPyfunc

mlflow.models.set_model(TabularPyfunc())
