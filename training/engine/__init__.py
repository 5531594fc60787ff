"""The engine: the trainer and what it composes.

:mod:`.trainer` runs the job (and :mod:`.run` is its entry in process), taking
optimizer steps with :mod:`.loop` on the device of :mod:`.runtime` (processes:
:mod:`.distributed`); :mod:`.nan_guard` counts non-finite steps and rolls back,
:mod:`.resume` restores from ``last``, :mod:`.bests` keeps every cycle's best
(metrics from :mod:`.metrics`), :mod:`.stopping` decides at cycle ends whether
the next cycle is worth its compute, :mod:`.run_info` says what a run is (tags,
params, curves), and :mod:`.lr_find` is the LR range test.
"""
