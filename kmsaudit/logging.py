"""structlog configuration: JSON lines for services and pipes, readable lines for people."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Never let a secret reach a log line, whatever a caller passes.
_SECRET_KEYS = frozenset(
    {
        "aws_secret_access_key",
        "secret_key",
        "session_token",
        "token",
        "password",
        "webhook_url",
        "url_secret",
        "authorization",
    }
)


def _redact(_: object, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in _SECRET_KEYS:
            event[key] = "[redacted]"
    return event


# How this process logs, for the worker processes of a scan (kmsaudit/run/workers.py) to log alike.
CURRENT: dict[str, object] = {"json_logs": None, "level": "info"}


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def configure(json_logs: bool | None = None, level: str = "info") -> None:
    """Logs go to stderr; stdout is kept for findings."""
    if json_logs is None:
        json_logs = not sys.stderr.isatty()
    CURRENT.update(json_logs=json_logs, level=level)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            # exc_info=True as text in `exception` (JSON): a crashed task's traceback is in its log
            # line (issue #24); the console renderer formats it itself.
            *([structlog.processors.format_exc_info] if json_logs else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # sys.stderr as it is when a line is logged, not when this ran (a test's captured stream,
        # or a CLI that swapped it, may be closed by then).
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("aiobotocore").setLevel(logging.WARNING)
