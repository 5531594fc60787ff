"""The replay's month summary: what each DAG run did, in a line or a few.

Read from the tasks' results (the flow's records as JSON), never recomputed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "canary_lines",
    "champion_line",
    "ingest_line",
    "monitor_lines",
    "retrain_lines",
    "totals_line",
]

Failure = Callable[[Any, str, Any], None]


def ingest_line(out: Any, landed: dict[str, Any], what: str) -> None:
    again = " (already landed: reused)" if landed.get("status") == "unchanged" else ""
    if what == "features":
        out.steps["rows"] = landed.get("rows")
        out.lines.append(f"  ingest     {landed.get('rows', '?')} rows{again}")
    else:
        out.lines.append(f"  labels     {what}: {landed.get('rows', '?')} rows arrived{again}")


def _each(value: Any) -> list[Any]:
    """A step's result over the run's batches (a list; one record reads as a list of one)."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def monitor_lines(out: Any, run: Any, failure: Failure) -> None:
    """The drift monitor's lines: each batch of the run (validation, drift, scoring;
    named when the run took more than one), then its one decision."""
    res = run.results
    validated = _each(res.get("validate"))
    if not validated:
        out.steps["validation"] = "failed"
        failure(out, "validation", run)
        return
    drifted = {d.get("batch_id"): d for d in _each(res.get("drift"))}
    scored = {s.get("batch_id"): s for s in _each(res.get("score"))}
    several = len(validated) > 1
    for val in validated:
        batch = val.get("batch_id")
        mine = not several or batch == out.batch
        if several:
            out.lines.append(f"  batch      {batch}")
        if val.get("refused"):
            if mine:
                out.steps["validation"] = "failed"
            out.lines.append(f"  validation refused: {str(val['refused']).splitlines()[0]}")
            continue
        summary = val.get("summary") or val  # one batch's ValidationSummary
        if mine:
            out.steps["validation"] = "passed"
        out.lines.append(
            f"  validation passed: {summary['evaluated']} expectations on {summary['rows']} rows"
        )
        _drift_lines(out, drifted.get(batch) or {}, mine)
        _score_line(out, scored.get(batch) or {})
    if any(v.get("refused") for v in validated):
        failure(out, "validation", run)
    decision = res.get("decide")
    if decision is None:
        failure(out, "decision", run)
        return
    reason = str(decision.get("reason"))
    if decision.get("retrain"):
        out.lines.append(f"  decision   RETRAIN: {reason}")
    else:  # the reason says "no retrain" (or why the request was paused) itself
        out.lines.append(f"  decision   {reason}")


def _drift_lines(out: Any, dr: dict[str, Any], mine: bool) -> None:
    if dr.get("checked"):
        if mine:
            out.steps["drift_share"] = dr["drift_share"]
        # the share counts value drift; a moved null share is its own finding
        cols = ", ".join(dr["value_drifted"]) or "none"
        out.lines.append(
            f"  drift      {dr['drift_share']:.0%} of columns against reference "
            f"{dr['reference']} (threshold {dr['threshold']:.0%}); values drifted: {cols}"
            + (" (measured before: reused)" if dr.get("reused") else "")
        )
        for line in dr["null_shifts"]:
            out.lines.append(f"             null share moved: {line}")
        for skipped in dr.get("skipped", []):
            out.lines.append(f"             not compared: {skipped}")
    else:
        out.lines.append(f"  drift      not measured: {dr.get('reason')}")


def _score_line(out: Any, sc: dict[str, Any]) -> None:
    if sc.get("champion_version"):
        canary = (
            f", canary v{sc['canary_version']} {sc['canary_rows']}"
            if sc.get("canary_version")
            else ""
        )
        if sc.get("shadow_rows"):
            canary = f", canary v{sc['canary_version']} {sc['shadow_rows']} in shadow (unserved)"
        served = sc["rows"] - sc["canary_rows"]
        out.lines.append(f"  scoring    champion v{sc['champion_version']} {served} rows{canary}")
        if sc.get("rolled_back"):  # before labels: could not score, or a guardrail
            out.lines.append(f"  guardrail  canary rolled back: {sc['rolled_back']}")


def canary_lines(out: Any, run: Any, previous: Any, failure: Failure) -> None:
    checked = _each(run.results.get("quality"))
    if not checked:
        failure(out, "quality", run)
        return
    for q in checked:
        decided = q.get("decision") or {}
        live = q.get("summary") or {}  # None: nothing was scored
        batch = q.get("batch_id") or (previous.batch_id if previous is not None else "?")
        if live.get("value") is not None:
            out.steps["live_auc"] = live["value"]
            out.lines.append(
                f"  quality    champion v{live['model_version']} live AUC {live['value']:.4f} on "
                f"{live['rows']} labelled rows of {batch} (SLO {live['slo']})"
            )
        else:
            out.lines.append(f"  quality    {decided.get('reason', 'not measured')}")
    rv = run.results.get("review")
    if rv:
        out.steps["canary"] = rv["outcome"]
        out.lines.append(f"  canary     {rv['outcome']}: {rv['reason']} -> {rv['action']}")
    elif run.failed:
        failure(out, "canary", run)


