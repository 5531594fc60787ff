"""Keys of the object store: what a key or an id may look like, and the store's errors.

Keys are ``/``-separated relative paths (``datasets/flights/batches/2013-03/v1/
features.parquet``); :mod:`pipeline.base.layout` decides them. Every key is
checked: no empty, ``.`` or ``..`` component, no leading ``/``, no backslash or
control character, so a key can never escape the store.
"""

from __future__ import annotations

import re

__all__ = [
    "ID_PATTERN",
    "InvalidKey",
    "ObjectExists",
    "ObjectNotFound",
    "StorageError",
    "check_id",
    "check_key",
    "join_key",
]

_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=+@-]*$")
# a batch, run or snapshot id a user gives (also the DAG params' JSON-schema pattern)
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,99}$"
_ID = re.compile(ID_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class StorageError(Exception):
    """The store could not do what was asked; the message names the key or setting to fix."""


class ObjectNotFound(StorageError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ObjectExists(StorageError):
    """The key already holds an object and the write did not ask to overwrite it."""


class InvalidKey(StorageError, ValueError):
    """A key (or an id that becomes part of one) could escape or confuse the store."""


# ------------------------------------------------------------------------------ keys


def _why_bad(part: str) -> str | None:
    if part == "":
        return "is empty (doubled or trailing '/')"
    if part in (".", ".."):
        return f"{part!r} would leave the store's folder"
    if "\\" in part:
        return "contains a backslash"
    if _CONTROL.search(part):
        return "contains a control character"
    if part.startswith("."):
        return "starts with '.' (reserved for temporary files)"
    if not _COMPONENT.match(part):
        return "may use only letters, digits and _ . = + @ -"
    return None


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise :class:`InvalidKey`."""
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"object key must be a non-empty string, got {key!r}")
    if key.startswith("/"):
        raise InvalidKey(f"object key {key!r} is absolute; keys are relative to the store")
    for part in key.split("/"):
        why = _why_bad(part)
        if why:
            raise InvalidKey(f"object key {key!r}: component {part!r} {why}")
    return key


def check_id(value: str, what: str) -> str:
    """A user-supplied id that becomes one key component (dataset, batch id, snapshot...)."""
    if not isinstance(value, str) or not value:
        raise InvalidKey(f"{what} must be a non-empty string, got {value!r}")
    if "/" in value or "\\" in value or ".." in value:
        raise InvalidKey(
            f"{what} {value!r} may not contain '/', '\\' or '..' (it names one folder of the store)"
        )
    if _CONTROL.search(value):
        raise InvalidKey(f"{what} {value!r} contains a control character")
    if not _ID.match(value):
        raise InvalidKey(
            f"{what} {value!r} must start with a letter or digit and use only letters, digits, "
            "'-', '_', '.' and '=' (at most 100 characters), e.g. 2013-03"
        )
    return value


def join_key(*parts: str) -> str:
    return check_key("/".join(p.strip("/") for p in parts if p))
