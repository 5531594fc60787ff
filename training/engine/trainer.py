"""The training job: cosine-scheduled, resumable, best checkpoint per cycle.

:class:`Trainer` composes the parts: :class:`~training.engine.runtime.Runtime` (device,
AMP, seeds), :class:`~training.engine.loop.StepRunner` (one optimizer step, no host sync
on accelerators), :class:`~training.engine.nan_guard.NanGuard` (non-finite steps and
rollbacks), :class:`~training.engine.bests.CycleBests` (one best checkpoint per cycle),
the checkpoint payloads of :mod:`training.checkpoint.payload`, telemetry (MLflow and
``metrics.jsonl``), the cost meter, progress, and the checkpoint hooks (the
Pushgateway). The loop steps the cosine schedule once per optimizer step; every
``nan_guard.check_every_steps`` steps (and before evaluations and checkpoints)
the window's values reach the host in one go.

Durability: ``last`` is written every ``checkpoint.every_steps`` steps or
``every_seconds``, on SIGTERM, and when the budget is spent; with the step (which
fixes the data position), RNG states and uncommitted telemetry in it, a run killed
at any point and resumed ends with the same weights and lr trace as a run never
interrupted (CPU, deterministic mode).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from training.checkpoint.files import CheckpointError, fault_point, save_checkpoint
from training.checkpoint.payload import BestPayload, Identity, LastPayload
from training.config.locations import code_revision
from training.config.train import TrainConfig
from training.data.dataset import PreparedData, open_for
from training.data.preprocess import Preprocessor
from training.data.spec import DataError, DatasetSpec, load_spec
from training.engine.bests import CycleBests
from training.engine.distributed import DistContext
from training.engine.loop import StepRecord, StepRunner
from training.engine.nan_guard import LoopState, NanGuard, TrainingDiverged, diverged_tags
from training.engine.resume import last_payload, load_last, restore, resume_point
from training.engine.run_info import open_telemetry, publish, run_params, run_tags
from training.engine.runtime import Runtime
from training.engine.stopping import StopRule, StopState, summarize
from training.model.build import build_model, build_optimizer
from training.results import CheckpointEvent, CycleBest, CycleEndEvent, TrainResult
from training.schedule import CosineAnnealingScheduler
from training.telemetry.cost import CostMeter
from training.telemetry.progress import Progress

if TYPE_CHECKING:
    from training.data.stream import StreamedData
    from training.results import CheckpointHook, CycleHook

__all__ = ["Trainer"]

log = logging.getLogger(__name__)


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        *,
        ctx: DistContext | None = None,
        data: PreparedData | StreamedData | None = None,
        spec: DatasetSpec | None = None,
        hooks: Sequence[CheckpointHook] | None = None,
        cycle_hooks: Sequence[CycleHook] = (),
    ) -> None:
        """``hooks`` run after every committed ``last`` checkpoint (default: the Pushgateway's);
        ``cycle_hooks`` at every cycle end: one returning True ends the run (``pruned``)."""
        self.config = config
        self.ctx = ctx or DistContext()
        self._data, self._spec = data, spec
        if hooks is None:
            from training.telemetry.pushgateway import ProgressPusher

            hooks = [ProgressPusher(config)]
        self.hooks, self.cycle_hooks = list(hooks), list(cycle_hooks)
        self._stop: str | None = None

    # ---------------------------------------------------------------- setup

    def _build(self, spec: DatasetSpec, data: PreparedData | StreamedData) -> None:
        cfg = self.config
        per_step = cfg.optim.batch_size
        if per_step % (self.ctx.world_size * cfg.optim.grad_accum_steps):
            raise DataError(
                f"optim.batch_size {per_step} must divide evenly over {self.ctx.world_size} "
                f"rank(s) x {cfg.optim.grad_accum_steps} accumulation step(s)"
            )
        steps_per_epoch = cfg.steps_per_epoch(len(data.train), self.ctx.world_size)
        if steps_per_epoch < 1:  # halving stopped at what ranks x accumulation divide
            raise DataError(
                f"optim.batch_size {per_step} is larger than the {len(data.train)} training rows"
            )
        self.schedule = cfg.schedule.build(steps_per_epoch, spec.schedule.bounds())
        module = build_model(cfg.model, data.preprocessor).to(self.runtime.device)
        self.optimizer = build_optimizer(
            cfg.optim, module.parameters(), cfg.schedule.lr_max, fused=True
        )
        self.runner = StepRunner(
            cfg,
            self.runtime,
            self.ctx,
            data,
            module,
            self.optimizer,
            steps_per_epoch=steps_per_epoch,
        )
        self._make_scheduler(1.0)

    def _make_scheduler(self, lr_scale: float) -> None:
        self.scheduler = CosineAnnealingScheduler(
            self.optimizer,
            self.schedule,
            plateau=self.config.plateau.build(),
            group_scales=[lr_scale],
        )

    def _total_steps(self) -> int:
        if self.schedule.max_cycles is not None:
            return self.scheduler.schedule.total_steps()
        assert self.config.schedule.max_steps is not None
        return self.config.schedule.max_steps

    def run(self, *, resume: bool = False) -> TrainResult:
        cfg = self.config
        self.runtime = Runtime.setup(cfg.runtime, self.ctx)
        self.spec = self._spec or load_spec(cfg.data.dataset)
        self.run_name = cfg.run_name or f"{self.spec.name}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        self.run_dir = cfg.output_dir / self.run_name
        ckpt = resume_point(self._last_path(), cfg) if resume else None
        if ckpt is None and self._last_path().exists():
            raise CheckpointError(
                f"run {self.run_name!r} already has checkpoints in {self.run_dir}: "
                "pass --resume to continue it, or choose another --run-name "
                "(nothing was overwritten)"
            )
        pre = Preprocessor.from_state(ckpt.identity.preprocessor) if ckpt else None
        self.data = self._data or open_for(cfg, self.spec, preprocessor=pre)
        if ckpt and ckpt.identity.data_fingerprint != self.data.fingerprint:
            raise CheckpointError(
                "the training data differ from the data the checkpoint was trained on "
                f"(fingerprint {ckpt.identity.data_fingerprint[:12]} vs "
                f"{self.data.fingerprint[:12]}); resume needs the same data: start a new run"
            )
        self._build(self.spec, self.data)
        self.state = LoopState()
        self.bests = CycleBests(self.state, cfg.eval.metric)
        self.guard = NanGuard(cfg.nan_guard)
        self.stop_rule, self.stop_state = StopRule(cfg.stopping, cfg.eval.metric), StopState()
        if ckpt:
            self._make_scheduler(float(ckpt.trainer["lr_scale"]))
            restore(ckpt, self.runner, self.scheduler, self.state)
            self._restore_stop_state(ckpt)
        device = self.runtime.device
        self.cost = CostMeter(
            cfg.cost.gpu_usd_per_hour if device.type == "cuda" else cfg.cost.cpu_usd_per_hour,
            units=self.ctx.world_size,
            budget_usd=cfg.cost.budget_usd,
            carried_seconds=self.state.device_seconds,
        )
        self._start_telemetry(ckpt)
        self._last_ckpt_time = time.monotonic()
        if not ckpt:
            self._write_last()  # step 0: the NaN guard always has somewhere to roll back to
        self.progress = Progress(cfg.progress, enabled=self.ctx.is_main)
        previous = signal.getsignal(signal.SIGTERM)
        main_thread = threading.current_thread() is threading.main_thread()
        if main_thread:
            signal.signal(signal.SIGTERM, self._on_sigterm)
        status = "FAILED"
        try:
            result = self._loop()
            status = "FINISHED" if result.status != "preempted" else "KILLED"
            return result
        except TrainingDiverged as exc:
            # what a reader of the run (the pipeline after a pod failed) needs to tell a
            # divergence from any other failure
            self.telemetry.set_tags(diverged_tags(exc, self.state))
            raise
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)
            self.progress.close()
            self.telemetry.finish(status, flush_timeout_s=600.0 if status != "FAILED" else 30.0)

    def _start_telemetry(self, ckpt: LastPayload | None) -> None:
        self.state.telemetry_key = self.state.telemetry_key or uuid.uuid4().hex
        self.telemetry = open_telemetry(
            self.config,
            self.run_dir,
            self.run_name,
            self.state,
            enabled=self.ctx.is_main,
            experiment=self.config.mlflow.experiment or self.spec.model_name,
            tags=run_tags(
                self.config, self.schedule, self.data, self.spec, self.runtime, self.ctx.world_size
            ),
            params=run_params(self.config, self.schedule, self.data, self._total_steps()),
            pending=ckpt.telemetry_pending if ckpt else None,
        )

    def _restore_stop_state(self, ckpt: LastPayload) -> None:
        self.stop_state = StopState.restore(
            ckpt.stopping,
            self.stop_rule,
            self.bests.finals(),
            self.scheduler.schedule,
            self._total_steps(),
        )

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._stop = "preempted"
        log.warning("SIGTERM received: checkpointing at the next step boundary")

    # ---------------------------------------------------------------- checkpoints

    def _last_path(self) -> Any:
        return self.run_dir / "checkpoints" / "last.ckpt"

    def _identity(self) -> Identity:
        return Identity(
            definition=self.config.definition(),
            definition_hash=self.config.definition_hash(),
            data_fingerprint=self.data.fingerprint,
            model_signature=self.runner.module.signature(),
            spec_name=self.spec.name,
            preprocessor=self.data.preprocessor.state_dict(),
        )

    def _write_last(self) -> None:
        if not self.ctx.is_main:
            return
        if not self.runner.params_finite():  # never persist a poisoned model as a resume point
            raise TrainingDiverged(
                "model parameters became non-finite; refusing to checkpoint them"
            )
        self.state.mlflow_run_id = self.telemetry.run_id or self.state.mlflow_run_id
        pending = self.telemetry.pending_state()
        payload = last_payload(
            self._identity(),
            self.runner,
            self.scheduler,
            self.state,
            device_seconds=self.cost.seconds,
            pending=pending,
            stopping=self.stop_state.to_dict(),
        )
        save_checkpoint(self._last_path(), payload.to_mapping(), keep_previous=True)
        self.telemetry.commit()
        event = CheckpointEvent(
            self.run_name, self.state.step, self._total_steps(), self.cost.usd, pending
        )
        for hook in self.hooks:
            hook(event)
        self._last_ckpt_time = time.monotonic()

    def _rollback(self, step: int) -> None:
        bad = self.state.consecutive_bad
        self.guard.check_rollback(self.state, step, self._last_path())
        ckpt, used = load_last(self._last_path())
        self.telemetry.discard()
        restore(ckpt, self.runner, self.scheduler, self.state, keep_counters=True)
        self._restore_stop_state(ckpt)
        self.guard.rolled_back(self.state)
        self.scheduler.group_scales = [self.state.lr_scale]
        self.scheduler.apply_lr()
        self.runner.reset_permutation()
        g = self.config.nan_guard
        log.warning(
            "NaN guard: %d consecutive non-finite steps at step %d; rolled back to step %d (%s) "
            "with the peak lowered to %gx (rollback %d of %d)",
            bad,
            step,
            self.state.step,
            used.name,
            self.state.lr_scale,
            self.state.rollbacks,
            g.max_rollbacks,
        )
        self.telemetry.set_tags(
            {
                "nan_rollbacks": self.state.rollbacks,
                f"nan_rollback_{self.state.rollbacks}": f"step {step}",
            }
        )

    # ---------------------------------------------------------------- the loop

    def _loop(self) -> TrainResult:
        cfg = self.config
        window: list[StepRecord] = []
        self.progress.open(self._total_steps(), self.state.step)
        stop_status = None
        # a run resumed after its stop was checkpointed goes straight to the end
        while self.state.step < self._total_steps() and not self.stop_state.stopped:
            s = self._advance(window)
            cycle_end = self.scheduler.schedule.is_cycle_end(s)
            done = self.state.step >= self._total_steps()
            eval_due = (s + 1) % cfg.eval.every_steps == 0 or cycle_end or done
            ckpt_due = (s + 1) % cfg.checkpoint.every_steps == 0 or (
                time.monotonic() - self._last_ckpt_time >= cfg.checkpoint.every_seconds
            )
            sync_due = (s + 1) % cfg.nan_guard.check_every_steps == 0 or eval_due or ckpt_due
            if not (sync_due or done or self._stop):
                continue
            rolled_back = not self._drain(window)
            window.clear()
            if rolled_back:  # continue from the restored step
                continue
            if eval_due and (self._evaluate(s) or cycle_end):
                self._close_cycle(self.scheduler.schedule.cycle_of(s), s)
            stop_status = self._stop_requested() or (
                "completed" if self.stop_state.stopped else None
            )
            if stop_status or ckpt_due or done:
                self._write_last()
            last = self.state.evals[-1] if self.state.evals else None
            self.progress.update(
                self.state.step,
                self._total_steps(),
                self.scheduler.get_last_lr()[0],
                self.cost.describe(),
                self.cost.usd,
                last[3] if last else None,
            )
            if stop_status:
                break
        status = stop_status or "completed"
        if status == "completed":  # a max_steps run can end mid-cycle
            last = max(0, self.state.step - 1)
            self._close_cycle(self.scheduler.schedule.cycle_of(last), last)
        return self._finish(status)

    def _advance(self, window: list[StepRecord]) -> int:
        """One optimizer step and the scheduler's; its values join ``window`` (no host
        sync on an accelerator). Returns the step just taken."""
        s = self.state.step
        window.append(self.runner.step(s, float(self.scheduler.get_last_lr()[0])))
        self.scheduler.step()
        self.runner.after_scheduler_step(self.scheduler)
        self.state.step = s + 1
        return s

    def _drain(self, window: list[StepRecord]) -> bool:
        """The window's values to the host, counted and recorded; False when the NaN
        guard rolled the run back."""
        rollback_at = self.guard.drain(window, self.state, self.telemetry.record)
        if rollback_at is None:
            return True
        self._rollback(rollback_at)
        return False

    def _evaluate(self, step: int) -> bool:
        """Validation metrics after ``step``; updates the cycle's best. True if a
        plateau restart was requested (the cycle ends here)."""
        val_loss, val_auc = self.runner.validate()
        fault_point("evaluation", str(step))  # tests only: predicted, nothing recorded yet
        cycle = self.scheduler.schedule.cycle_of(step)
        self.state.evals.append([step, cycle, val_loss, val_auc])
        self.telemetry.record(
            step, {"val_loss": val_loss, "val_auc": val_auc, "cycle": float(cycle)}
        )
        if self.bests.improves(cycle, val_loss, val_auc) and self.runner.params_finite():
            self._save_best(step, cycle, val_loss, val_auc)
        if self.scheduler.plateau is not None and val_loss == val_loss:  # not NaN
            return self.scheduler.observe(val_loss)
        return False

    def _save_best(self, step: int, cycle: int, val_loss: float, val_auc: float) -> None:
        path = self.run_dir / "checkpoints" / f"best-cycle-{cycle:02d}.ckpt"
        lr = float(self.scheduler.schedule.lr_at(step) * self.state.lr_scale)
        sha = ""
        if self.ctx.is_main:
            payload = BestPayload(
                identity=self._identity(),
                model=self.runner.module.state_dict(),
                cycle=cycle,
                step=step,
                lr=lr,
                metrics={"val_loss": val_loss, "val_auc": val_auc},
                schedule=self.scheduler.schedule.to_dict(),
                config=self.config.resolved(),
                run_name=self.run_name,
                mlflow_run_id=self.telemetry.run_id,
            )
            sha = save_checkpoint(path, payload.to_mapping())
        rel = str(path.relative_to(self.run_dir))
        self.bests.record(CycleBest(cycle, step, lr, val_auc, val_loss, rel, sha))

    def _close_cycle(self, cycle: int, end_step: int) -> None:
        best, last = self.bests.close(cycle), self.state.step >= self._total_steps()
        decision = self.stop_rule.close(self.stop_state, cycle, end_step, best, is_last=last)
        if decision is None:  # closed and decided already
            return
        if self.ctx.is_main:
            self.telemetry.set_tags(
                {f"cycle_{cycle}_stopping": f"{decision.action}: {decision.reason}"}
            )
        log.info("stopping rule after cycle %d: %s (%s)", cycle, decision.action, decision.reason)
        if best is None:  # no finite evaluation: the rule counted it, there is nothing to keep
            return
        cost, spe, total = round(self.cost.usd, 6), self.runner.steps_per_epoch, self._total_steps()
        event = CycleEndEvent(self.run_name, best, end_step, cost, spe, total)
        if [h for h in self.cycle_hooks if h(event)] and not self.stop_state.stopped:
            self._stop = self._stop or "pruned"
        if self.ctx.is_main:
            self.telemetry.log_artifact(self.run_dir / best.path, "checkpoints")
            self.telemetry.set_tags(
                {
                    f"cycle_{cycle}_best_step": best.step,
                    f"cycle_{cycle}_best_val_auc": f"{best.val_auc:.6f}",
                }
            )
        log.info(
            "cycle %d closed: best at step %d (val_auc %.4f, val_loss %.4f, lr %.3g)",
            cycle,
            best.step,
            best.val_auc,
            best.val_loss,
            best.lr,
        )

    def _stop_requested(self) -> str | None:
        budget = self.cost.over_budget if self.ctx.is_main else False
        sigterm, over = self.ctx.any([self._stop == "preempted", budget], self.runtime.device)
        pruned = "pruned" if self._stop == "pruned" else None
        return "preempted" if sigterm else "budget_exhausted" if over else pruned

    # ---------------------------------------------------------------- the end

    def _finish(self, status: str) -> TrainResult:
        self.state.device_seconds = self.cost.seconds
        if self.ctx.is_main:  # reported within seconds of the start; result.json needs it
            self.state.mlflow_run_id = self.telemetry.wait_run_id() or self.state.mlflow_run_id
        reasons = {
            "completed": f"completed {self.state.step} steps",
            "budget_exhausted": (
                f"cost budget spent: {self.cost.describe()} at step {self.state.step}"
            ),
            "preempted": f"SIGTERM at step {self.state.step}; checkpointed, resume with --resume",
            "pruned": f"pruned by a cycle hook at step {self.state.step} (the tuner's pruner)",
        }
        spent = round(self.cost.usd, 6)  # one reading: the result's cost and what it saved
        stopping = summarize(
            self.config.stopping,
            self.stop_state,
            scheduled_steps=self._total_steps(),
            steps_done=self.state.step,
            cost_usd=spent,
        )
        if stopping.stopped:
            reasons["completed"] = stopping.decision
        best = self.bests.overall()
        result = TrainResult(
            status=status,  # type: ignore[arg-type]
            stop_reason=reasons[status],
            run_name=self.run_name,
            run_dir=str(self.run_dir),
            steps_done=self.state.step,
            total_steps=self._total_steps(),
            cycles=self.bests.all(),
            best_cycle=best.cycle if best else None,
            nan_count=self.state.nan_total,
            rollbacks=self.state.rollbacks,
            lr_scale=self.state.lr_scale,
            restarts=list(self.scheduler.restarts),
            cost_usd=spent,
            device_seconds=round(self.cost.seconds, 3),
            device=str(self.runtime.device),
            amp=self.runtime.amp,
            world_size=self.ctx.world_size,
            mlflow_run_id=self.state.mlflow_run_id,
            data=self.data.describe(),
            schedule=self.schedule.to_dict(),
            schedule_fingerprint=self.schedule.fingerprint(),
            config_hash=self.config.config_hash(),
            definition_hash=self.config.definition_hash(),
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
            code_revision=code_revision(),
            stopping=stopping,
        )
        if self.ctx.is_main:
            self.telemetry.record(max(0, self.state.step - 1), stopping.mlflow_metrics())
            self.telemetry.set_tags(stopping.mlflow_tags())
            publish(
                result,
                self.telemetry,
                self.scheduler.schedule,
                [b.step for b in self.bests.finals()],
            )
        return result
