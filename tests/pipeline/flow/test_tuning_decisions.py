"""The tuner's decisions on the loans batches (not flights): successive halving at cycle
ends on an epoch scale with the running best, a hard dollar budget that each trial
carries, a diverging trial failed with its reason while the study goes on, and a
study per tuning window. Each value is recomputed from the trials' own result files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.base.sections import TuneConfig
from pipeline.flow.tuning import export_batches, tune
from pipeline.steps.tuning.study import run_study
from tests.pipeline.flow.tuning_support import SPACE, make_env, study_inputs
from training.results import TrainResult
from training.schedule import CosineSchedule

# the start config's values (tuning_support.TRAIN_YAML) with a learning peak...
GOOD = {
    "schedule.lr_max": 0.02,
    "schedule.cycle_epochs": 1.0,
    "schedule.cycle_mult": 1.5,
    "schedule.peak_decay": 0.8,
    "optim.weight_decay": 1e-4,
    "schedule.warmup_epochs": 0.2,
}
# ...and with one at which the model barely moves (above the start config's lr_min 2e-5)
BAD = {**GOOD, "schedule.lr_max": 5e-5}
WIDE = {**SPACE, "schedule.lr_max": {"low": 5e-5, "high": 3e-2, "log": True}}


def _queue(storage: str, name: str, *values: dict[str, float]) -> Any:
    import optuna

    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    for v in values:
        study.enqueue_trial(v)
    return study


def _good_bad_bad(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, extra: dict[str, Any] | None = None
) -> tuple[Any, str, Path]:
    """A halving study of three queued trials (GOOD, BAD, BAD with a longer first cycle),
    one startup trial so the pruner acts from the second on; ``extra`` on the training
    config. Returns the summary, the storage URL and the runs' folder."""
    base, updates = study_inputs(tmp_path, monkeypatch)
    storage, out = f"sqlite:///{tmp_path / 's.db'}", tmp_path / "runs"
    _queue(storage, name, GOOD, BAD, BAD | {"schedule.cycle_epochs": 1.5})
    settings = TuneConfig(space=WIDE, n_trials=3, startup_trials=1)  # pruner: halving
    summary = run_study(
        settings,
        base,
        storage=storage,
        name=name,
        output_dir=out,
        train_updates=updates | (extra or {}),
    )
    return summary, storage, out


def _reference_reports(result: TrainResult) -> dict[int, float]:
    """What the trial should have reported: at each closed cycle's end, the best val AUC
    of all its cycles so far, at the hundredths of an epoch it had run."""
    schedule = CosineSchedule(**result.schedule)
    spe = result.schedule["steps_per_epoch"]
    out, best = {}, -1.0
    for c in result.finals:
        best = max(best, c.val_auc)
        out[round(100 * (schedule.cycle_end_step(c.cycle) + 1) / spe)] = best
    return out


def test_successive_halving_prunes_at_an_epoch_rung_on_the_running_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna

    summary, storage, out = _good_bad_bad(tmp_path, monkeypatch, "sha")
    assert [t.state for t in summary.trials] == ["COMPLETE", "PRUNED", "PRUNED"]
    assert [t.stopped_by for t in summary.trials[1:]] == ["pruner", "pruner"]
    # the first rung: the shortest warmup plus first cycle the space holds, in epochs
    rung = round(
        100 * (SPACE["schedule.warmup_epochs"]["low"] + SPACE["schedule.cycle_epochs"]["low"])
    )
    stored = optuna.load_study(study_name="sha", storage=storage).get_trials()
    for t, frozen in zip(summary.trials, stored, strict=True):
        result = TrainResult.load(out / str(t.run_name))
        reports = _reference_reports(result)
        assert frozen.intermediate_values == pytest.approx(reports, abs=1e-12)
        if t.state == "PRUNED":
            # stopped at its first cycle end at or past the rung, before its last cycle
            first = min(step for step in reports if step >= rung)
            schedule = CosineSchedule(**result.schedule)
            cycle = next(
                c.cycle
                for c in result.finals
                if round(100 * (schedule.cycle_end_step(c.cycle) + 1) / schedule.steps_per_epoch)
                == first
            )
            assert t.pruned_at_cycle == cycle
            assert result.status == "pruned"
            assert result.steps_done == schedule.cycle_end_step(cycle) + 1 < result.total_steps
            # it lost to the complete trial at that rung
            good = stored[0].intermediate_values
            assert reports[first] < good[min(s for s in good if s >= rung)]
    assert summary.best_trial == 0


