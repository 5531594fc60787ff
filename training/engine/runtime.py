"""Where and how the job computes: device, mixed precision, seeds, determinism."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from training.data.spec import DataError

if TYPE_CHECKING:
    from training.config.train import RuntimeConfig
    from training.engine.distributed import DistContext

__all__ = ["Runtime"]


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp: str  # off | bf16 | fp16
    amp_dtype: torch.dtype | None

    @classmethod
    def setup(cls, rt: RuntimeConfig, ctx: DistContext) -> Runtime:
        """Pick the device and AMP mode; seed torch and set determinism (process-wide)."""
        if rt.device == "cuda" and not torch.cuda.is_available():
            raise DataError("runtime.device is 'cuda' but no CUDA device is available")
        cuda = rt.device == "cuda" or (rt.device == "auto" and torch.cuda.is_available())
        device = torch.device("cuda", ctx.local_rank) if cuda else torch.device("cpu")
        amp = rt.amp
        if amp == "auto":
            amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "off"
        if rt.threads:
            torch.set_num_threads(rt.threads)
        torch.manual_seed(rt.seed)  # same on every rank: RNG states stay interchangeable
        if rt.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=cuda)
            torch.backends.cudnn.benchmark = False
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        return cls(device, amp, dtype)

    def autocast(self) -> Any:
        if self.amp_dtype is None:  # entering a disabled autocast still costs a few us
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)
