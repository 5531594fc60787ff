"""The holdout of a training run: its validation rows, rebuilt from its resolved config.

The gate and the registration judge a version on the rows its run held out. They
are rebuilt from the run's ``config.resolved.json`` (logged to MLflow) with the
training job's own data code, so they are exactly the rows the run validated on.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.base.store import ObjectStore
from pipeline.steps.registry.aliases import RegistryError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from training.api import DatasetSpec

__all__ = ["download_artifact", "training_holdout", "workdir"]


def download_artifact(client: MlflowClient, run_id: str, path: str, dest: Path) -> Path:
    from mlflow.exceptions import MlflowException

    try:
        return Path(client.download_artifacts(run_id, path, str(dest)))
    except (MlflowException, OSError) as exc:
        raise RegistryError(
            f"training run {run_id} has no artifact {path!r} ({exc}); was it logged to MLflow?"
        ) from None


def _store_key(store: ObjectStore, uri: str) -> str | None:
    """The store key of ``uri`` when the URI lies in this store, else None."""
    base = store.uri("probe")[: -len("probe")]
    return uri[len(base) :] if uri.startswith(base) else None


def training_holdout(
    client: MlflowClient,
    run_id: str,
    spec: DatasetSpec,
    work: Path | None = None,
    *,
    store: ObjectStore | None = None,
) -> pd.DataFrame:
    """The run's validation rows (features + target), rebuilt from its resolved config.

    Training files that lie in ``store`` are read through it (the pipeline's own
    credentials and endpoint), not through the job's default AWS chain.
    """
    from training.api import TrainConfig, open_for

    with workdir(work) as folder:
        resolved = json.loads(
            download_artifact(client, run_id, "config.resolved.json", folder).read_text()
        )
        config = TrainConfig.model_validate(resolved)
        local: dict[str, str] = {}
        for field in ("features", "labels"):
            uri = getattr(config.data, field)
            key = _store_key(store, uri) if store is not None and isinstance(uri, str) else None
            if key is None:
                continue
            assert store is not None
            dest = folder / "holdout-data" / f"{field}{Path(key).suffix}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            if key.endswith("/"):  # a prefix: the window's labelled file of each batch
                dest.mkdir(exist_ok=True)
                for item in store.list(key):
                    store.get_file(item, dest / Path(item).name)
                local[field] = str(dest)
            else:
                local[field] = str(store.get_file(key, dest))
        data = config.data.model_copy(update=local)
        # the streamed window's validation rows are a bounded sample (StreamedData.valid_frame)
        prepared = open_for(config.model_copy(update={"data": data}), spec)
    return prepared.valid_frame


@contextlib.contextmanager
def workdir(work: Path | None) -> Iterator[Path]:
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        yield work
        return
    with tempfile.TemporaryDirectory(prefix="cosine-retrain-registry-") as tmp:
        yield Path(tmp)
