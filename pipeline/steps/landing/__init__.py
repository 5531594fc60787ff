"""Landing: batches arrive in the store.

:mod:`.sources` reads an input file (a path or ``s3://``) safely, :mod:`.ingest`
lands a batch's features as a new version (or quarantines what cannot be read),
:mod:`.labels` lands its labels when they arrive later. Imports no other room.
"""
