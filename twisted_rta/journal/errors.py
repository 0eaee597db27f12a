"""The journal's exceptions (``log`` re-exports them with the ``Journal``)."""

from __future__ import annotations


class JournalFull(Exception):
    """The append would take the journal past its ``max_bytes``."""


class JournalWriteError(Exception):
    """The OS refused a write, a new segment or an fsync (ENOSPC, EIO, ...); the message
    says why. A refused append left nothing in the journal."""


class JournalCorrupt(Exception):
    """Replay found a record that no longer checks out (the file changed after the scan at
    open validated it)."""
