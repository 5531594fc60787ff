"""The training loop: cosine-scheduled, resumable, best checkpoint per cycle.

One optimizer step, in order: draw the global batch (a pure function of the
seed, the epoch and the position in it), forward/backward over the
micro-batches (DDP syncs gradients only on the last), clip, decide on the
device whether the step is finite, let the fused optimizer apply or skip it
(``found_inf``: no host synchronisation), step the scheduler. Loss, gradient
norm and the skip flag stay on the device; every ``nan_guard.check_every_steps``
steps (and before evaluations and checkpoints) they are copied to the host in
one go, which is the only place the loop waits for the device.

Durability: ``last`` is written every ``checkpoint.every_steps`` steps or
``every_seconds``, on SIGTERM, and when the budget is spent; it holds the
model, optimizer, scheduler, grad scaler, RNG states, step (which fixes the
data position) and the uncommitted telemetry. Each cosine cycle keeps its own
best checkpoint, chosen on the validation metric and never touched by a later
cycle. A run killed at any point and resumed ends with the same weights and
the same lr trace as a run never interrupted (CPU, deterministic mode).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from training.checkpoint import CheckpointError, fault_point, load_latest, save_checkpoint
from training.config import TrainConfig, diff_definitions
from training.cost import CostMeter
from training.data.dataset import PreparedData, prepare
from training.data.preprocess import Preprocessor
from training.data.spec import DataError, DatasetSpec, load_spec
from training.distributed import DistContext
from training.metrics import log_loss, roc_auc
from training.model import TabularMLP
from training.schedule import CosineAnnealingScheduler, CosineSchedule, ScheduleMismatchError
from training.telemetry import Telemetry, default_tracking_uri, read_metrics

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by SIGTERM after a checkpoint; retry resumes

# one optimizer step as the loop holds it until the next host sync: step, lr, and the
# loss, gradient norm and bad-step flag (host values or device tensors: _train_step)
_Record = tuple[int, float, float | torch.Tensor, float | torch.Tensor, bool | torch.Tensor]


class TrainingDiverged(RuntimeError):
    """Non-finite steps persisted through every allowed rollback."""


@dataclass
class CycleBest:
    cycle: int
    step: int
    lr: float
    val_auc: float
    val_loss: float
    path: str
    sha256: str
    final: bool = False


@dataclass
class TrainResult:
    status: str  # completed | budget_exhausted | preempted
    stop_reason: str
    run_name: str
    run_dir: str
    steps_done: int
    total_steps: int
    cycles: list[dict[str, Any]]
    best_cycle: int | None
    nan_count: int
    rollbacks: int
    lr_scale: float
    restarts: list[int]
    cost_usd: float
    device_seconds: float
    device: str
    amp: str
    world_size: int
    mlflow_run_id: str | None
    data: dict[str, Any]
    schedule: dict[str, Any]
    schedule_fingerprint: str
    config_hash: str
    definition_hash: str
    finished_at: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


@dataclass
class _State:
    """The loop's counters; stored in every ``last`` checkpoint."""

    step: int = 0
    nan_total: int = 0
    consecutive_bad: int = 0
    rollbacks: int = 0
    lr_scale: float = 1.0
    cycle_best: dict[int, dict[str, Any]] = field(default_factory=dict)
    evals: list[list[float]] = field(default_factory=list)  # [step, cycle, val_loss, val_auc]
    device_seconds: float = 0.0
    mlflow_run_id: str | None = None
    telemetry_key: str | None = None  # finds the MLflow run again if its id was not known yet


