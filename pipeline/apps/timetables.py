"""The cron of the cosine-retrain DAGs: ticks run while a scheduler runs, never later.

Airflow's ``CronTriggerTimetable`` with ``catchup=False`` still starts one run for
the most recent *past* tick whenever it decides the next run: on the first parse
of a DAG, after it is unpaused, after the scheduler was down. For this pipeline
that run is wrong: a ``tune`` study for a quarter that ended while nothing ran,
a ``retrain`` against whatever is in the store at an hour nobody chose, on the
first ``./run ui`` of a demo home.

:class:`NoCatchUpCron` keeps every other behaviour of the stock timetable (run
ids, the UI's summary, the cron's own ticks while the scheduler runs) and moves
the earliest allowed run to *now*: a tick that passed while no scheduler was
running is never run. Custom timetables must be registered as an Airflow plugin
(:class:`CosineRetrainPlugin`, found through the ``airflow.plugins`` entry point
in pyproject.toml, so every process with the package installed has it).
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow._shared.timezones.timezone import coerce_datetime, utcnow
from airflow.plugins_manager import AirflowPlugin
from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction
from airflow.timetables.trigger import CronTriggerTimetable


def no_earlier_than_now(restriction: TimeRestriction) -> TimeRestriction:
    """``restriction`` whose earliest run is at least now (for ``catchup=False``)."""
    now = coerce_datetime(utcnow())
    earliest = now if restriction.earliest is None else max(restriction.earliest, now)
    return TimeRestriction(earliest, restriction.latest, restriction.catchup)


class NoCatchUpCron(CronTriggerTimetable):
    """``CronTriggerTimetable`` that never runs a tick from before the scheduler
    looked: with ``catchup=False`` the next run is the first tick at or after now,
    or after the last scheduled run, whichever is later. With ``catchup=True``
    (not used by the pipeline's DAGs) it is the stock timetable."""

    def __init__(self, cron: str, **kwargs: Any) -> None:
        super().__init__(cron, **kwargs)
        if self.description:  # the UI's schedule tooltip
            self.description += " (ticks missed while no scheduler ran are skipped)"

    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        restriction: TimeRestriction,
    ) -> DagRunInfo | None:
        if not restriction.catchup:
            restriction = no_earlier_than_now(restriction)
        return super().next_dagrun_info(
            last_automated_data_interval=last_automated_data_interval, restriction=restriction
        )


class CosineRetrainPlugin(AirflowPlugin):
    """Registers :class:`NoCatchUpCron` with Airflow (serialised DAGs name it)."""

    name = "cosine_retrain"
    timetables: ClassVar[list[type]] = [NoCatchUpCron]
