"""Exceptions shared across widthlab.

Every error a user can cause derives from :class:`WidthlabError` and carries a message that names
the problem and the fix. The CLI turns :class:`UsageError` into exit code 2 and any other
:class:`WidthlabError` into exit code 1, printing one line and no traceback.
"""

from __future__ import annotations


class WidthlabError(Exception):
    """Base class for errors with a user-facing message."""


class UsageError(WidthlabError, ValueError):
    """The caller asked for something invalid (bad name, bad path, bad combination)."""


class DataError(WidthlabError):
    """A dataset file is missing, corrupt or cannot be obtained."""


class ChecksumError(DataError):
    """A file's decompressed content does not match its known SHA-256."""


class StoreError(WidthlabError):
    """The results store cannot be read or written (read-only, damaged, foreign, disk full)."""


class ReadOnlyStoreError(StoreError):
    """A write was asked of a store on a read-only folder, file or mount."""


class CorruptStoreError(StoreError):
    """The store's database is damaged, empty, or not a widthlab database at all."""


class DiskFullError(StoreError):
    """A write failed because the disk (or quota) is full; nothing half-written was kept."""
