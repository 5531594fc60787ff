"""The training order of the streamed rows: seeded, dealt to ranks, a function of the step.

Each epoch is a seeded permutation of the units (row groups:
:mod:`training.data.sources`) that hold training rows (``numpy``'s generator seeded
with (seed, epoch), the same on every rank); rank ``r`` of ``W`` takes units
``r::W``, ``data.shuffle_units`` consecutive units at a time,
and shuffles their rows together (seeded with (seed, epoch, rank, window)). The rank's
rows for optimizer step ``s`` are the ``rows_per_step`` rows from position
``s * rows_per_step`` of its endless sequence of epochs: a pure function of the seed
and the step, so a resumed or rolled-back run reads exactly what an uninterrupted one
read, with nothing but the step in the checkpoint (the nanoGPT way). An epoch is
one pass of each rank over its share; shares differ by at most a few units.
Memory: one window (``shuffle_units`` units, preprocessed).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from training.data.spec import DataError

__all__ = ["Arrays", "TrainStream"]

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # categorical codes, numerics, target


class TrainStream:
    """Rank ``rank``'s training rows for each optimizer step, a pure function of
    (seed, step): ``rows(step)`` is the ``rows_per_step`` rows from position
    ``step * rows_per_step`` of the rank's endless sequence of epochs.

    ``group_rows`` holds each unit's training rows; ``load(g)`` reads group ``g``'s
    training rows, preprocessed.
    """

    def __init__(
        self,
        group_rows: np.ndarray,
        load: Callable[[int], Arrays],
        *,
        shuffle_units: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        rows_per_step: int,
    ) -> None:
        self.group_rows, self.load, self.shuffle_units = group_rows, load, shuffle_units
        self.seed, self.rank, self.world = seed, rank, world_size
        self.rows_per_step = rows_per_step
        self.units = np.flatnonzero(group_rows)
        if len(self.units) < world_size:
            raise DataError(
                f"the training rows lie in {len(self.units)} Parquet unit(s), fewer than "
                f"the {world_size} ranks: each rank reads its own; write smaller units"
            )
        self._epoch_rows: list[int] = []  # the rank's rows in each epoch so far
        self._window: tuple[tuple[int, int], Arrays] | None = None

    def windows(self, epoch: int) -> list[list[int]]:
        """The rank's groups in ``epoch``, ``data.shuffle_units`` at a time."""
        order = self.units[np.random.default_rng([self.seed, epoch]).permutation(len(self.units))]
        share = [int(u) for u in order[self.rank :: self.world]]
        size = self.shuffle_units
        return [share[i : i + size] for i in range(0, len(share), size)]

    def _load(self, epoch: int, w: int) -> Arrays:
        if self._window is not None and self._window[0] == (epoch, w):
            return self._window[1]
        parts = [self.load(u) for u in self.windows(epoch)[w]]
        cats, nums, y = (np.concatenate(a) for a in zip(*parts, strict=True))
        perm = np.random.default_rng([self.seed, epoch, self.rank, w]).permutation(len(y))
        arrays = (cats[perm], nums[perm], y[perm])
        self._window = ((epoch, w), arrays)
        return arrays

    def rows(self, step: int) -> Arrays:
        pos, need = step * self.rows_per_step, self.rows_per_step
        epoch = 0
        while True:  # the epoch holding ``pos``
            if epoch == len(self._epoch_rows):
                self._epoch_rows.append(
                    int(sum(self.group_rows[u] for w in self.windows(epoch) for u in w))
                )
            if pos < self._epoch_rows[epoch]:
                break
            pos -= self._epoch_rows[epoch]
            epoch += 1
        out: list[Arrays] = []
        while need:
            for w, window in enumerate(self.windows(epoch)):
                size = int(sum(self.group_rows[u] for u in window))
                if pos >= size:
                    pos -= size
                    continue
                arrays = self._load(epoch, w)
                take = min(need, size - pos)
                out.append(tuple(a[pos : pos + take] for a in arrays))  # type: ignore[arg-type]
                need, pos = need - take, 0
                if not need:
                    break
            epoch += 1
        return tuple(np.concatenate(a) for a in zip(*out, strict=True))  # type: ignore[return-value]
