"""Where kmsaudit writes a user's file (issue #25): `report --html`, `demo --dir`, `--metrics-textfile`.

One place checks a destination before the work starts and writes it: the folder must exist and
be writable (nothing is created silently), a directory or a socket is refused, each in one line
(UsageError, exit 2). A regular file is replaced atomically (a temporary file in its folder,
renamed over it), and a symbolic link is written through to its target, never replaced by a
file. A character device or a pipe (`/dev/stdout`, a FIFO) is written through as it is: it is
never replaced either.
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kmsaudit.errors import UsageError


@dataclass(frozen=True)
class Destination:
    """A checked file to write: `target` is where the bytes go (a symbolic link's target)."""

    given: str
    option: str
    target: Path
    through: bool  # a character device or a pipe: written as it is, not replaced

    def error(self, detail: str) -> UsageError:
        return UsageError(f"{self.option} {self.given}: {detail}")


def check_folder(folder: str | Path, option: str, given: str | None = None) -> Path:
    """A folder that exists and this user can create files in; UsageError (one line) if not."""
    path = Path(folder)
    name = f"{option} {given if given is not None else folder}"
    if not path.exists():
        raise UsageError(f"{name}: no folder {path} (create it first, or fix the path)")
    if not path.is_dir():
        raise UsageError(f"{name}: {path} is not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{name}: folder {path} is not writable by this user (or is on a read-only filesystem)")
    return path


def check_destination(path: str | Path, option: str) -> Destination:
    """The file `option` names, checked before any work is done (exit 2 with one line if it
    cannot be written)."""
    given = str(path)
    target = Path(os.path.realpath(path))  # through symbolic links: what they point at is written
    try:
        info: os.stat_result | None = target.stat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise UsageError(f"{option} {given}: cannot use: {exc.strerror or exc}") from None
    if info is not None:
        if stat.S_ISDIR(info.st_mode):
            raise UsageError(f"{option} {given}: is a folder; give a file name in it")
        if stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode):
            if not os.access(target, os.W_OK):
                raise UsageError(f"{option} {given}: not writable by this user")
            return Destination(given, option, target, through=True)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{option} {given}: is not a regular file (a socket or a block device)")
        if not os.access(target, os.W_OK):
            raise UsageError(f"{option} {given}: not writable by this user")
    check_folder(target.parent, option, given)
    return Destination(given, option, target, through=False)


def write_file(destination: Destination, data: str | bytes, mode: int = 0o644) -> Path:
    """Write `data` to a checked destination: atomically for a file (a reader never sees half of
    it; its mode `mode` whatever the umask), straight through for a device or a pipe. An OSError
    (a full disk, a folder removed since the check) is one line naming the file (exit 2)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    target = destination.target
    try:
        if destination.through:
            with open(target, "wb") as out:
                out.write(raw)
            return Path(destination.given)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(raw)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, mode)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise destination.error(f"cannot write: {exc.strerror or exc}") from None
    return Path(destination.given)
