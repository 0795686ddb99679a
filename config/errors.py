"""The root error: an operational failure the user can act on.

Every error raised on an operational path (a broker, catalog or store that cannot be
reached, a process that will not start, a week with no data, a file that cannot be read)
derives from :class:`SandboxError`. The CLI catches it once and prints its message as one
line with exit code 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SandboxError(RuntimeError):
    """An operational failure; its message says what failed and what to do."""
