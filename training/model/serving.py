"""Scoring raw rows with best-of-cycle checkpoints, and the MLflow pyfunc around it.

A :class:`Scorer` holds one or more checkpoints of the same training run (one
for a cycle's best, several for a snapshot ensemble, whose probability is the
mean of its members'). Each checkpoint carries its preprocessing state and the
model's signature, so scoring applies exactly the transforms of training.

:class:`TabularPyfunc` is the MLflow ``python_function`` model the registry
logs ("models from code": ``training/model/mlflow_model.py`` is the model's code,
the checkpoints are its artifacts, and nothing is pickled). Loading goes
through :func:`training.checkpoint.files.load_checkpoint`, i.e. checksum first and
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from training.checkpoint.files import CheckpointError, load_checkpoint
from training.data.preprocess import Preprocessor
from training.data.spec import as_double, categories_as_str
from training.model.network import TabularMLP

PROBABILITY = "probability"
STRING, DOUBLE = "string", "double"


def input_types(preprocessor: Preprocessor) -> dict[str, str]:
    """The model's input columns and their types, from the spec's roles (which the
    preprocessing keeps), never from a frame's dtypes: categorical columns are
    strings, numeric ones doubles, both nullable. A categorical column that was
    all-null in training is still a string column."""
    return {
        **dict.fromkeys(preprocessor.categorical, STRING),
        **dict.fromkeys(preprocessor.numeric, DOUBLE),
    }


def as_model_input(frame: pd.DataFrame, types: Mapping[str, str]) -> pd.DataFrame:
    """``frame``'s columns of ``types`` in the types of the model's signature.

    String columns go through :func:`categories_as_str` (``3``, ``3.0`` and ``"3"``
    are one category; nulls stay null, also in an all-null float column); double
    columns become float64 with NaN for nulls (ints, nullable ``Int64``, an all-null
    object column). Anything else is left as it is, for the signature to refuse
    by name. Columns that ``frame`` lacks are left out (the signature names them).
    """
    out: dict[str, pd.Series] = {}
    for name, kind in types.items():
        if name not in frame.columns:
            continue
        col = frame[name]
        if kind == STRING:
            out[name] = categories_as_str(col)
        elif kind == DOUBLE:
            values = as_double(col)
            out[name] = col if values is None else pd.Series(values, index=frame.index, name=name)
        else:
            out[name] = col
    return pd.DataFrame(out, index=frame.index)


class Scorer:
    """Probability of the positive class for raw feature rows."""

    def __init__(self, checkpoints: Sequence[dict[str, Any]]) -> None:
        if not checkpoints:
            raise CheckpointError("a scorer needs at least one checkpoint")
        self.preprocessor = Preprocessor.from_state(checkpoints[0]["preprocessor"])
        fingerprint = self.preprocessor.fingerprint()
        self.models: list[TabularMLP] = []
        for ckpt in checkpoints:
            if ckpt.get("kind") not in ("best", "last"):
                raise CheckpointError(f"not a model checkpoint (kind {ckpt.get('kind')!r})")
            if Preprocessor.from_state(ckpt["preprocessor"]).fingerprint() != fingerprint:
                raise CheckpointError(
                    "ensemble members must share one preprocessing (the same training run)"
                )
            model = TabularMLP.from_signature(ckpt["model_signature"])
            try:
                model.load_state_dict(ckpt["model"], strict=True)
            except RuntimeError as exc:
                raise CheckpointError(f"checkpoint does not fit its own signature: {exc}") from None
            model.eval()
            self.models.append(model)
        self.feature_columns = [*self.preprocessor.categorical, *self.preprocessor.numeric]

    @classmethod
    def from_files(cls, paths: Sequence[str | Path]) -> Scorer:
        return cls([load_checkpoint(p) for p in paths])

    @property
    def input_types(self) -> dict[str, str]:
        return input_types(self.preprocessor)

    @torch.no_grad()
    def predict_proba(self, frame: pd.DataFrame, batch_size: int = 65_536) -> np.ndarray:
        cats, nums = self.preprocessor.transform(frame, "rows to score")
        out = np.zeros(len(frame), dtype=np.float64)
        for model in self.models:
            for i in range(0, len(frame), batch_size):
                c = torch.from_numpy(cats[i : i + batch_size])
                n = torch.from_numpy(nums[i : i + batch_size])
                out[i : i + batch_size] += torch.sigmoid(model(c, n)).double().numpy()
        return out / len(self.models)


def model_signature(scorer: Scorer) -> Any:
    """The MLflow signature of a registered model: one column per feature of the
    spec, typed by its role (:func:`input_types`), all nullable; ``probability`` out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    kinds = {STRING: DataType.string, DOUBLE: DataType.double}
    inputs = Schema([ColSpec(kinds[k], name) for name, k in scorer.input_types.items()])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec(DataType.double, PROBABILITY)]))


try:  # the pyfunc wrapper needs mlflow; the trainer image may score without it
    import mlflow.pyfunc

    class TabularPyfunc(mlflow.pyfunc.PythonModel):
        """``predict(DataFrame of raw features) -> DataFrame[probability]``."""

        def load_context(self, context):  # type: ignore[no-untyped-def]
            names = sorted(k for k in context.artifacts if k.startswith("checkpoint_"))
            self.scorer = Scorer.from_files([context.artifacts[k] for k in names])

        # no type hints here: MLflow 3 would derive a (wrong) signature from them
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            frame = (
                model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
            )
            return pd.DataFrame({PROBABILITY: self.scorer.predict_proba(frame)})

except ImportError:  # pragma: no cover - exercised only in images without mlflow
    TabularPyfunc = None  # type: ignore[assignment,misc]
