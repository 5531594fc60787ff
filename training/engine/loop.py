"""One optimizer step, as the job takes it: batch, forward/backward, clip, update or skip.

In order: draw the global batch (a pure function of the seed, the epoch and the
position in it), forward/backward over the micro-batches (DDP syncs gradients
only on the last), clip, decide whether the step is finite, let the optimizer
apply or skip it. The loss, gradient norm and skip flag are returned as a
:class:`StepRecord`: host values on the CPU (reading a CPU tensor is no sync),
device tensors on an accelerator, which :class:`training.engine.nan_guard.NanGuard`
copies to the host once per window, the only place the loop waits for the device.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from training.checkpoint.files import fault_point
from training.data.order import TrainStream
from training.data.stream import StreamedData
from training.engine.valid_metrics import StreamedMetrics

if TYPE_CHECKING:
    from training.config.train import TrainConfig
    from training.data.dataset import PreparedData
    from training.engine.distributed import DistContext
    from training.engine.runtime import Runtime
    from training.model.network import TabularMLP
    from training.schedule import CosineAnnealingScheduler

__all__ = ["StepRecord", "StepRunner"]

log = logging.getLogger("training.engine.trainer")


class StepRecord(NamedTuple):
    """One optimizer step as the loop holds it until the next host sync."""

    step: int
    lr: float
    loss: float | torch.Tensor
    grad_norm: float | torch.Tensor
    bad: bool | torch.Tensor


class StepRunner:
    """Takes optimizer steps on one model with its data on the compute device.

    ``module`` is the model itself (what is checkpointed and evaluated);
    ``wrapped`` is what the forward pass goes through (the DDP wrapper under
    torchrun, else the module).
    """

    def __init__(
        self,
        config: TrainConfig,
        runtime: Runtime,
        ctx: DistContext,
        data: PreparedData | StreamedData,
        module: TabularMLP,
        optimizer: torch.optim.Optimizer,
        *,
        steps_per_epoch: int,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.ctx = ctx
        self.data = data
        self.module = module
        self.optimizer = optimizer
        self.steps_per_epoch = steps_per_epoch
        device = runtime.device
        self.batch = config.optim.batch_size_for(len(data.train), ctx.world_size)
        self.accum = config.optim.grad_accum_steps
        self.micro = self.batch // (ctx.world_size * self.accum)
        if self.batch != config.optim.batch_size and ctx.is_main:
            log.info(
                "batch of %d rows: optim.batch_size %d halved for %d training rows",
                self.batch, config.optim.batch_size, len(data.train),
            )  # fmt: skip
        self.params = list(module.parameters())  # one list, not a module walk per step
        self.wrapped: torch.nn.Module = (
            DistributedDataParallel(
                module, device_ids=[device.index] if device.type == "cuda" else None
            )
            if ctx.enabled
            else module
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=runtime.amp == "fp16")
        # On the CPU a tensor's value is host memory: reading it is no sync, and deciding
        # on the host whether to skip a step spares the dozen small ops that an on-device
        # skip costs (the optimizer's found_inf alone adds one op per parameter). On an
        # accelerator the skip stays on the device and the host reads the values once per
        # window (NanGuard.drain).
        self.host_checks = device.type == "cpu" and not self.scaler.is_enabled()
        self._one = torch.ones((), device=device)  # the fused finite check's scale
        self._train_mode = False

        self._perm_epoch, self._perm = -1, None
        self.stream: TrainStream | None = None
        if isinstance(data, StreamedData):  # each rank reads its own rows, step by step
            self.stream = data.train_stream(
                config.runtime.seed, ctx.rank, ctx.world_size, self.micro * self.accum
            )
            return
        # in memory, training tensors live on the compute device: one copy, then every
        # batch is a gather on the device, with no host work per step
        self.train_t = [self.put(a) for a in (data.train.cats, data.train.nums, data.train.y)]
        self.valid_t = [self.put(data.valid.cats), self.put(data.valid.nums)]

    def put(self, a: np.ndarray) -> torch.Tensor:
        """Host rows on the compute device (pinned and non-blocking on CUDA)."""
        t = torch.from_numpy(np.ascontiguousarray(a))
        if self.runtime.device.type == "cuda":
            return t.pin_memory().to(self.runtime.device, non_blocking=True)
        return t

    # ---------------------------------------------------------------- the step

    def reset_permutation(self) -> None:
        """Draw the epoch's permutation again (after a rollback moved the step back)."""
        self._perm_epoch = -1

    def params_finite(self) -> bool:
        return bool(torch.stack([torch.isfinite(p).all() for p in self.params]).all())

    def train_mode(self) -> None:
        if not self._train_mode:  # Module.train() walks every submodule: only when it changed
            self.wrapped.train()
            self._train_mode = True

    def eval_mode(self) -> None:
        self.wrapped.eval()
        self._train_mode = False

    def _batch_indices(self, step: int) -> torch.Tensor:
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.config.runtime.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(len(self.data.train), generator=g).to(self.runtime.device)
            self._perm_epoch = epoch
        size = self.batch
        assert self._perm is not None
        return self._perm[pos * size : (pos + 1) * size]

    def _micro_batches(self, step: int) -> list[list[torch.Tensor]]:
        """This rank's (categorical, numeric, target) micro-batches of ``step``."""
        if self.stream is not None:  # streamed: this rank's next rows, a function of the step
            rows = [self.put(a) for a in self.stream.rows(step)]
            return [
                [t[m * self.micro : (m + 1) * self.micro] for t in rows] for m in range(self.accum)
            ]
        idx_all = self._batch_indices(step)
        out = []
        for micro in range(self.accum):
            start = (micro * self.ctx.world_size + self.ctx.rank) * self.micro
            idx = idx_all[start : start + self.micro]
            out.append([t[idx] for t in self.train_t])
        return out

    def step(self, step: int, lr_now: float) -> StepRecord:
        """Forward, backward and (unless the step is bad) the update of ``step``."""
        cfg = self.config
        accum = self.accum
        inject = step in cfg.fault_injection.nan_steps or (
            cfg.fault_injection.nan_above_lr is not None
            and lr_now > cfg.fault_injection.nan_above_lr
        )
        self.train_mode()
        total: torch.Tensor | None = None
        for micro, (cats, nums, y) in enumerate(self._micro_batches(step)):
            if inject:
                nums = torch.full_like(nums, float("nan"))
            sync_ctx = (
                self.wrapped.no_sync()  # type: ignore[operator]
                if self.ctx.enabled and micro < accum - 1
                else contextlib.nullcontext()
            )
            with sync_ctx:
                with self.runtime.autocast():
                    logits = self.wrapped(cats, nums)
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
        if self.host_checks:
            return StepRecord(step, lr_now, *self._update_host(total, gnorm))
        return StepRecord(step, lr_now, *self._update_device(total, gnorm))

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
            bad = torch.zeros((), device=self.runtime.device)
            torch._amp_foreach_non_finite_check_and_unscale_([total, gnorm], bad, self._one)
        if self.ctx.enabled:  # every rank must skip the same steps
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            opt: Any = self.optimizer
            opt.found_inf = bad
            opt.grad_scale = None
            try:
                opt.step()
            finally:
                del opt.found_inf, opt.grad_scale
        self.optimizer.zero_grad(set_to_none=True)
        return total, gnorm, bad

    def after_scheduler_step(self, scheduler: CosineAnnealingScheduler) -> None:
        """Optional: reset the optimizer's moments at a restart, anneal momentum/beta1
        inversely to the rate (``optim.reset_moments_at_restart``, ``anneal_momentum``)."""
        o = self.config.optim
        if not (o.reset_moments_at_restart or o.anneal_momentum):
            return
        nxt = scheduler.last_epoch
        pos = scheduler.schedule.position(nxt)
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
            sched = scheduler.schedule
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

    # ---------------------------------------------------------------- evaluation

    def validate(self) -> tuple[float, float]:
        """(val_loss, val_auc) of the validation rows; streamed a row group at a time
        (:class:`~training.engine.valid_metrics.StreamedMetrics`: 5 bytes a row)."""
        metrics = StreamedMetrics()
        if not isinstance(self.data, StreamedData):  # one chunk: metrics_from_logits's values
            metrics.add(self.data.valid.y, self.predict(*self.valid_t))
            return metrics.result()
        for cats, nums, y in self.data.valid_chunks():
            metrics.add(y, self.predict(self.put(cats), self.put(nums)))
        return metrics.result()

    @torch.inference_mode()
    def predict(self, cats: torch.Tensor, nums: torch.Tensor) -> np.ndarray:
        """Logits for rows on the device, ``eval.batch_size`` rows per forward pass."""
        self.eval_mode()
        out = []
        size = self.config.eval.rows_per_pass(self.runtime.device.type)
        for i in range(0, len(cats), size):
            with self.runtime.autocast():
                logits = self.module(cats[i : i + size], nums[i : i + size])
            out.append(logits.float())
        return torch.cat(out).cpu().numpy()
