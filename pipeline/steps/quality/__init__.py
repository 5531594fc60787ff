"""Quality: is the data fit to use, and has it moved?

:mod:`.suite` builds the spec's Great Expectations suite and runs it,
:mod:`.gx_results` says each failure in our own words, :mod:`.validation` runs it
on a stored batch (quarantine on failure) and :mod:`.release` lets a quarantined
batch back in; :mod:`.reference` keeps the snapshot a model was trained on,
:mod:`.drift` measures a batch against it (Evidently), :mod:`.live` the champion's
AUC on labels that arrived, and :mod:`.decision` turns both into one retrain
decision; :mod:`.draft` writes a first spec from sample files. Uses the landing room.
"""