def test_the_first_rung_is_every_trials_first_cycle_end() -> None:
    """The shipped space on the shipped flights config: the first rung is the shortest
    warmup plus first cycle (1 epoch), so every trial meets it at its first cycle end,
    before cycle-aware stopping first decides (at the second). It was the longest
    (4.75 epochs), met by no first cycle end but the longest: halving pruned 0 of 20
    flights trials (docs/benchmarks.md, Reading the two runs)."""
    from pipeline.steps.tuning.space import prune_warmup_epochs
    from training import api

    base = api.load_config("configs/flights.yaml")
    tune = TuneConfig()
    rung = prune_warmup_epochs(tune, base)
    space = tune.space
    shortest = space["schedule.warmup_epochs"].low + space["schedule.cycle_epochs"].low
    assert rung == shortest == 1.0
    longest = space["schedule.warmup_epochs"].high + space["schedule.cycle_epochs"].high
    assert rung < longest
    assert prune_warmup_epochs(TuneConfig(prune_warmup_epochs=2.5), base) == 2.5


def test_halving_prunes_at_the_first_cycle_end_with_cycle_aware_stopping_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopping on, as production tunes: here every trial stops after its second cycle
    (no cycle can win by 0.5). A first rung past the first cycle ends is met only there,
    where the stopping rule has ended the run: nothing was ever pruned. At the first
    cycle end the losing trials are cut, their second cycle not run."""
    summary, _, out = _good_bad_bad(
        tmp_path, monkeypatch, "stop", {"stopping.enabled": True, "stopping.min_delta": 0.5}
    )
    assert [t.state for t in summary.trials] == ["COMPLETE", "PRUNED", "PRUNED"]
    good = TrainResult.load(out / str(summary.trials[0].run_name))
    schedule = CosineSchedule(**good.schedule)
    assert len(good.finals) == 2  # of 3: the stopping rule's end
    assert good.steps_done == schedule.cycle_end_step(1) + 1 < good.total_steps
    for t in summary.trials[1:]:
        result = TrainResult.load(out / str(t.run_name))
        schedule = CosineSchedule(**result.schedule)
        assert (t.stopped_by, t.pruned_at_cycle, result.status) == ("pruner", 0, "pruned")
        assert result.steps_done == schedule.cycle_end_step(0) + 1
        assert t.cycles == [(result.steps_done, result.finals[0].val_auc)]


def test_each_trial_runs_with_what_is_left_of_the_budget_and_stops_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, updates = study_inputs(tmp_path, monkeypatch)
    kwargs = {"storage": f"sqlite:///{tmp_path / 's.db'}", "name": "b", "output_dir": tmp_path}
    first = run_study(TuneConfig(space=SPACE, n_trials=1), base, train_updates=updates, **kwargs)
    c0 = TrainResult.load(tmp_path / str(first.trials[0].run_name)).cost_usd
    budget = 1.3 * c0  # a second whole trial would pass it: it gets 0.3 * c0 and stops
    settings = TuneConfig(space=SPACE, n_trials=5, budget_usd=budget, pruner="off")
    summary = run_study(settings, base, train_updates=updates, **kwargs)
    assert len(summary.trials) == 2
    second = summary.trials[1]
    run = tmp_path / str(second.run_name)
    result = TrainResult.load(run)
    given = json.loads((run / "config.resolved.json").read_text())["cost"]["budget_usd"]
    assert given == pytest.approx(budget - c0, rel=1e-6)
    assert result.status == "budget_exhausted"
    assert result.steps_done < result.total_steps
    # it ran until its own meter reached what was left (result costs are rounded to 1e-6)
    assert result.cost_usd >= given - 1e-6
    assert (second.state, second.stopped_by) == ("PRUNED", "budget")
    assert summary.spent_usd == pytest.approx(c0 + result.cost_usd, abs=1e-6)
    assert summary.stop_reason.startswith("budget: ")

    # a budget below one trial: the first trial itself stops at its first budget check
    tiny = TuneConfig(space=SPACE, n_trials=5, budget_usd=1e-9)
    alone = run_study(tiny, base, train_updates=updates, **{**kwargs, "name": "tiny"})
    assert len(alone.trials) == 1
    stopped = TrainResult.load(tmp_path / str(alone.trials[0].run_name))
    assert stopped.status == "budget_exhausted"
    assert stopped.steps_done <= base.eval.every_steps < stopped.total_steps


def test_a_diverging_trial_fails_with_its_reason_and_the_study_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, updates = study_inputs(tmp_path, monkeypatch)
    # every step above lr 0.015 has a NaN loss; one is enough and no rollback is allowed
    updates |= {
        "fault_injection.nan_above_lr": 0.015,
        "nan_guard.max_consecutive": 1,
        "nan_guard.max_rollbacks": 0,
    }
    storage = f"sqlite:///{tmp_path / 's.db'}"
    kwargs = {"storage": storage, "name": "nan", "output_dir": tmp_path / "runs"}
    high = {**GOOD, "schedule.lr_max": 0.025}
    low = {**GOOD, "schedule.lr_max": 0.005}
    _queue(storage, "nan", high, low)
    summary = run_study(TuneConfig(space=SPACE, n_trials=2), base, train_updates=updates, **kwargs)
    assert [t.state for t in summary.trials] == ["FAIL", "COMPLETE"]
    assert summary.trials[0].fail_reason is not None
    assert summary.trials[0].fail_reason.startswith("diverged: ")
    assert summary.stop_reason == "2 of tune.n_trials=2 trials finished"  # the FAIL counts
    assert summary.best_trial == 1
    # run again with one trial more: the failed values are not tried again
    again = run_study(TuneConfig(space=SPACE, n_trials=3), base, train_updates=updates, **kwargs)
    assert len(again.trials) == 3
    assert again.trials[:2] == summary.trials
    assert again.trials[2].params != summary.trials[0].params


def test_a_reused_study_name_keeps_a_study_per_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna

    env = make_env(tmp_path, monkeypatch, study_name="fixed")
    first = tune(env, window=["2024-01"], holdout=["2024-04"], n_trials=1)
    second = tune(env, window=["2024-02"], holdout=["2024-04"], n_trials=1)
    assert (first.study.study, second.study.study) == (
        "fixed-2024-01-2024-01",
        "fixed-2024-02-2024-02",
    )
    storage = f"sqlite:///{env.home / 'tuning.db'}"
    studies = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage)}
    assert studies == {"fixed-2024-01-2024-01": 1, "fixed-2024-02-2024-02": 1}
    # each trial trained its own window: the runs' data differ
    runs = env.home / "runs" / "tuning"
    data = [TrainResult.load(runs / str(s.study.trials[0].run_name)).data for s in (first, second)]
    assert data[0] != data[1]


def test_the_hook_reports_the_running_best_and_never_prunes_the_last_cycle() -> None:
    import optuna

    from pipeline.steps.tuning.space import CyclePruner
    from training.results import CycleBest, CycleEndEvent

    # a floor no value reaches: Optuna's threshold pruner says "prune" at every report
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.99)
    )

    def event(cycle: int, auc: float, end: int, total: int) -> CycleEndEvent:
        best = CycleBest(cycle, end, 0.01, auc, 0.5, f"best-{cycle}.ckpt", "")
        return CycleEndEvent("r", best, end, 0.0, steps_per_epoch=8, total_steps=total)

    hook = CyclePruner(study.ask())
    # cycle 0 ends after 12 steps (1.5 epochs), cycle 1 after 30 (3.75), the last after 60
    assert hook(event(0, 0.70, 11, 60)) is True  # pruned: the run can still save steps
    assert hook.pruned_at == 0
    last = CyclePruner(study.ask())
    assert last(event(0, 0.70, 11, 60)) is True
    last.pruned_at = None
    assert last(event(1, 0.60, 29, 60)) is True
    last.pruned_at = None
    assert last(event(2, 0.65, 59, 60)) is False  # the last cycle end: nothing to save
    assert last.pruned_at is None
    # the running best (0.70 stays), at hundredths of an epoch: 12/8, 30/8, 60/8 epochs
    trial = study.get_trials(deepcopy=False)[-1]
    assert trial.intermediate_values == {150: 0.70, 375: 0.70, 750: 0.70}


def test_a_cheaper_config_no_worse_beyond_the_noise_is_adopted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start config with two cycles instead of three trains ~45 % fewer rows; its
    paired held-out gains (never above 0: its runs are the first two cycles of the
    current config's, same seeds) stay within adopt_max_loss: adopted as cheaper."""
    import statistics

    from scipy import stats

    from pipeline.flow.tuning import judge
    from pipeline.steps.tuning.configs import file_sha256, read_verdict, write_version

    env = make_env(tmp_path, monkeypatch, adopt_max_loss=0.2)
    shipped = tmp_path / "train.yaml"
    shorter = tmp_path / "two-cycles.yaml"
    shorter.write_text(shipped.read_text().replace("max_cycles: 3", "max_cycles: 2"))
    meta = {
        "study": "s",
        "trial": 0,
        "value": 0.0,
        "params": {"schedule.max_cycles": 2},
        "window": ["2024-01", "2024-02"],
        "base_config": str(shipped),
        "base_sha256": file_sha256(shipped),
        "created_at": "now",
    }
    version = write_version(env.store, env.dataset, shorter.read_text(), meta)
    holdout = {**export_batches(env, ["2024-03", "2024-04"], "h"), "mlflow.enabled": False}
    verdict = judge(
        env,
        version=version,
        current=shipped,
        tuned=shorter,
        holdout_updates=holdout,
        holdout=["2024-03", "2024-04"],
        parent=None,
        experiment="x",
    )
    out = env.home / "runs" / "tuning"

    def runs(which: str) -> list[TrainResult]:
        return [TrainResult.load(out / f"judge-loans-v{version}-{which}-s{s}") for s in (0, 1, 2)]

    tuned, current = runs("tuned"), runs("current")
    gains = [
        max(c.val_auc for c in a.finals) - max(c.val_auc for c in b.finals)
        for a, b in zip(tuned, current, strict=True)
    ]
    assert all(g <= 0 for g in gains)  # never better: what main's rule (gain > 0) refused
    sem = statistics.stdev(gains) / 3**0.5 if len(set(gains)) > 1 else 0.0
    low = statistics.fmean(gains) - float(stats.t.ppf(0.95, 2)) * sem
    saving = 1 - sum(r.steps_done for r in tuned) / sum(r.steps_done for r in current)
    assert saving > 0.2
    assert low >= -0.2, "precondition: within adopt_max_loss"
    assert verdict.gains == pytest.approx(gains, abs=1e-12)
    assert verdict.adopted
    assert verdict.basis == "cheaper"
    assert "adopted (cheaper" in verdict.reason
    assert read_verdict(env.store, env.dataset, version) == verdict


