"""The command line's terminal: a progress line on stderr while a scan runs, and a stdout that
outlives the reader of its pipe."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = max(1, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def progress_line(counts: dict[str, int], total_scopes: int, elapsed: float | None) -> str:
    """What the progress line says: IAM read, scopes done of the total, keys read, and once a
    scope has finished an estimate of the time left (`elapsed`: since the scopes were planned)."""
    done = counts.get("scopes", 0)
    total = f"/{total_scopes}" if total_scopes else ""
    accounts = counts.get("accounts", 0)
    iam = f"IAM of {counts.get('iam', 0)}/{accounts} accounts, " if accounts else ""
    line = f"scanning: {iam}{done}{total} scopes done, {counts.get('keys', 0)} keys read"
    if elapsed is not None and done and total_scopes > done:
        line += f", about {_duration(elapsed * (total_scopes - done) / done)} left"
    return line


class Progress:
    """One self-rewriting line on a terminal's stderr; nothing when not a terminal."""

    def __init__(self, enabled: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = enabled
        self.counts = {"scopes": 0, "keys": 0}
        self.total_scopes = 0
        self._clock = clock
        self._started: float | None = None
        self._last = 0.0

    def __call__(self, what: str, n: int) -> None:
        """`planned`: the scopes the scan will read, once known; `accounts`: whose IAM it reads;
        `iam`, `scopes`, `keys`: one more of each read."""
        if what == "planned":
            self.total_scopes = n
            self._started = self._clock()
            return
        self.counts[what] = self.counts.get(what, 0) + n
        now = self._clock()
        if self.enabled and (now - self._last > 0.1 or what in ("scopes", "iam")):
            self._last = now
            elapsed = None if self._started is None else now - self._started
            sys.stderr.write("\r" + progress_line(self.counts, self.total_scopes, elapsed) + " ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self._last:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


class Stdout:
    """stdout that outlives its reader: `kmsaudit scan --fail-on high | head -1` still exits 3,
    and stderr still says what failed. Once the pipe is closed, the rest goes to /dev/null."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                self.inner.write(text)
            except BrokenPipeError:
                self._reader_went_away()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.inner.flush()
            except BrokenPipeError:
                self._reader_went_away()

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def isatty(self) -> bool:
        return self.inner.isatty()

    def __getattr__(self, name: str) -> object:  # encoding, fileno…: the real stream's
        return getattr(self.inner, name)

    def _reader_went_away(self) -> None:
        self.gone = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.inner.fileno())  # so that the interpreter's last flush is quiet
        os.close(devnull)
