"""The per-batch ledger, on both stores: one object per (batch, step), newest wins."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline.base.ledger import (
    MONITOR_STEPS,
    STEPS,
    ledger_key,
    missing_steps,
    read_ledger,
    record_step,
)
from pipeline.base.store import InvalidKey, ObjectStore, get_json


def test_steps_are_recorded_per_batch_and_read_back_in_order(store: ObjectStore) -> None:
    record_step(store, "ds", "2024-02", "landed", version=1, detail="1000 rows")
    record_step(store, "ds", "2024-01", "landed", version=1)
    record_step(store, "ds", "2024-01", "validated", version=1, detail="9 of 9")
    ledger = read_ledger(store, "ds")
    assert list(ledger) == ["2024-01", "2024-02"]
    assert ledger["2024-01"].line() == "landed v1, validated v1"
    assert ledger["2024-02"].entries["landed"].detail == "1000 rows"
    # what is on the store, read without the code: one JSON object per step
    value = get_json(store, "ledger/ds/2024-01/validated.json")
    assert (value["step"], value["version"], value["detail"]) == ("validated", 1, "9 of 9")
    assert read_ledger(store, "other") == {}


def test_a_step_done_again_replaces_its_entry_and_versions_count(store: ObjectStore) -> None:
    record_step(store, "ds", "b", "validated", version=1)
    first = read_ledger(store, "ds")["b"]
    assert first.done("validated")
    assert first.done("validated", 1)
    assert missing_steps(first, 1) == ["drift_checked", "scored"]
    # a corrected version v2 landed: nothing of the monitor is done for it yet
    assert missing_steps(first, 2) == list(MONITOR_STEPS)
    record_step(store, "ds", "b", "validated", version=2)
    again = read_ledger(store, "ds")["b"]
    assert again.entries["validated"].version == 2
    assert not again.done("validated", 1)
    assert missing_steps(None, 1) == list(MONITOR_STEPS)


def test_steps_of_one_batch_written_at_once_all_land(store: ObjectStore) -> None:
    """Different steps of one batch by concurrent tasks: no shared file to race on."""
    with ThreadPoolExecutor(max_workers=len(STEPS)) as pool:
        list(pool.map(lambda s: record_step(store, "ds", "b", s, version=3), STEPS))
    state = read_ledger(store, "ds")["b"]
    assert sorted(state.entries) == sorted(STEPS)
    assert all(e.version == 3 for e in state.entries.values())


def test_unknown_steps_and_bad_ids_are_refused(store: ObjectStore) -> None:
    with pytest.raises(ValueError, match="ledger step must be one of"):
        ledger_key("ds", "b", "trained")
    with pytest.raises(InvalidKey):
        record_step(store, "ds", "../b", "landed")
