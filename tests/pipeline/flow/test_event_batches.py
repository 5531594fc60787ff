"""A run over several asset events takes every batch they name."""

from __future__ import annotations

from pipeline.flow.triggers import Event, event_batches


def test_a_run_takes_every_batch_its_events_name_once_in_batch_order() -> None:
    events = [
        Event({"batch_id": "2013-03"}),
        Event({"batch_id": "2013-01"}),
        Event({"kind": "features"}),  # names no batch
        Event({"batch_id": "2013-02"}),
        Event({"batch_id": "2013-03"}),  # the same batch landed again
        Event({"batch_ids": ["2013-05", "2013-04"], "kind": "features"}),  # a landing sweep
    ]
    assert event_batches(events) == ["2013-01", "2013-02", "2013-03", "2013-04", "2013-05"]
    assert event_batches([]) == []
