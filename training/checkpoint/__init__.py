"""Checkpoints: files written atomically, checksummed, loaded strictly.

:mod:`.atomic` is the one atomic write of the project (temporary name, fsync,
rename), :mod:`.files` the checkpoint file format (``weights_only=True``, a
checksum, the ``last``/``last.prev`` pair, fault points for tests), and
:mod:`.payload` what is inside one: a typed, versioned mapping.
"""