def _git_revision() -> str:
    head = Path(__file__).resolve().parent.parent / ".git"
    try:
        ref = (head / "HEAD").read_text().strip()
        if ref.startswith("ref: "):
            return (head / ref[5:]).read_text().strip()[:12]
        return ref[:12]
    except OSError:
        return os.environ.get("GIT_REVISION", "unknown")


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        *,
        ctx: DistContext | None = None,
        data: PreparedData | None = None,
        spec: DatasetSpec | None = None,
    ) -> None:
        self.config = config
        self.ctx = ctx or DistContext()
        self._data = data
        self._spec = spec
        self._stop: str | None = None
        self._bar: Any = None

    # ====================================================================== setup

    def _setup_runtime(self) -> None:
        rt = self.config.runtime
        if rt.device == "cuda" and not torch.cuda.is_available():
            raise DataError("runtime.device is 'cuda' but no CUDA device is available")
        kind = (
            "cuda"
            if rt.device == "cuda" or (rt.device == "auto" and torch.cuda.is_available())
            else "cpu"
        )
        self.device = (
            torch.device(kind, self.ctx.local_rank) if kind == "cuda" else torch.device("cpu")
        )
        amp = rt.amp
        if amp == "auto":
            amp = (
                ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if kind == "cuda" else "off"
            )
        self.amp = amp
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        if rt.threads:
            torch.set_num_threads(rt.threads)
        torch.manual_seed(rt.seed)  # same on every rank: RNG states stay interchangeable
        if rt.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=kind == "cuda")
            torch.backends.cudnn.benchmark = False

    def _build(self, spec: DatasetSpec, data: PreparedData) -> None:
        cfg = self.config
        per_step = cfg.optim.batch_size
        micro_total = self.ctx.world_size * cfg.optim.grad_accum_steps
        if per_step % micro_total:
            raise DataError(
                f"optim.batch_size {per_step} must divide evenly over {self.ctx.world_size} "
                f"rank(s) x {cfg.optim.grad_accum_steps} accumulation step(s)"
            )
        self.micro = per_step // micro_total
        self.steps_per_epoch = len(data.train) // per_step
        if self.steps_per_epoch < 1:
            raise DataError(
                f"optim.batch_size {per_step} is larger than the {len(data.train)} training rows"
            )
        self.schedule: CosineSchedule = cfg.schedule.build(self.steps_per_epoch)
        model = TabularMLP(
            data.preprocessor.cardinalities,
            data.preprocessor.n_numeric,
            cfg.model.hidden,
            cfg.model.dropout,
            cfg.model.embedding_dim_max,
        ).to(self.device)
        self.core = model
        self.params = list(model.parameters())  # one list, not a module walk per step
        self._train_mode = False
        self.model: torch.nn.Module = (
            DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            if self.ctx.enabled
            else model
        )
        o = cfg.optim
        params = list(model.parameters())
        if o.name == "adamw":
            self.optimizer = torch.optim.AdamW(
                params,
                lr=cfg.schedule.lr_max,
                betas=o.betas,
                weight_decay=o.weight_decay,
                fused=True,
            )
        else:
            self.optimizer = torch.optim.SGD(
                params,
                lr=cfg.schedule.lr_max,
                momentum=o.momentum,
                weight_decay=o.weight_decay,
                fused=True,
            )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        self._make_scheduler(1.0)
        # On the CPU a tensor's value is host memory: reading it is no sync, and deciding
        # on the host whether to skip a step spares the dozen small ops that an on-device
        # skip costs (the optimizer's found_inf alone adds one op per parameter). On an
        # accelerator the skip stays on the device and the host reads the values once per
        # window (_drain).
        self._host_checks = self.device.type == "cpu" and not self.scaler.is_enabled()
        self._one = torch.ones((), device=self.device)  # the fused finite check's scale

        # training tensors live on the compute device: one copy (pinned, non-blocking
        # on CUDA), then every batch is a gather on the device, with no host work per step
        def put(a: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(np.ascontiguousarray(a))
            if self.device.type == "cuda":
                return t.pin_memory().to(self.device, non_blocking=True)
            return t

        self.train_t = [put(data.train.cats), put(data.train.nums), put(data.train.y)]
        self.valid_t = [put(data.valid.cats), put(data.valid.nums)]
        self._perm_epoch, self._perm = -1, None

    def _make_scheduler(self, lr_scale: float) -> None:
        self.scheduler = CosineAnnealingScheduler(
            self.optimizer,
            self.schedule,
            plateau=self.config.plateau.build(),
            group_scales=[lr_scale],
        )

    # ====================================================================== checkpoints

    def _last_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.ckpt"

    def _best_path(self, cycle: int) -> Path:
        return self.run_dir / "checkpoints" / f"best-cycle-{cycle:02d}.ckpt"

    def _params_finite(self) -> bool:
        return bool(torch.stack([torch.isfinite(p).all() for p in self.params]).all())

    def _identity(self) -> dict[str, Any]:
        return {
            "definition": self.config.definition(),
            "definition_hash": self.config.definition_hash(),
            "data_fingerprint": self.data.fingerprint,
            "model_signature": self.core.signature(),
            "spec_name": self.spec.name,
            "preprocessor": self.data.preprocessor.state_dict(),
        }

    def _write_last(self) -> None:
        if not self.ctx.is_main:
            return
        if not self._params_finite():  # never persist a poisoned model as a resume point
            raise TrainingDiverged(
                "model parameters became non-finite; refusing to checkpoint them"
            )
        self.state.mlflow_run_id = self.telemetry.run_id or self.state.mlflow_run_id
        state = asdict(self.state)
        state["device_seconds"] = self.cost.seconds
        payload = {
            "kind": "last",
            **self._identity(),
            "step": self.state.step,
            "model": self.core.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            },
            "trainer": state,
            "telemetry_pending": self.telemetry.pending_state(),
        }
        save_checkpoint(self._last_path(), payload, keep_previous=True)
        self.telemetry.commit()

        # Optional Prometheus Pushgateway (training/pushgateway.py): the latest committed
        # values, pushed by a background thread; without a configured URL it does nothing.
        from training import pushgateway

        pushgateway.push_progress(
            self.config,
            self.run_name,
            payload["telemetry_pending"],
            step=self.state.step,
            total_steps=self._total_steps(),
            cost_usd=self.cost.usd,
        )

        self._last_ckpt_time = time.monotonic()

    def _restore(self, ckpt: dict[str, Any], *, keep_counters: bool = False) -> None:
        """Load a ``last`` checkpoint into the live objects (resume or rollback)."""
        try:
            self.core.load_state_dict(ckpt["model"], strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint does not fit this model: {exc}") from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        saved = dict(ckpt["trainer"])
        self.scheduler.group_scales = [float(saved["lr_scale"])]
        try:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        except ScheduleMismatchError as exc:
            raise CheckpointError(f"checkpoint belongs to another schedule: {exc}") from None
        if ckpt["scaler"] is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if self.device.type == "cuda" and ckpt["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        saved["cycle_best"] = {int(k): v for k, v in saved["cycle_best"].items()}
        if keep_counters:  # a rollback keeps what happened since (NaNs, rollbacks, time)
            for name in (
                "nan_total",
                "rollbacks",
                "lr_scale",
                "device_seconds",
                "mlflow_run_id",
                "telemetry_key",
            ):
                saved[name] = getattr(self.state, name)
        self.state = _State(**saved)

    def _check_resumable(self, ckpt: dict[str, Any]) -> None:
        if ckpt.get("kind") != "last":
            raise CheckpointError("--resume needs a 'last' checkpoint, not a best-of-cycle one")
        if ckpt["definition_hash"] != self.config.definition_hash():
            changes = diff_definitions(ckpt["definition"], self.config.definition())
            raise CheckpointError(
                "the configuration changed since the checkpoint, so resuming would not continue "
                "the same run: "
                + "; ".join(changes[:8])
                + ". Start a new run (another --run-name) "
                "or restore these settings."
            )

    # ====================================================================== the loop

    def run(self, *, resume: bool = False) -> TrainResult:
        cfg = self.config
        self._setup_runtime()
        self.spec = self._spec or load_spec(cfg.data.dataset)
        self.run_name = cfg.run_name or f"{self.spec.name}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        self.run_dir = cfg.output_dir / self.run_name
        ckpt = None
        if resume:
            ckpt, used, problems = load_latest(self._last_path())
            for p in problems:
                log.warning("%s; resuming from %s instead", p, used)
            self._check_resumable(ckpt)
        elif self._last_path().exists():
            raise CheckpointError(
                f"run {self.run_name!r} already has checkpoints in {self.run_dir}: "
                "pass --resume to continue it, or choose another --run-name "
                "(nothing was overwritten)"
            )
        pre = Preprocessor.from_state(ckpt["preprocessor"]) if ckpt else None
        self.data = self._data or prepare(
            cfg.data,
            self.spec,
            min_category_count=cfg.model.min_category_count,
            max_categories=cfg.model.max_categories,
            preprocessor=pre,
        )
        if ckpt and ckpt["data_fingerprint"] != self.data.fingerprint:
            raise CheckpointError(
                "the training data differ from the data the checkpoint was trained on "
                f"(fingerprint {ckpt['data_fingerprint'][:12]} vs {self.data.fingerprint[:12]}); "
                "resume needs the same data: start a new run for new data"
            )
        self._build(self.spec, self.data)
        self.state = _State()
        if ckpt:
            self._make_scheduler(float(ckpt["trainer"]["lr_scale"]))
            self._restore(ckpt)
        self.cost = CostMeter(
            cfg.cost.gpu_usd_per_hour if self.device.type == "cuda" else cfg.cost.cpu_usd_per_hour,
            units=self.ctx.world_size,
            budget_usd=cfg.cost.budget_usd,
            carried_seconds=self.state.device_seconds,
        )
        tracking_uri = cfg.mlflow.tracking_uri or default_tracking_uri(cfg.output_dir.parent)
        artifact_location = cfg.mlflow.artifact_location
        if artifact_location is None and not tracking_uri.startswith(("http://", "https://")):
            # a database-backed store would otherwise put artifacts in ./mlruns of the CWD
            artifact_location = (cfg.output_dir.parent / "mlartifacts").resolve().as_uri()
        self.telemetry = Telemetry(
            enabled=self.ctx.is_main,
            run_dir=self.run_dir,
            tracking_uri=tracking_uri if cfg.mlflow.enabled else None,
            experiment=cfg.mlflow.experiment or self.spec.model_name,
            artifact_location=artifact_location,
        )
        self.state.telemetry_key = self.state.telemetry_key or uuid.uuid4().hex
        self.telemetry.start(
            run_name=self.run_name,
            run_key=self.state.telemetry_key,
            tags=self._run_tags(),
            params=self._run_params(),
            resume_run_id=self.state.mlflow_run_id,
            resume=ckpt is not None,
            resume_step=self.state.step if ckpt else None,
            pending=ckpt["telemetry_pending"] if ckpt else (),
            parent_run_id=cfg.mlflow.parent_run_id,
        )
        if ckpt:
            log.info("resumed %s at step %d", self.run_name, self.state.step)
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.resolved.json").write_text(json.dumps(cfg.resolved(), indent=2))
        self._last_ckpt_time = time.monotonic()
        if not ckpt:
            self._write_last()  # step 0: the NaN guard always has somewhere to roll back to
        previous = signal.getsignal(signal.SIGTERM)
        if _in_main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)
        status = "FAILED"
        try:
            result = self._loop()
            status = {"completed": "FINISHED", "budget_exhausted": "FINISHED"}.get(
                result.status, "KILLED"
            )
            return result
        finally:
            if _in_main_thread():
                signal.signal(signal.SIGTERM, previous)
            if self._bar is not None:
                self._bar.close()
            self.telemetry.finish(status, flush_timeout_s=600.0 if status != "FAILED" else 30.0)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._stop = "preempted"
        log.warning("SIGTERM received: checkpointing at the next step boundary")

    def _total_steps(self) -> int:
        if self.schedule.max_cycles is not None:
            return self.scheduler.schedule.total_steps()
        assert self.config.schedule.max_steps is not None
        return self.config.schedule.max_steps

    def _loop(self) -> TrainResult:
        cfg = self.config
        window: list[_Record] = []
        self._open_progress()
        stop_status = None
        while self.state.step < self._total_steps():
            s = self._advance(window)
            cycle_end = self.scheduler.schedule.is_cycle_end(s)
            done = self.state.step >= self._total_steps()
            eval_due = (s + 1) % cfg.eval.every_steps == 0 or cycle_end or done
            ckpt_due = (s + 1) % cfg.checkpoint.every_steps == 0 or (
                time.monotonic() - self._last_ckpt_time >= cfg.checkpoint.every_seconds
            )
            sync_due = (
                (s + 1) % cfg.nan_guard.check_every_steps == 0 or eval_due or ckpt_due or done
            )
            if self._stop:
                sync_due = True
            if not sync_due:
                continue

            if not self._drain(window):  # rolled back: continue from the restored step
                window.clear()
                continue
            window.clear()
            if eval_due:
                forced = self._evaluate(s)
                if forced and not cycle_end:
                    cycle_end = True
                if cycle_end:
                    self._close_cycle(self.scheduler.schedule.cycle_of(s))
            stop_status = self._stop_requested()
            if stop_status or ckpt_due or done:
                self._write_last()
            self._update_progress()
            if stop_status:
                break
        status = stop_status or "completed"
        if status == "completed":
            open_cycle = self.scheduler.schedule.cycle_of(max(0, self.state.step - 1))
            self._close_cycle(open_cycle)  # a max_steps run can end mid-cycle
        return self._finish(status)

    # ---------------------------------------------------------------- one optimizer step

    def _advance(self, window: list[_Record]) -> int:
        """One optimizer step and the scheduler's; its device values join ``window``
        (no host sync). Returns the step just taken."""
        s = self.state.step
        lr_now = float(self.scheduler.get_last_lr()[0])
        loss, gnorm, bad = self._train_step(s, lr_now)
        window.append((s, lr_now, loss, gnorm, bad))
        self.scheduler.step()
        self._after_scheduler_step()
        self.state.step = s + 1
        return s

    def _batch_indices(self, step: int) -> torch.Tensor:
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.config.runtime.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(len(self.data.train), generator=g).to(self.device)
            self._perm_epoch = epoch
        size = self.config.optim.batch_size
        return self._perm[pos * size : (pos + 1) * size]

    def _train_step(
        self, step: int, lr_now: float
    ) -> tuple[float | torch.Tensor, float | torch.Tensor, bool | torch.Tensor]:
        """Forward, backward and (unless the step is bad) the update.

        Returns the step's loss, gradient norm and bad-step flag: host values where
        reading them costs no sync (``_host_checks``), else device tensors that
        ``_drain`` copies to the host with the rest of the window.
        """
        cfg = self.config
        accum = cfg.optim.grad_accum_steps
        idx_all = self._batch_indices(step)
        cats_t, nums_t, y_t = self.train_t
        inject = step in cfg.fault_injection.nan_steps or (
            cfg.fault_injection.nan_above_lr is not None
            and lr_now > cfg.fault_injection.nan_above_lr
        )
        if not self._train_mode:  # Module.train() walks every submodule: only when it changed
            self.model.train()
            self._train_mode = True
        total: torch.Tensor | None = None
        for micro in range(accum):
            start = (micro * self.ctx.world_size + self.ctx.rank) * self.micro
            idx = idx_all[start : start + self.micro]
            cats, nums, y = cats_t[idx], nums_t[idx], y_t[idx]
            if inject:
                nums = torch.full_like(nums, float("nan"))
            sync_ctx = (
                self.model.no_sync()
                if self.ctx.enabled and micro < accum - 1
                else contextlib.nullcontext()
            )
            with sync_ctx:
                with self._autocast():
                    logits = self.model(cats, nums)
                loss = F.binary_cross_entropy_with_logits(logits.float(), y)
                if accum > 1:
                    loss = loss / accum
                self.scaler.scale(loss).backward()
            total = loss.detach() if total is None else total + loss.detach()
        assert total is not None  # grad_accum_steps >= 1
        fault_point("step", str(step))  # tests only: gradients computed, no update yet
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        if cfg.optim.grad_clip_norm is not None:
            gnorm = torch.nn.utils.clip_grad_norm_(
                self.params, cfg.optim.grad_clip_norm, foreach=True
            )
        else:
            grads = [p.grad for p in self.params if p.grad is not None]
            gnorm = torch.nn.utils.get_total_norm(grads, foreach=True)
        if self._host_checks:
            return self._update_host(total, gnorm)
        return self._update_device(total, gnorm)

    def _update_host(self, total: torch.Tensor, gnorm: torch.Tensor) -> tuple[float, float, bool]:
        """The update, skipped on a non-finite loss or gradient, decided on the host."""
        loss_v, gnorm_v = total.item(), gnorm.item()
        bad = not (math.isfinite(loss_v) and math.isfinite(gnorm_v))
        if self.ctx.enabled:  # every rank must skip the same steps
            flag = torch.tensor(float(bad))
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            bad = flag.item() > 0
        if not bad:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_v, gnorm_v, bad

    def _update_device(
        self, total: torch.Tensor, gnorm: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The update with the skip decided on the device, so the host never waits."""
        if self.scaler.is_enabled():
            # fp16: overflowed gradients are the scaler's business (its own found_inf
            # skips them on the device and lowers its scale); only a non-finite loss is
            # a NaN event
            bad = torch.isfinite(total).logical_not_().float()
        else:
            # one fused kernel sets ``bad`` to 1.0 if the loss or the norm is not finite
            # (it also multiplies both by 1.0, which changes nothing)
            bad = torch.zeros((), device=self.device)
            torch._amp_foreach_non_finite_check_and_unscale_([total, gnorm], bad, self._one)
        if self.ctx.enabled:  # every rank must skip the same steps
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.found_inf = bad
            self.optimizer.grad_scale = None
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf, self.optimizer.grad_scale
        self.optimizer.zero_grad(set_to_none=True)
        return total, gnorm, bad

    def _autocast(self) -> Any:
        if self.amp_dtype is None:  # entering a disabled autocast still costs a few us
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _after_scheduler_step(self) -> None:
        o = self.config.optim
        if not (o.reset_moments_at_restart or o.anneal_momentum):
            return
        nxt = self.scheduler.last_epoch
        pos = self.scheduler.schedule.position(nxt)
        if (
            o.reset_moments_at_restart
            and pos.cycle >= 1
            and pos.offset == 0.0
            and pos.phase != "done"
        ):
            for st in self.optimizer.state.values():
                for value in st.values():
                    if torch.is_tensor(value):
                        value.zero_()
        if o.anneal_momentum:
            sched = self.scheduler.schedule
            peak = max(sched.lr_max * sched.peak_decay**pos.cycle, sched.lr_min)
            lr = sched.lr_at(nxt)
            frac = 0.0 if peak <= sched.lr_min else (lr - sched.lr_min) / (peak - sched.lr_min)
            frac = min(1.0, max(0.0, frac))
            lo, hi = o.momentum_range
            beta = hi - (hi - lo) * frac
            for group in self.optimizer.param_groups:
                if "betas" in group:
                    group["betas"] = (beta, group["betas"][1])
                else:
                    group["momentum"] = beta

    # ---------------------------------------------------------------- the host side

    def _drain(self, window: list[_Record]) -> bool:
        """Bring the window's values to the host (one sync for the whole window, if
        they are on the device); run the NaN guard and record the telemetry.

        Returns False when the guard rolled the run back.
        """
        if not window:
            return True
        if self._host_checks:
            values = [w[2:] for w in window]
        else:
            flat = torch.stack([t for w in window for t in w[2:]]).tolist()
            values = [(flat[i], flat[i + 1], flat[i + 2] > 0) for i in range(0, len(flat), 3)]
        limit = self.config.nan_guard.max_consecutive
        for (s, lr, *_), (loss, gnorm, bad) in zip(window, values, strict=True):
            if bad:
                self.state.nan_total += 1
                self.state.consecutive_bad += 1
            else:
                self.state.consecutive_bad = 0
            self.telemetry.record(
                s,
                {
                    "lr": lr,
                    "train_loss": loss,
                    "grad_norm": gnorm,
                    "nan_count": float(self.state.nan_total),
                },
            )
            if self.state.consecutive_bad >= limit:
                self._rollback(s)
                return False
        return True

    def _rollback(self, step: int) -> None:
        g = self.config.nan_guard
        bad = self.state.consecutive_bad
        if self.state.rollbacks >= g.max_rollbacks:
            raise TrainingDiverged(
                f"{bad} consecutive non-finite steps up to step {step} after "
                f"{self.state.rollbacks} rollback(s) with the peak lowered to "
                f"{self.state.lr_scale:g}x lr_max; giving up. The last good checkpoint is "
                f"{self._last_path()}. Lower schedule.lr_max, check the input data, or raise "
                "nan_guard.max_rollbacks."
            )
        ckpt, used, _ = load_latest(self._last_path())
        self.telemetry.discard()
        self._restore(ckpt, keep_counters=True)
        self.state.rollbacks += 1
        self.state.consecutive_bad = 0
        self.state.lr_scale *= g.rollback_factor
        self.scheduler.group_scales = [self.state.lr_scale]
        self.scheduler._apply()
        self._perm_epoch = -1
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

    @torch.inference_mode()
    def _predict(self, cats: torch.Tensor, nums: torch.Tensor) -> np.ndarray:
        self.model.eval()
        self._train_mode = False
        out = []
        size = self.config.eval.rows_per_pass(self.device.type)
        for i in range(0, len(cats), size):
            with self._autocast():
                logits = self.core(cats[i : i + size], nums[i : i + size])
            out.append(logits.float())
        return torch.cat(out).cpu().numpy()

    def _evaluate(self, step: int) -> bool:
        """Validation metrics after ``step``; updates the cycle's best. True if a
        plateau restart was requested (the cycle ends here)."""
        logits = self._predict(*self.valid_t)
        fault_point("evaluation", str(step))  # tests only: predicted, nothing recorded yet
        y = self.data.valid.y
        prob = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        finite = bool(np.isfinite(logits).all())
        val_loss = log_loss(y, prob) if finite else math.nan
        val_auc = roc_auc(y, logits) if finite else math.nan
        cycle = self.scheduler.schedule.cycle_of(step)
        self.state.evals.append([step, cycle, val_loss, val_auc])
        self.telemetry.record(
            step, {"val_loss": val_loss, "val_auc": val_auc, "cycle": float(cycle)}
        )
        self._maybe_best(step, cycle, val_loss, val_auc)
        if self.scheduler.plateau is not None and not math.isnan(val_loss):
            return self.scheduler.observe(val_loss)
        return False

    def _metric(self, val_loss: float, val_auc: float) -> float:
        """Larger is better."""
        return val_auc if self.config.eval.metric == "val_auc" else -val_loss

    def _maybe_best(self, step: int, cycle: int, val_loss: float, val_auc: float) -> None:
        metric = self._metric(val_loss, val_auc)
        if not math.isfinite(metric):
            return  # a NaN evaluation is never a best
        current = self.state.cycle_best.get(cycle)
        if current is not None and (
            current.get("final") or metric <= self._metric(current["val_loss"], current["val_auc"])
        ):
            return
        if not self._params_finite():
            return
        path = self._best_path(cycle)
        lr = float(self.scheduler.schedule.lr_at(step) * self.state.lr_scale)
        sha = ""
        if self.ctx.is_main:
            sha = save_checkpoint(
                path,
                {
                    "kind": "best",
                    **self._identity(),
                    "model": self.core.state_dict(),
                    "cycle": cycle,
                    "step": step,
                    "lr": lr,
                    "metrics": {"val_loss": val_loss, "val_auc": val_auc},
                    "schedule": self.scheduler.schedule.to_dict(),
                    "config": self.config.resolved(),
                    "run_name": self.run_name,
                    "mlflow_run_id": self.telemetry.run_id,
                },
            )
        self.state.cycle_best[cycle] = asdict(
            CycleBest(cycle, step, lr, val_auc, val_loss, str(path.relative_to(self.run_dir)), sha)
        )

    def _close_cycle(self, cycle: int) -> None:
        best = self.state.cycle_best.get(cycle)
        if best is None or best.get("final"):
            return
        best["final"] = True
        if self.ctx.is_main:
            self.telemetry.log_artifact(self.run_dir / best["path"], "checkpoints")
            self.telemetry.set_tags(
                {
                    f"cycle_{cycle}_best_step": best["step"],
                    f"cycle_{cycle}_best_val_auc": f"{best['val_auc']:.6f}",
                }
            )
        log.info(
            "cycle %d closed: best at step %d (val_auc %.4f, val_loss %.4f, lr %.3g)",
            cycle,
            best["step"],
            best["val_auc"],
            best["val_loss"],
            best["lr"],
        )

    def _stop_requested(self) -> str | None:
        budget = self.cost.over_budget if self.ctx.is_main else False
        sigterm, over = self.ctx.any([self._stop == "preempted", budget], self.device)
        if sigterm:
            return "preempted"
        if over:
            return "budget_exhausted"
        return None

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
        }
        finals = [b for b in self.state.cycle_best.values() if b.get("final")]
        best = max(finals, key=lambda b: self._metric(b["val_loss"], b["val_auc"]), default=None)
        result = TrainResult(
            status=status,
            stop_reason=reasons[status],
            run_name=self.run_name,
            run_dir=str(self.run_dir),
            steps_done=self.state.step,
            total_steps=self._total_steps(),
            cycles=sorted(self.state.cycle_best.values(), key=lambda b: b["cycle"]),
            best_cycle=best["cycle"] if best else None,
            nan_count=self.state.nan_total,
            rollbacks=self.state.rollbacks,
            lr_scale=self.state.lr_scale,
            restarts=list(self.scheduler.restarts),
            cost_usd=round(self.cost.usd, 6),
            device_seconds=round(self.cost.seconds, 3),
            device=str(self.device),
            amp=self.amp,
            world_size=self.ctx.world_size,
            mlflow_run_id=self.state.mlflow_run_id,
            data=self.data.describe(),
            schedule=self.schedule.to_dict(),
            schedule_fingerprint=self.schedule.fingerprint(),
            config_hash=self.config.config_hash(),
            definition_hash=self.config.definition_hash(),
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        if self.ctx.is_main:
            self.telemetry.record(max(0, self.state.step - 1), {"cost_usd": result.cost_usd})
            self.telemetry.commit()
            path = self.run_dir / "result.json"
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(result.to_json())
            os.replace(tmp, path)
            # the sender process logs these while this one draws the plot (0.15 s)
            self.telemetry.set_tags(
                {
                    "status": status,
                    "stop_reason": result.stop_reason,
                    "nan_count": result.nan_count,
                    "best_cycle": result.best_cycle,
                }
            )
            self.telemetry.log_artifact(path)
            self.telemetry.log_artifact(self.run_dir / "config.resolved.json")
            curves = self._plot_curves()
            if curves is not None:
                self.telemetry.log_artifact(curves)
        return result

    def _plot_curves(self) -> Path | None:
        from training.plots import plot_training_curves

        records = read_metrics(self.telemetry.metrics_path)
        steps = [r for r in records if "lr" in r]
        if not steps:
            return None
        evals = [r for r in records if "val_loss" in r]
        return plot_training_curves(
            self.scheduler.schedule,
            [r["step"] for r in steps],
            [r["lr"] for r in steps],
            [r["train_loss"] for r in steps],
            [r["step"] for r in evals],
            [r["val_loss"] for r in evals],
            [r["val_auc"] for r in evals],
            self.run_dir / "curves.png",
            best_steps=[b["step"] for b in self.state.cycle_best.values() if b.get("final")],
            title=f"{self.run_name}: lr, losses and validation AUC",
        )

    # ---------------------------------------------------------------- metadata and progress

    def _run_tags(self) -> dict[str, str]:
        return {
            "git_revision": _git_revision(),
            "config_hash": self.config.config_hash()[:16],
            "definition_hash": self.config.definition_hash()[:16],
            "schedule_fingerprint": self.schedule.fingerprint()[:16],
            "data_fingerprint": self.data.fingerprint[:16],
            "dataset": self.spec.name,
            "device": str(self.device),
            "amp": self.amp,
            "world_size": str(self.ctx.world_size),
            **self.config.mlflow.tags,
        }

    def _run_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {f"schedule.{k}": v for k, v in self.schedule.to_dict().items()}
        params["schedule.total_steps"] = self._total_steps()
        params["schedule.cycle_end_steps"] = self._cycle_ends()

        def flatten(prefix: str, obj: Any) -> None:
            if isinstance(obj, dict):
                for k, v in obj.items():
                    flatten(f"{prefix}.{k}" if prefix else k, v)
            else:
                params.setdefault(prefix, obj)

        definition = self.config.definition()
        definition.pop("schedule", None)
        flatten("", definition)
        for k, v in self.data.describe().items():
            params[f"data.{k}"] = v
        return params

    def _cycle_ends(self) -> list[int]:
        if self.schedule.max_cycles is not None:
            return self.schedule.cycle_end_steps()
        return [e for e in self.schedule.cycle_end_steps(64) if e < self._total_steps()]

    def _open_progress(self) -> None:
        mode = self.config.progress
        if not self.ctx.is_main or mode == "off" or (mode == "auto" and not sys.stderr.isatty()):
            self._bar = None
            self._next_log = 0.1
            return
        from tqdm import tqdm

        self._bar = tqdm(
            total=self._total_steps(), initial=self.state.step, unit="step", dynamic_ncols=True
        )

    def _update_progress(self) -> None:
        if not self.ctx.is_main:
            return
        total = self._total_steps()
        last_eval = self.state.evals[-1] if self.state.evals else None
        if self._bar is not None:
            self._bar.total = total
            self._bar.n = self.state.step
            post = {"lr": f"{self.scheduler.get_last_lr()[0]:.2e}", "cost": f"${self.cost.usd:.4f}"}
            if last_eval:
                post["val_auc"] = f"{last_eval[3]:.4f}"
            self._bar.set_postfix(post, refresh=True)
            return
        fraction = self.state.step / max(1, total)
        if fraction >= self._next_log or self.state.step >= total:
            auc = f", val_auc {last_eval[3]:.4f}" if last_eval else ""
            log.info(
                "step %d/%d (%.0f%%), lr %.3g%s, cost %s",
                self.state.step,
                total,
                100 * fraction,
                self.scheduler.get_last_lr()[0],
                auc,
                self.cost.describe(),
            )
            while self._next_log <= fraction:
                self._next_log += 0.1


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
