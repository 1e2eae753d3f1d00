"""The face (SPEC §6): the argument parser (`arguments`), the commands (`main`), the terminal's
progress line and stdout (`terminal`) and the offline `kmsaudit evaluate` of files (`offline`).
Only the CLI turns a KmsAuditError into one line and an exit code. Nothing imports it but
`__main__` and the `kmsaudit` entry point (`kmsaudit.cli:run`).
"""

from __future__ import annotations


def run() -> None:
    """The `kmsaudit` command (pyproject's entry point)."""
    from kmsaudit.cli.main import run as main_run

    main_run()
