"""Canary: a new model serves a share of the rows until the evidence decides.

:mod:`.routing` routes rows by a stable hash and scores a batch with champion
and canary (or the canary in shadow), :mod:`.shadow` keeps the evidence a canary
accumulates, :mod:`.sequential` the confidence sequences over it,
:mod:`.verdicts` the review's two decision rules, :mod:`.guardrails` the checks of
its outputs on every scored batch before labels, and :mod:`.review` compares
the arms when labels arrive and acts (promote, roll back, hold, alert).
Uses promotion, the registry and quality.
"""
