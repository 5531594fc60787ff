"""The DAGs' cron schedules as the scheduler holds them: no tick from before it looked.

The DAG files are parsed and serialised (what the dag-processor stores and the
scheduler reads back, through the plugin that registers the timetable); the next
run each serialised DAG asks for is compared with Airflow's own stock
``CronTriggerTimetable``: with ``catchup=False`` the stock one starts the most
recent past tick (a quarterly ``tune`` for a quarter that ended while nothing
ran), the pipeline's never does, on a first parse and after a long stop alike.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.support import airflow_script

ROOT = Path(__file__).resolve().parents[2]

NEXT_RUNS = textwrap.dedent(
    """
    import json, sys
    from datetime import timedelta
    from pathlib import Path

    from airflow._shared.timezones.timezone import coerce_datetime, utcnow
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import DagRunInfo, TimeRestriction
    from airflow.timetables.trigger import CronTriggerTimetable

    folder = Path(sys.argv[1])
    bag = BundleDagBag(folder, bundle_path=folder)
    now = coerce_datetime(utcnow())
    long_ago = now - timedelta(days=400)  # many ticks of every cron here
    out = {"now": now.isoformat(), "errors": {str(k): v for k, v in bag.import_errors.items()}}
    for dag_id, dag in bag.dags.items():
        sdag = DagSerialization.from_dict(DagSerialization.to_dict(dag))
        timetable = getattr(sdag.timetable, "timetable", sdag.timetable)  # inside asset-or-cron
        row = {"type": type(sdag.timetable).__name__, "cron": type(timetable).__name__}
        expression = getattr(timetable, "_expression", None)
        if expression:
            last = DagRunInfo.interval(long_ago, long_ago)
            first = sdag.next_dagrun_info(last_automated_run_info=None)
            after_stop = sdag.next_dagrun_info(last_automated_run_info=last)
            stock = CronTriggerTimetable(expression, timezone="UTC")
            free = TimeRestriction(sdag.start_date, None, False)
            row.update(
                expression=expression,
                first=first.run_after.isoformat(),
                after_stop=after_stop.run_after.isoformat(),
                # the reference: Airflow's own first tick at or after now
                next_tick=stock.next_dagrun_info(
                    last_automated_data_interval=None,
                    restriction=TimeRestriction(now, None, True),
                ).run_after.isoformat(),
                stock_first=stock.next_dagrun_info(
                    last_automated_data_interval=None, restriction=free
                ).run_after.isoformat(),
            )
        out[dag_id] = row
    print(json.dumps(out))
    """
)


def _next_runs(home: Path, **env: str) -> dict:
    return airflow_script(NEXT_RUNS, str(ROOT / "dags"), home=home, extra_env=env)


@pytest.fixture(scope="module")
def schedules_on(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _next_runs(tmp_path_factory.mktemp("on"))


def test_no_cron_dag_runs_a_tick_from_before_the_scheduler_looked(schedules_on: dict) -> None:
    assert schedules_on["errors"] == {}
    now = schedules_on["now"]
    crons = {k: v for k, v in schedules_on.items() if isinstance(v, dict) and "expression" in v}
    assert sorted(crons) == ["drift_monitor", "landing", "retrain", "tune"]
    for dag_id, row in crons.items():
        assert row["cron"] == "NoCatchUpCron", dag_id
        # the stock timetable would start a run for the latest past tick right away
        assert row["stock_first"] < now, (dag_id, row)
        # ours: the first tick at or after now, first parse or after a 400-day stop
        assert row["first"] == row["next_tick"], (dag_id, row)
        assert row["after_stop"] == row["next_tick"], (dag_id, row)
        assert row["first"] >= now, (dag_id, row)


def test_cron_schedules_off_leaves_the_asset_triggers(tmp_path: Path) -> None:
    """What ``./run ui`` parses without ``--schedules``: the assets still trigger
    drift_monitor, retrain and canary_review; no DAG has a cron."""
    off = _next_runs(tmp_path, COSINE_RETRAIN_CRON_SCHEDULES="false")
    assert off["errors"] == {}
    assert off["drift_monitor"]["type"] == "AssetTriggeredTimetable"
    assert off["retrain"]["type"] == "AssetTriggeredTimetable"
    assert off["canary_review"]["type"] == "AssetTriggeredTimetable"
    assert off["tune"]["type"] == "NullTimetable"
    assert off["landing"]["type"] == "NullTimetable"  # the landing zone: when triggered
    assert off["ingest"]["type"] == "NullTimetable"
    assert not any("expression" in v for v in off.values() if isinstance(v, dict))
