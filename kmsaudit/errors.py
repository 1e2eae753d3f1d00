"""The project's own exceptions: library errors are converted into these at the edge."""

from __future__ import annotations


class KmsAuditError(Exception):
    """Base of every error kmsaudit raises on purpose; the CLI prints it as one line."""

    exit_code = 1


class UsageError(KmsAuditError):
    """A user mistake on the command line or in an input file (exit 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """The configuration file is missing, unreadable or invalid (exit 2)."""


class InputFileError(UsageError):
    """An input file of `kmsaudit evaluate` is missing or is not the JSON expected (exit 2)."""


class CollectError(KmsAuditError):
    """Collection from AWS failed for one scope; the reason is kept, other scopes go on."""

    def __init__(self, message: str, *, code: str = "error") -> None:
        super().__init__(message)
        self.code = code


class AccessDenied(CollectError):
    def __init__(self, message: str) -> None:
        super().__init__(message, code="access-denied")


class Throttled(CollectError):
    def __init__(self, message: str) -> None:
        super().__init__(message, code="throttled")


class StoreError(KmsAuditError):
    """The snapshot database could not be read or written."""


class StoreUnusable(StoreError):
    """The configured store path cannot hold kmsaudit's database (a directory, a device, another
    program's file, no database yet for a read command): the user's to fix (exit 2)."""

    exit_code = 2


class StoreBusy(StoreError):
    """Another kmsaudit is writing to the database (exit 2: two writers are configured)."""

    exit_code = 2


class IncompleteSnapshot(StoreError):
    """A snapshot that does not account for every configured scope (SPEC §5): nothing is
    committed, so no scope can read as gone."""


class SnapshotNotFound(StoreError):
    """A snapshot asked for by id is not in the database (exit 2)."""

    exit_code = 2


class AlertError(KmsAuditError):
    """An alert sink could not deliver; the outbox keeps the alert for a later try."""