def test_the_best_trial_is_the_cheapest_within_the_noise_of_the_highest() -> None:
    """The study's pick: fewest rows trained (steps x batch size) among the trials no more
    than tune.adopt_max_loss below the highest val AUC; pruned and failed never count."""
    from pipeline.steps.tuning.pick import TrialSummary, ranked

    unmeasured = {"cost_usd": None, "run_name": None}

    def trial(n: int, value: float | None, steps: int, state: str = "COMPLETE", **params: float):
        fields = {"number": n, "state": state, "value": value, "params": params}
        return TrialSummary(steps=steps, **fields, **unmeasured)

    trials = [
        trial(0, 0.7186, 1132),  # the highest
        trial(1, 0.7161, 806),  # 0.0025 below: within 0.003, and the cheapest
        trial(2, 0.7150, 300),  # 0.0036 below: beyond the noise
        trial(3, 0.7190, 200, state="PRUNED"),  # pruned: no final value to trust
        trial(4, 0.7170, 500, **{"optim.batch_size": 2048}),  # 500 x 2048 rows > 806 x 512
    ]
    assert pick(trials, 0.003, 512) == (1, None)
    assert pick(trials, 0.0, 512) == (0, None)  # no tolerance: the highest AUC
    assert pick(trials, 0.01, 512) == (2, None)
    # equal rows: the higher AUC
    assert pick([trial(0, 0.70, 400), trial(1, 0.71, 400)], 0.05, 512) == (1, None)
    assert ranked([trial(0, None, 10, state="FAIL")], 0.003, 512) == []


