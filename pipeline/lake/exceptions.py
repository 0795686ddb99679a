"""Errors of the lakehouse package."""

from __future__ import annotations

from config.errors import SandboxError


class LakeError(SandboxError):
    """An operational lakehouse failure the user can act on (printed as one line)."""


class CatalogConfigError(LakeError):
    """The catalog settings do not describe a usable catalog."""


class TableMissingError(LakeError):
    """A table the command reads does not exist yet (run the sink first)."""


class CatalogUnreachableError(LakeError):
    """The catalog (a REST server, the SQLite file's folder, the object store) does not answer."""


class SinkError(LakeError):
    """A sink cannot go on: a fatal consumer error, or commit conflicts that do not stop."""
