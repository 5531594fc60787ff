"""Following asset events from one ``dag.test()`` run to the next, as the scheduler does.

``dag.test()`` (what ``airflow dags test`` runs) executes one DAG run in this
process. It records the asset events the run's tasks emit and queues the DAGs
that consume them (``asset_dag_run_queue``), but it never starts those consumers:
creating asset-triggered runs is the scheduler's job. :class:`AssetFollower` does
exactly that part, as the scheduler does it (Airflow 3.3's
``SchedulerJobRunner._create_dag_runs_asset_triggered``): for each DAG in the
queue, the events on its assets since its previous run become the run's
``consumed_asset_events`` (what the tasks read as ``triggering_asset_events``),
and the queue rows are removed. The run itself is then executed by ``dag.test()``
with no conf, so the DAG code decides from the events, as in production. What
differs from a scheduler: the run's ``run_type`` is ``manual`` (``dag.test()``
creates it), and runs execute one at a time in queue order.
``tests/stack/test_asset_chain.py`` runs the same hops under a real scheduler.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["AssetFollower"]


class AssetFollower:
    def queued(self) -> list[str]:
        """DAG ids waiting for an asset-triggered run, oldest request first."""
        from airflow.models.asset import AssetDagRunQueue
        from airflow.utils.session import create_session
        from sqlalchemy import func, select

        with create_session() as session:
            rows = session.execute(
                select(AssetDagRunQueue.target_dag_id, func.min(AssetDagRunQueue.created_at))
                .group_by(AssetDagRunQueue.target_dag_id)
                .order_by(func.min(AssetDagRunQueue.created_at))
            ).all()
        return [dag_id for dag_id, _ in rows]

    def _events(self, session: Any, dag_id: str) -> list[int]:
        """Ids of the events on ``dag_id``'s assets since the newest event one of its
        runs consumed (the scheduler: since its previous asset-triggered run)."""
        from airflow.models.asset import (
            AssetEvent,
            DagScheduleAssetReference,
            association_table,
        )
        from airflow.models.dagrun import DagRun
        from sqlalchemy import func, select

        assets = select(DagScheduleAssetReference.asset_id).where(
            DagScheduleAssetReference.dag_id == dag_id
        )
        floor = session.scalar(
            select(func.max(AssetEvent.timestamp))
            .join(association_table, association_table.c.event_id == AssetEvent.id)
            .join(DagRun, DagRun.id == association_table.c.dag_run_id)
            .where(DagRun.dag_id == dag_id)
        )
        query = select(AssetEvent.id).where(AssetEvent.asset_id.in_(assets))
        if floor is not None:
            query = query.where(AssetEvent.timestamp > floor)
        return list(session.scalars(query.order_by(AssetEvent.timestamp, AssetEvent.id)))

    @contextlib.contextmanager
    def consuming(self, dag_id: str) -> Iterator[list[int]]:
        """While the block runs ``dag.test()`` of ``dag_id``, the run it creates consumes
        the events the scheduler would hand it; the queue rows are removed. Yields
        the ids of those events."""
        from airflow.models.asset import AssetDagRunQueue, association_table
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import delete, event

        with create_session() as session:
            events = self._events(session, dag_id)
            session.execute(
                delete(AssetDagRunQueue).where(AssetDagRunQueue.target_dag_id == dag_id)
            )

        def attach(mapper: Any, connection: Any, run: Any) -> None:
            if run.dag_id == dag_id and events:
                connection.execute(
                    association_table.insert(),
                    [{"dag_run_id": run.id, "event_id": e} for e in events],
                )

        event.listen(DagRun, "after_insert", attach)
        try:
            yield events
        finally:
            event.remove(DagRun, "after_insert", attach)
