"""The tuner on a data set that is not flights (loans, 4 labelled
monthly batches): a study whose trials are nested MLflow runs on a real server, the
versioned config and its held-out verdict, pruning at cycle ends, the dollar budget,
bad settings refused before any trial, and a SIGKILLed study resumed."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.base.config import ConfigError, load_config
from pipeline.base.sections import TuneConfig
from pipeline.flow import Plan, Window
from pipeline.flow.retrain import train_config
from pipeline.flow.tuning import export_batches, judge, tune
from pipeline.steps.tuning.configs import (
    file_sha256,
    read_verdict,
    train_config_path,
    tuned_versions,
    write_version,
)
from pipeline.steps.tuning.space import TuneError, check_space
from pipeline.steps.tuning.study import run_study
from tests.pipeline.flow.tuning_support import (
    SPACE,
    SPACE_WITHOUT_START,
    make_env,
    study_inputs,
    write_train_yaml,
)
from tests.support import start_until_paused
from training import api
from training.results import TrainResult
from training.schedule import CosineSchedule

ROOT = Path(__file__).resolve().parents[3]


def _best(run_dir: Path) -> float:
    return max(c.val_auc for c in TrainResult.load(run_dir).finals)


def test_a_study_nests_its_trials_in_mlflow_and_writes_a_judged_version(
    mlflow_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    env = make_env(
        tmp_path,
        monkeypatch,
        tracking_uri=mlflow_server.url,
        n_trials=3,
        startup_trials=3,
        space=SPACE_WITHOUT_START,  # no incumbent: a tuned version is written and judged
        judge_seeds=2,
    )
    summary = tune(env)
    study = summary.study
    assert summary.window == ["2024-01", "2024-02"]
    assert summary.holdout == ["2024-03", "2024-04"]
    assert [t.state for t in study.trials] == ["COMPLETE"] * 3
    assert study.stop_reason == "3 of tune.n_trials=3 trials finished"

    # every trial is a FINISHED MLflow run nested under the study's run
    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name(f"{env.experiment}-tuning")
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{study.mlflow_run_id}'"
    )
    trials = {r.data.tags["tune.trial"]: r for r in runs if "tune.trial" in r.data.tags}
    assert sorted(trials) == ["0", "1", "2"]
    assert {r.info.status for r in trials.values()} == {"FINISHED"}
    judges = sorted(
        (r.data.tags["tune.judge"], r.data.tags["tune.seed"])
        for r in runs
        if "tune.judge" in r.data.tags
    )
    assert judges == [("current", "0"), ("current", "1"), ("tuned", "0"), ("tuned", "1")]
    # the trials' values, from their own result files (not from the study's storage)
    out = env.home / "runs" / "tuning"
    values = {t.number: _best(out / str(t.run_name)) for t in study.trials}
    steps = {t.number: TrainResult.load(out / str(t.run_name)).steps_done for t in study.trials}
    # the pick: the fewest steps (one batch size) within tune.adopt_max_loss of the
    # highest, cheapest first, that holds on a second seed beside the highest; else the
    # highest (each check's gains from the runs' own result files)
    near = [n for n, v in values.items() if v >= max(values.values()) - 0.003]
    near.sort(key=lambda n: (steps[n], -values[n]))
    top = max(values, key=lambda n: values[n])
    names = {t.number: str(t.run_name) for t in study.trials}
    assert [c.trial for c in study.checks] == near[: len(study.checks)]
    for c in study.checks:
        second = _best(out / f"{names[c.trial]}-seed1") - _best(out / f"{names[top]}-seed1")
        assert c.gains == pytest.approx([values[c.trial] - values[top], second], abs=1e-12)
    pick = next((c.trial for c in study.checks if c.confirmed), top)
    assert study.best_trial == pick
    assert study.best_value == pytest.approx(values[pick], abs=1e-12)
    runs_paid = [out / names[n] for n in names] + sorted(out.glob("*-seed1"))
    assert len(runs_paid) == 3 + (len(study.checks) + 1 if study.checks else 0)
    assert study.spent_usd == pytest.approx(
        sum(TrainResult.load(r).cost_usd for r in runs_paid), abs=1e-5
    )
    # the study's plots and record on its parent run
    parent = client.get_run(study.mlflow_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_complete"] == 3
    names = {a.path for a in client.list_artifacts(study.mlflow_run_id, "tuning")}
    assert names == {"tuning/history.png", "tuning/importances.png", "tuning/study.json"}

    # the versioned config: the start config with the best trial's values
    assert summary.version == 1
    assert tuned_versions(env.store, env.dataset) == [1]
    local = tmp_path / "v1.yaml"
    env.store.get_file("tuning/loans/v1.yaml", local)
    tuned = api.load_config(local)
    for key, value in study.best_params.items():
        section, name = key.split(".")
        assert getattr(getattr(tuned, section), name) == pytest.approx(value)
    assert tuned.model.hidden == [16]  # the rest is the start config's

    # the verdict, recomputed from the held-out runs' result files (seeds 0 and 1, paired)
    verdict = read_verdict(env.store, env.dataset, 1)
    assert verdict is not None
    assert summary.verdict is not None
    expected = _reference_verdict(out, "loans", 1, [0, 1], env.config.tune)
    assert verdict.seeds == [0, 1]
    assert verdict.gains == pytest.approx(expected["gains"], abs=1e-12)
    assert (verdict.gain_low, verdict.gain_high) == pytest.approx(expected["interval"])
    assert verdict.adopted is expected["adopted"] is summary.verdict.adopted
    assert "tune.verdict" in parent.data.tags

    # run again: nothing is trained twice, the same answer comes back
    again = tune(env)
    assert again.version == 1
    assert again.verdict == summary.verdict
    assert [t.number for t in again.study.trials] == [0, 1, 2]


def _reference_verdict(
    out: Path, dataset: str, version: int, seeds: list[int], t: TuneConfig
) -> dict[str, Any]:
    """The paired-seed verdict from the runs' result files: per-seed gains, their
    Student-t interval (scipy, from the gains' mean and sample spread), the rule."""
    import statistics

    from scipy import stats

    def runs(which: str) -> list[TrainResult]:
        return [TrainResult.load(out / f"judge-{dataset}-v{version}-{which}-s{s}") for s in seeds]

    tuned, current = runs("tuned"), runs("current")
    gains = [
        max(c.val_auc for c in a.finals) - max(c.val_auc for c in b.finals)
        for a, b in zip(tuned, current, strict=True)
    ]
    n = len(gains)
    sem = statistics.stdev(gains) / n**0.5
    low, high = stats.t.interval(t.adopt_confidence, n - 1, statistics.fmean(gains), sem)
    # rows trained: both sides share the start config's batch size
    saving = 1 - sum(r.steps_done for r in tuned) / sum(r.steps_done for r in current)
    better = low > t.adopt_min_gain
    cheaper = saving >= t.adopt_min_saving and low >= -t.adopt_max_loss
    return {"gains": gains, "interval": (low, high), "adopted": bool(better or cheaper)}


def _plan_window(tmp_path: Path) -> tuple[Plan, Window]:
    plan = Plan(trigger="manual", reasons=[], window=["2024-04"], skip=False, reason="t")
    plan = plan.model_copy(update={"run_name": "retrain-x"})
    f, lab = tmp_path / "f.parquet", tmp_path / "l.parquet"
    return plan, Window(features=str(f), labels=str(lab), rows=1)


def test_the_tuned_config_is_adopted_only_when_it_wins_on_the_held_out_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the shipped stand-in barely learns (peak 1e-6); a tuned 0.02 does
    env = make_env(tmp_path, monkeypatch, shipped_lr=1e-6)
    shipped = tmp_path / "train.yaml"
    holdout = export_batches(env, ["2024-03", "2024-04"], "holdout")
    plan, window = _plan_window(tmp_path)
    assert train_config(env, plan, window).schedule.lr_max == 1e-6

    def version(lr: float) -> tuple[int, Path]:
        path = write_train_yaml(tmp_path / f"tuned-{lr}.yaml", lr)
        meta = {
            "study": "s",
            "trial": 0,
            "value": 0.0,
            "params": {"schedule.lr_max": lr},
            "window": ["2024-01", "2024-02"],
            "base_config": str(shipped),
            "base_sha256": file_sha256(shipped),
            "created_at": "now",
        }
        return write_version(env.store, env.dataset, path.read_text(), meta), path

    def verdict(v: int, current: Path, tuned: Path) -> Any:
        return judge(
            env,
            version=v,
            current=current,
            tuned=tuned,
            holdout_updates={**holdout, "mlflow.enabled": False},
            holdout=["2024-03", "2024-04"],
            parent=None,
            experiment="x",
        )

    good, good_path = version(0.02)
    won = verdict(good, shipped, good_path)
    out = env.home / "runs" / "tuning"
    seeds = [0, 1, 2]  # tune.judge_seeds' default, from the start config's seed 0
    assert won.seeds == seeds
    for which, mean in (("tuned", won.tuned_auc), ("current", won.current_auc)):
        runs = [out / f"judge-loans-v{good}-{which}-s{s}" for s in seeds]
        assert mean == pytest.approx(sum(_best(r) for r in runs) / 3, abs=1e-12)
    expected = _reference_verdict(out, "loans", good, seeds, env.config.tune)
    assert (won.gain_low, won.gain_high) == pytest.approx(expected["interval"])
    assert won.gain_low is not None
    assert won.gain_low > 0.05
    assert won.adopted is expected["adopted"] is True
    assert won.basis == "better"
    assert f"interval [{won.gain_low:+.4f}, {won.gain_high:+.4f}]" in won.reason
    used = train_config(env, plan, window)
    assert used.schedule.lr_max == 0.02  # later retrains start from the tuned version
    assert used.run_name == "retrain-x"
    assert used.data.features == window.features
    # the GPU pod mounts the shipped file: the tuned values travel as --set arguments
    from pipeline.flow.retrain import pod_command

    remote = window.model_copy(update={"features_uri": "s3://b/f", "labels_uri": "s3://b/l"})
    args = pod_command(env, plan, remote).arguments
    assert args[args.index("schedule.lr_max=0.02") - 1] == "--set"

    bad, bad_path = version(1e-6)  # loses to the adopted v1 on the held-out window
    lost = verdict(bad, train_config_path(env.store, env.dataset, shipped, env.home), bad_path)
    assert not lost.adopted
    assert lost.current == f"v{good}"
    assert "not adopted" in lost.reason
    assert train_config(env, plan, window).schedule.lr_max == 0.02
    assert [read_verdict(env.store, env.dataset, v).adopted for v in (good, bad)] == [True, False]

    # a changed shipped file is not what v1 was tuned from: the file itself is used again
    write_train_yaml(shipped, 0.005)
    assert train_config(env, plan, window).schedule.lr_max == 0.005


def test_a_trial_whose_cycle_is_bad_is_pruned_at_the_cycle_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, updates = study_inputs(tmp_path, monkeypatch)
    # no cycle of these models reaches 0.99: each trial is pruned when its cycle 0 closes
    settings = TuneConfig(space=SPACE, n_trials=2, prune_below=0.99)
    out = tmp_path / "runs"
    summary = run_study(
        settings,
        base,
        storage=f"sqlite:///{tmp_path / 's.db'}",
        name="prune",
        output_dir=out,
        train_updates=updates,
    )
    assert [(t.state, t.pruned_at_cycle) for t in summary.trials] == [("PRUNED", 0)] * 2
    for t in summary.trials:
        result = TrainResult.load(out / str(t.run_name))
        assert result.status == "pruned"
        assert [c.cycle for c in result.finals] == [0]
        # it stopped at cycle 0's end, as the trial's own schedule places it
        first_cycle_end = CosineSchedule(**result.schedule).cycle_end_step(0)
        assert result.steps_done == t.steps == first_cycle_end + 1
        assert result.steps_done < result.total_steps


def test_the_dollar_budget_stops_the_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, updates = study_inputs(tmp_path, monkeypatch)
    # a budget below any trial's cost: the first trial runs (nothing is known before
    # it), the second would pass the budget at the first one's price
    settings = TuneConfig(space=SPACE, n_trials=5, budget_usd=1e-9)
    summary = run_study(
        settings,
        base,
        storage=f"sqlite:///{tmp_path / 's.db'}",
        name="budget",
        output_dir=tmp_path / "runs",
        train_updates=updates,
    )
    assert len(summary.trials) == 1
    cost = TrainResult.load(tmp_path / "runs" / str(summary.trials[0].run_name)).cost_usd
    assert summary.spent_usd == pytest.approx(cost, abs=1e-6)
    assert cost > 1e-9
    assert summary.stop_reason.startswith("budget: ")
    assert "tune.budget_usd=$1e-09" in summary.stop_reason


@pytest.mark.parametrize(
    ("tune_settings", "message"),
    [
        ({"space": {}}, "tune.space is empty"),
        (
            {"space": {"schedule.lr_max": {"low": 0.1, "high": 0.01}}},
            "tune.space.schedule.lr_max: low 0.1 is above high 0.01",
        ),
        ({"n_trials": 0}, "tune.n_trials: Input should be greater than or equal to 1"),
        ({"budget_usd": -1}, "tune.budget_usd: Input should be greater than 0"),
        (
            {"space": {"schedule.lr_min": {"low": 1e-5, "high": 1e-4}}},
            "tune.space.schedule.lr_min: unknown parameter",
        ),
        (
            {"space": {"optim.batch_size": {"low": 100.5, "high": 512}}},
            "tune.space.optim.batch_size: an integer field; give whole-number bounds",
        ),
        ({"pruner": "median"}, "tune.pruner: Input should be 'halving', 'hyperband' or 'off'"),
    ],
)
def test_bad_tuning_settings_are_one_clear_error(tune_settings: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tune=tune_settings)
    assert message in str(info.value)
    assert str(info.value).count("\n") == 1  # the header and one line: one error


def test_a_space_the_schedule_cannot_run_fails_before_any_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.apps.cli import main

    space = {**SPACE, "schedule.warmup_epochs": {"low": 0.5, "high": 1.5}}
    env = make_env(tmp_path, monkeypatch, space=space)
    with pytest.raises(
        TuneError, match=r"schedule\.warmup_epochs 1\.5 >= schedule\.cycle_epochs 1"
    ):
        check_space(env.config.tune, api.load_config(tmp_path / "train.yaml"))
    # through the command: exit 2, one error line, no study and no training run
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump(json.loads(env.config.model_dump_json())))
    assert main(["tune", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: tune.space: ")
    assert not (env.home / "tuning.db").exists()
    assert not (env.home / "runs").exists()


KILLED_STUDY = """
import json, sys
from pathlib import Path
from pipeline.base.sections import TuneConfig
from pipeline.steps.tuning.study import run_study
from training import api
a = json.loads(sys.argv[1])
run_study(TuneConfig.model_validate(a["tune"]), api.load_config(a["config"]),
          storage=a["storage"], name="killed", output_dir=Path(a["out"]),
          train_updates=a["updates"])
"""


def test_a_study_killed_mid_trial_resumes_without_losing_or_repeating_a_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna

    base, updates = study_inputs(tmp_path, monkeypatch)
    storage, out = f"sqlite:///{tmp_path / 's.db'}", tmp_path / "runs"
    # heartbeats every second: the killed trial is stale 3 s after its last one
    settings = TuneConfig(space=SPACE, n_trials=3, startup_trials=3, heartbeat_seconds=1)
    marker = tmp_path / "paused.jsonl"
    args = {
        "tune": settings.model_dump(),
        "config": str(tmp_path / "train.yaml"),
        "storage": storage,
        "out": str(out),
        "updates": updates,
    }
    # the 16th evaluation of the process pauses (a trial has 8-12): mid-trial, not the first
    proc = start_until_paused(
        [sys.executable, "-c", KILLED_STUDY, json.dumps(args)],
        marker,
        "evaluation@16:300",
        timeout=240,
        poll=0.2,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        start_new_session=True,
    )
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    before = optuna.load_study(study_name="killed", storage=storage).get_trials()
    states = [t.state.name for t in before]
    assert states[-1] == "RUNNING"
    assert set(states[:-1]) == {"COMPLETE"}
    assert len(states) >= 2
    killed = before[-1]
    kept = {t.number: (t.params, t.value) for t in before[:-1]}
    assert (out / killed.user_attrs["run_name"] / "checkpoints" / "last.ckpt").exists()

    # within the grace period the trial may still belong to a live process: left alone
    import time

    from pipeline.steps.tuning.study import _open_storage

    rdb = _open_storage(settings, storage)
    study = optuna.load_study(study_name="killed", storage=rdb)
    optuna.storages.fail_stale_trials(study)
    assert study.get_trials()[-1].state.name == "RUNNING"
    time.sleep(3 * settings.heartbeat_seconds + 1)  # then its heartbeat is stale

    summary = run_study(
        settings, base, storage=storage, name="killed", output_dir=out, train_updates=updates
    )
    after = {t.number: t for t in summary.trials}
    assert after[killed.number].state == "FAIL"  # left RUNNING by the kill, stale
    assert after[killed.number].fail_reason == "stopped while running: queued again"
    complete = [t for t in summary.trials if t.state == "COMPLETE"]
    assert len(complete) == 3  # n_trials finished: none lost
    for number, (params, value) in kept.items():  # the finished ones kept, not re-run
        assert (after[number].params, after[number].value) == (params, value)
    # the killed trial's values were queued again and its run resumed from its checkpoint
    retry = next(t for t in complete if t.number not in kept)
    assert retry.params == killed.params
    assert retry.run_name == killed.user_attrs["run_name"]
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == 3  # none repeated
    resumed = TrainResult.load(out / str(retry.run_name))
    assert resumed.status == "completed"
    assert resumed.steps_done == resumed.total_steps


def test_a_study_in_postgresql_continues_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support import (
        create_postgres_database,
        drop_postgres_database,
        postgres_unavailable,
    )

    why = postgres_unavailable()
    if why:
        pytest.skip(why)
    base, updates = study_inputs(tmp_path, monkeypatch)
    name, url = create_postgres_database("tuning")
    try:
        kwargs = {"storage": url, "name": "pg", "output_dir": tmp_path / "runs"}
        first = run_study(
            TuneConfig(space=SPACE, n_trials=1), base, train_updates=updates, **kwargs
        )
        second = run_study(
            TuneConfig(space=SPACE, n_trials=2), base, train_updates=updates, **kwargs
        )
    finally:
        drop_postgres_database(name)
    assert [t.state for t in first.trials] == ["COMPLETE"]
    assert [t.number for t in second.trials] == [0, 1]
    assert second.trials[0] == first.trials[0]  # kept, not re-run
    assert second.trials[1].params != first.trials[0].params


def test_the_tune_command_runs_a_study_and_prints_its_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.apps.cli import main

    env = make_env(
        tmp_path, monkeypatch, startup_trials=1, space=SPACE_WITHOUT_START, judge_seeds=1
    )
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump(json.loads(env.config.model_dump_json())))
    argv = ["tune", "--config", str(cfg), "--trials", "1", "--window", "2024-02"]
    assert main([*argv, "--holdout", "2024-04", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["window"] == ["2024-02"]
    assert out["holdout"] == ["2024-04"]
    assert [t["state"] for t in out["study"]["trials"]] == ["COMPLETE"]
    assert out["version"] == 1
    verdict = read_verdict(env.store, env.dataset, 1)
    assert verdict is not None
    assert out["verdict"]["adopted"] is verdict.adopted
    # the text form of the same (finished) study: nothing runs again
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "1 of tune.n_trials=1 trials finished" in text
    assert f"tuned v1: {verdict.reason}" in text
    # a batch without labels is one error line, exit 2
    assert main(["tune", "--config", str(cfg), "--window", "2030-01"]) == 2
    assert capsys.readouterr().err.startswith("error: batches ['2030-01'] have no labels")


def test_the_start_config_is_trial_zero_only_when_the_space_holds_it(tmp_path: Path) -> None:
    from pipeline.steps.tuning.study import start_values

    base = api.load_config(write_train_yaml(tmp_path / "t.yaml", 0.01))
    assert start_values(TuneConfig(space=SPACE), base) is not None
    narrow = {**SPACE, "schedule.lr_max": {"low": 0.02, "high": 0.05}}  # 0.01 is outside
    assert start_values(TuneConfig(space=narrow), base) is None


def test_when_the_start_config_stays_best_no_version_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.apps.cli import main

    env = make_env(tmp_path, monkeypatch)
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump(json.loads(env.config.model_dump_json())))
    # one trial: the incumbent alone, so it is the best by construction
    assert main(["tune", "--config", str(cfg), "--trials", "1"]) == 0
    text = capsys.readouterr().out
    assert "the start config (trial 0) stayed the best: no tuned config" in text
    assert tuned_versions(env.store, env.dataset) == []
    assert not (env.home / "runs" / "tuning" / "judge-loans-v1-current").exists()
    # that trial is the start config itself (tuning_support.TRAIN_YAML, defaults elsewhere)
    import optuna

    study = optuna.load_study(
        study_name="loans-tune-2024-01-2024-02", storage=f"sqlite:///{env.home / 'tuning.db'}"
    )
    assert study.trials[0].params == {
        "schedule.lr_max": 0.01,
        "schedule.cycle_epochs": 1.0,
        "schedule.cycle_mult": 1.5,
        "schedule.peak_decay": 0.8,
        "optim.weight_decay": 1e-4,
        "schedule.warmup_epochs": 0.2,
    }


def test_a_trial_preempted_by_sigterm_stops_the_study_and_resumes_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna

    from pipeline.steps.tuning import study as tuning_study
    from pipeline.steps.tuning.study import TuneInterrupted

    base, updates = study_inputs(tmp_path, monkeypatch)
    kwargs = {"storage": f"sqlite:///{tmp_path / 's.db'}", "name": "term", "output_dir": tmp_path}
    settings = TuneConfig(space=SPACE_WITHOUT_START, n_trials=1)
    original = tuning_study.CyclePruner.__call__

    def preempt_at_cycle_end(self: Any, event: Any) -> bool:  # the node is being drained
        os.kill(os.getpid(), signal.SIGTERM)  # the trainer's handler: checkpoint, stop
        return original(self, event)

    with monkeypatch.context() as m:
        m.setattr(tuning_study.CyclePruner, "__call__", preempt_at_cycle_end)
        with pytest.raises(TuneInterrupted, match="trial 0 stopped by SIGTERM"):
            run_study(settings, base, train_updates=updates, **kwargs)
    trials = optuna.load_study(study_name="term", storage=kwargs["storage"]).get_trials()
    # not told a partial value: FAIL, and its values queued again at once (no grace wait)
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    assert trials[1].params == trials[0].params
    stopped = TrainResult.load(tmp_path / trials[0].user_attrs["run_name"])
    assert stopped.status == "preempted"
    assert stopped.steps_done < stopped.total_steps

    summary = run_study(settings, base, train_updates=updates, **kwargs)
    assert [t.state for t in summary.trials] == ["FAIL", "COMPLETE"]
    assert summary.trials[1].params == summary.trials[0].params
    done = TrainResult.load(tmp_path / str(summary.trials[1].run_name))
    assert done.status == "completed"
    assert done.steps_done == done.total_steps
    assert summary.trials[1].value == max(c.val_auc for c in done.finals)
