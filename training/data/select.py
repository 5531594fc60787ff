"""Exact order statistics of a column read in passes, in bounded memory.

The streaming path needs two exact quantiles of values it cannot hold: the
chronological cut (the first validation row's timestamp) and each numeric column's
median (what :meth:`~training.data.preprocess.Preprocessor.fit` fills gaps with).
:class:`KthSmallest` finds the k-th smallest of ``n`` int64 keys in a few passes
over them: each pass counts the keys of the range still in question into
:data:`BUCKETS` equal buckets (``np.bincount``) and keeps the one bucket that holds
the k-th, so the range shrinks 4096-fold a pass; once at most :data:`COLLECT` keys
remain in it, one more pass collects them and ``np.partition`` answers. Memory is
the buckets and at most ``COLLECT`` keys; six passes at most for any int64 range.

Floats are selected through :func:`float_keys`, the order-preserving map of a
float64 onto an int64 (the IEEE bits, with the negative ones' magnitude bits
flipped), and mapped back with :func:`key_floats`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BUCKETS", "COLLECT", "KthSmallest", "float_keys", "key_floats"]

BUCKETS = 4096
COLLECT = 1 << 20
_FLIP = np.int64(0x7FFF_FFFF_FFFF_FFFF)


def float_keys(values: np.ndarray) -> np.ndarray:
    """int64 keys in the order of the (non-NaN) float64 ``values``."""
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.int64)
    return np.where(bits < 0, bits ^ _FLIP, bits)


def key_floats(keys: np.ndarray) -> np.ndarray:
    """The inverse of :func:`float_keys`."""
    keys = np.asarray(keys, dtype=np.int64)
    return np.where(keys < 0, keys ^ _FLIP, keys).view(np.float64)


class KthSmallest:
    """The ``k``-th smallest (0-based) of keys in ``[lo, hi]``, fed pass after pass.

    Feed every key of the column once per pass (:meth:`feed`, in any chunks), call
    :meth:`end_pass`, repeat while :attr:`done` is False; then :attr:`value` is the
    answer and :attr:`below` the number of keys smaller than it.
    """

    def __init__(self, k: int, lo: int, hi: int, n: int) -> None:
        if not 0 <= k < n:
            raise ValueError(f"k {k} outside 0..{n - 1}")
        self.k, self.lo, self.hi, self.in_range = k, int(lo), int(hi), n
        self.below = 0  # keys smaller than lo, counted in earlier passes
        self.value: int | None = int(lo) if lo == hi else None
        self._reset()

    @property
    def done(self) -> bool:
        return self.value is not None

    def _reset(self) -> None:
        self._collect = self.in_range <= COLLECT
        self._width = -(-(self.hi - self.lo + 1) // BUCKETS)  # ceil, exact in Python ints
        self._counts = np.zeros(BUCKETS, dtype=np.int64)
        self._kept: list[np.ndarray] = []

    def feed(self, keys: np.ndarray) -> None:
        if self.done:
            return
        keys = keys[(keys >= self.lo) & (keys <= self.hi)]
        if self._collect:
            self._kept.append(keys)
            return
        # offsets from lo fit an unsigned 64-bit integer whatever the range
        offsets = keys.astype(np.uint64) - np.uint64(self.lo & 0xFFFF_FFFF_FFFF_FFFF)
        buckets = (offsets // np.uint64(self._width)).astype(np.int64)
        self._counts += np.bincount(buckets, minlength=BUCKETS)

    def end_pass(self) -> None:
        if self.done:
            return
        k = self.k - self.below
        if self._collect:
            kept = np.concatenate(self._kept) if self._kept else np.zeros(0, np.int64)
            if len(kept) != self.in_range:
                raise RuntimeError("the keys changed between passes")
            self.value = int(np.partition(kept, k)[k])
            self.below += int((kept < self.value).sum())
            return
        cum = np.cumsum(self._counts)
        if cum[-1] != self.in_range:
            raise RuntimeError("the keys changed between passes")
        b = int(np.searchsorted(cum, k, side="right"))  # the bucket holding the k-th
        before = int(cum[b - 1]) if b else 0
        self.below += before
        self.in_range = int(self._counts[b])
        self.lo, self.hi = (
            self.lo + b * self._width,
            min(self.hi, self.lo + (b + 1) * self._width - 1),
        )
        if self.lo == self.hi:
            self.value = self.lo
            return
        self._reset()