def retrain_lines(replay: Any, out: Any, run: Any) -> None:
    res = run.results
    plan = res.get("plan")
    if plan is None:
        replay.failure(out, "retrain", run)
        return
    for batch, why in (plan.get("left_out") or {}).items():
        out.lines.append(f"  retrain    left out {batch}: {why}")
    if plan.get("skip"):
        out.lines.append(f"  retrain    skipped: {plan.get('reason')}")
        return
    reason = " + ".join(plan.get("reasons") or []) or plan.get("reason", "")
    out.steps["retrain"] = reason
    out.lines.append(
        f"  retrain    {plan.get('run_name')} on {', '.join(plan.get('window', []))} "
        f"(why: {reason}; {run.consumed} request(s))"
    )
    trained = res.get("train") or res.get("train_result") or {}
    result = trained.get("result") or {}  # the job's TrainResult: every cycle's best so far
    finals = sorted((c for c in result.get("cycles", []) if c["final"]), key=lambda c: c["cycle"])
    for c in finals:
        out.lines.append(
            f"             cycle {c['cycle']} best at step {c['step']}: lr {c['lr']:.3g}, "
            f"val AUC {c['val_auc']:.4f}"
        )
    stopping = result.get("stopping") or {}
    if stopping.get("stopped"):
        out.steps["stopped_after_cycle"] = stopping["stopped_after_cycle"]
        out.lines.append(
            f"             stopped after cycle {stopping['stopped_after_cycle']} at step "
            f"{stopping['stop_step']}: {stopping['steps_saved']} of "
            f"{stopping['scheduled_steps']} steps (${stopping['usd_saved']:.4f}) saved"
        )
    verdict = gate_verdict(replay, plan.get("run_name"), res.get("gate"))
    out.steps["gate"] = verdict["text"]
    out.lines.append(f"  gate       {verdict['text']}")
    for line in verdict["failures"]:
        out.lines.append(f"               {line}")
    if not trained and run.failed:
        replay.failure(out, "training", run)
    replay.retrains.append(
        {"month": out.batch, "plan": plan, "train": trained, "gate": verdict, "state": run.state}
    )


def gate_verdict(
    replay: Any, run_name: str | None, result: dict[str, Any] | None
) -> dict[str, Any]:
    if result is not None:
        where = "first model: champion" if result["first_model"] else "canary"
        return {"passed": True, "text": f"v{result['version']} PASSED -> {where}", "failures": []}
    env = replay.env
    versions = env.client.search_model_versions(
        f"name='{env.model}' and tags.training_run_name='{run_name}'"
    )
    failed = [v for v in versions if v.tags.get("gate.status") == "failed"]
    if failed:
        v = failed[0]
        return {
            "passed": False,
            "text": f"v{v.version} REFUSED (nothing moved)",
            "failures": v.tags.get("gate.reasons", "").split("; "),
        }
    return {"passed": False, "text": "not reached (the run failed earlier)", "failures": []}


def champion_line(replay: Any, out: Any) -> None:
    champion, canary = replay.alias("champion"), replay.alias("canary")
    out.steps["champion"] = champion
    out.lines.append(
        f"  champion   {'v' + champion if champion else 'none yet'}"
        + (f", canary v{canary}" if canary else "")
    )


def totals_line(months: list[Any]) -> str:
    """The whole replay in one line, from the batches' steps: rows, retrains, the gate's
    verdicts, the canary's outcomes (judged reviews only) and the last champion."""
    rows = sum(m.steps.get("rows") or 0 for m in months)
    gates = [str(m.steps["gate"]) for m in months if "gate" in m.steps]
    passed = sum("PASSED" in g for g in gates)
    refused = sum("REFUSED" in g for g in gates)
    outcomes: dict[str, int] = {}
    for m in months:
        outcome = m.steps.get("canary")
        if outcome and outcome != "no_canary":
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    canary = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "never reviewed"
    champion = next((m.steps.get("champion") for m in reversed(months) if m.steps), None)
    failed = sum(m.failed for m in months)
    return (
        f"   {len(months)} batches, {rows} rows; {sum('retrain' in m.steps for m in months)} "
        f"retrains; gate: {passed} passed, {refused} refused; canary reviews: {canary}; "
        f"champion {'v' + champion if champion else 'none'}; {failed} failed batch(es)"
    )
