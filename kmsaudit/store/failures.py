"""What went wrong with the snapshot database, told apart (issue #25): a full disk, a corrupt
file, a file that is not an SQLite database, an SQLite database that is not kmsaudit's, a file
that cannot be opened or written. Each is one line with its fix; none invites deleting a healthy
database (a full disk used to read "not a kmsaudit snapshot database")."""

from __future__ import annotations

import errno
from pathlib import Path

# SQLite's primary result codes (https://sqlite.org/rescode.html); extended codes keep them in the low byte.
SQLITE_PERM, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL = 3, 8, 10, 11, 13
SQLITE_CANTOPEN, SQLITE_NOTADB = 14, 26
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def full_disk(path: Path) -> str:
    return (
        f"{path}: the disk is full (or a quota is reached): nothing was written and the database is "
        f"intact; free space on the filesystem of {path.parent} and run again"
    )


def not_ours(path: Path) -> str:
    return (
        f"{path}: an SQLite database, but not kmsaudit's (no schema version): it is left untouched; "
        "point [store] path at kmsaudit's database or at a new file name"
    )


def describe(path: Path, exc: BaseException, doing: str = "cannot open the snapshot database") -> str:
    """One line for an SQLite or OS error on the database at `path`, with what to do."""
    if isinstance(exc, OSError):
        if exc.errno in _FULL_ERRNOS:
            return full_disk(path)
        return f"{path}: {doing}: {exc.strerror or exc}"
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc)
    if primary == SQLITE_FULL or "database or disk is full" in text:
        return full_disk(path)
    if primary == SQLITE_CORRUPT or "malformed" in text:
        return (
            f"{path}: the database file is corrupt ({text}): restore it from a backup, or move it aside "
            f"(`sqlite3 {path} .recover` may save its history) and the next scan starts a new baseline"
        )
    if primary == SQLITE_NOTADB or "file is not a database" in text:
        return (
            f"{path}: not an SQLite database (another program's file?): it is left untouched; "
            "point [store] path at kmsaudit's database or at a new file name"
        )
    if primary in (SQLITE_READONLY, SQLITE_PERM):
        return f"{path}: {doing}: read-only ({text}): the file, its folder or the filesystem is not writable"
    if primary == SQLITE_CANTOPEN:
        return f"{path}: {doing}: cannot open the file ({text}): check it and its folder"
    if primary == SQLITE_IOERR:
        return f"{path}: {doing}: an I/O error ({text}): check the disk and the filesystem"
    return f"{path}: {doing}: {text}"


__all__ = ["describe", "full_disk", "not_ours"]