def pick(trials: list[Any], *args: Any) -> tuple[int, int | None] | None:
    """The pick's trial and cycles: the first of :func:`ranked` (the cheapest within
    the tolerance of the highest)."""
    from pipeline.steps.tuning.pick import ranked

    found = ranked(trials, *args)
    return (found[0].trial.number, found[0].cycles) if found else None


def test_the_pick_measures_each_trials_shorter_configs_from_its_own_cycles() -> None:
    """With schedule.max_cycles searched, a trial's first k cycles are a config of their
    own (max_cycles k), measured by the trial's run: its steps and running best at the
    end of cycle k - 1. A pruned trial's closed cycles count too; a failed one's never."""
    from pipeline.steps.tuning.pick import TrialSummary, ranked

    def trial(n: int, cycles: list[tuple[int, float]], state: str = "COMPLETE") -> TrialSummary:
        value = cycles[-1][1] if state == "COMPLETE" else None
        params = {"schedule.max_cycles": 3, "schedule.lr_max": 0.003}
        return TrialSummary(
            number=n, state=state, value=value, params=params, steps=cycles[-1][0],
            cost_usd=None, run_name=None, cycles=cycles,
        )  # fmt: skip

    # flights-like: the first cycle holds each trial's best; the second cycle only costs
    trials = [
        trial(0, [(375, 0.7183), (825, 0.7183)]),  # stopped after its second cycle
        trial(1, [(300, 0.7100), (700, 0.7180), (1400, 0.7190)]),  # ran all three
        trial(2, [(200, 0.7175)], state="PRUNED"),  # cut at its first cycle end
        trial(3, [(100, 0.7300)], state="FAIL"),
    ]
    # max_cycles not searched: only trials as they ran (trial 0: 825 steps, within 0.003)
    assert pick(trials, 0.003, 512) == (0, None)
    # searched from 1 cycle: trial 2's one cycle (200 steps, 0.0015 below the highest)
    best = ranked(trials, 0.003, 512, 1)[0]
    assert (best.trial.number, best.cycles, best.steps, best.value) == (2, 1, 200, 0.7175)
    assert best.params == {"schedule.max_cycles": 1, "schedule.lr_max": 0.003}
    # from 2 cycles: trial 1's first two (700 steps) beat trial 0 as it ran (825)
    assert pick(trials, 0.003, 512, 2) == (1, 2)
    # a tighter tolerance: trial 1's three cycles as it ran (0.7190, the highest)
    assert pick(trials, 0.0005, 512, 1) == (1, None)
    # a candidate the training job would reject is never picked
    assert pick(trials, 0.003, 512, 1, lambda p: p["schedule.max_cycles"] != 1) == (1, 2)


