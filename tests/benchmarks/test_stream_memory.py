"""The stream_memory benchmark's window and job: what it measures is the streamed job.

``./run bench stream_memory`` compares peaks at 1M and 30M rows; its figures mean
something only if the window is the pipeline's shape (one labelled file a batch, in
the row groups the job reads) and the job it runs really streams it to the end."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from benchmarks import stream_memory
from training.data.sources import ROW_GROUP_ROWS
from training.data.spec import BATCH_COLUMN


def test_the_window_is_the_pipelines_and_the_job_streams_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_memory, "BATCH_ROWS", 20_000)
    folder = tmp_path / "window"
    assert stream_memory.write_window(folder, 50_000) == 3
    files = sorted(folder.glob("*.parquet"))
    frames = [pd.read_parquet(f) for f in files]
    assert [len(f) for f in frames] == [16_666, 16_667, 16_667]
    assert [f[BATCH_COLUMN].unique().tolist() for f in frames] == [
        ["2014-01"],
        ["2014-02"],
        ["2014-03"],
    ]
    assert all(f["late"].isin([0, 1]).all() for f in frames)
    groups = [pq.ParquetFile(f).metadata for f in files]
    assert max(g.row_group(i).num_rows for g in groups for i in range(g.num_row_groups)) == (
        ROW_GROUP_ROWS
    )
    cell = stream_memory.run_job(folder, tmp_path / "runs", 16.0, 600.0, "data.streaming=on")
    assert cell.get("status") == "completed", cell
    assert cell["kind"] == "StreamedData"
    assert cell["data"]["rows_train"] + cell["data"]["rows_valid"] == 50_000
    assert cell["peak_mb"] >= cell["base_mb"] > 0
