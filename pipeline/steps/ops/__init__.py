"""Operations: what running the pipeline costs, and what a replay shows.

:mod:`.spend` sums the training spend per calendar month and pauses retrains
over budget; :mod:`.report` writes the replay's one-page HTML report.
Imports no other room.
"""
