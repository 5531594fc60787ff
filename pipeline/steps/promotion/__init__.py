"""Promotion: which model may serve, decided by rules and by people.

:mod:`.gate` lets a challenger become ``canary`` only when it meets its SLOs
(after a serving smoke test), :mod:`.rules` resolves the gate's floors and the
canary's sample rules for one data set, :mod:`.actions` promotes, rejects or
rolls back, and :mod:`.approval` records a person's answer. Uses the registry.
"""