def test_a_cheaper_pick_must_hold_on_more_seeds_or_the_highest_is_kept() -> None:
    """The one-seed pick is often a lucky draw: each cheaper candidate, cheapest first,
    trains more seeds beside the highest; the first whose paired gains' interval stays
    above -adopt_max_loss is the pick, else the highest itself."""
    from pipeline.steps.tuning.configs import gain_interval
    from pipeline.steps.tuning.pick import TrialSummary, confirm_pick, ranked

    def trial(n: int, value: float, steps: int) -> TrialSummary:
        return TrialSummary(
            number=n, state="COMPLETE", value=value, params={"schedule.lr_max": n / 1000},
            steps=steps, cost_usd=None, run_name=None,
        )  # fmt: skip

    trials = [trial(1, 0.720, 900), trial(2, 0.718, 300), trial(3, 0.7185, 500)]
    near = ranked(trials, 0.003, 512)
    assert [c.trial.number for c in near] == [2, 3, 1]
    # seed i's val AUC per trial: trial 2 was lucky on the study's seed, trial 3 holds
    runs = {1: {1: 0.721, 2: 0.719}, 2: {1: 0.712, 2: 0.709}, 3: {1: 0.7195, 2: 0.7180}}
    trained: list[tuple[int, int]] = []

    def train(params: dict[str, int | float], i: int) -> float:
        n = round(float(params["schedule.lr_max"]) * 1000)
        trained.append((n, i))
        return runs[n][i]

    best, checks = confirm_pick(near, 3, 0.9, 0.003, train)
    assert best is not None
    assert best.trial.number == 3
    assert [(c.trial, c.confirmed) for c in checks] == [(2, False), (3, True)]
    gains = [0.7185 - 0.720, 0.7195 - 0.721, 0.7180 - 0.719]
    assert checks[1].gains == pytest.approx(gains)
    _, low, _ = gain_interval(gains, 0.9)
    assert checks[1].low == pytest.approx(low)
    assert low >= -0.003
    assert sorted(trained) == [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)]  # the top once
    # none holds: the highest itself; one seed: the cheapest, unchecked
    runs[3] = {1: 0.700, 2: 0.705}
    assert confirm_pick(near, 3, 0.9, 0.003, train)[0].trial.number == 1  # type: ignore[union-attr]
    assert confirm_pick(near, 1, 0.9, 0.003, train) == (near[0], [])
    # no budget left for the checks: the highest
    assert confirm_pick(near, 3, 0.9, 0.003, lambda p, i: None)[0] is near[2]
