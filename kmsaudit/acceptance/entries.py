"""`kmsaudit accept FINDING_ID`: the narrowest acceptance entry for a finding, as TOML, and with
`--write` appended to the acceptance file atomically (README "Accepting known access")."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kmsaudit.config.accept import AcceptSettings
from kmsaudit.config.settings import load_config
from kmsaudit.errors import ConfigError, UsageError


def entry_for(
    finding: dict[str, Any], *, entry_id: str, reason: str, owner: str, expires: date, ticket: str | None
) -> AcceptSettings:
    """That key, that principal, those actions, that access (and conditional, if it is): an entry
    that accepts this finding and nothing wider. Validated as the config would."""
    fields: dict[str, Any] = {
        "id": entry_id,
        "keys": [finding["key_arn"]],
        "principals": [finding["principal"]],
        "actions": list(finding["actions"]),
        "access": [finding["access"]],
        "reason": reason,
        "owner": owner,
        "expires": expires,
    }
    if finding.get("conditional"):
        fields["conditional"] = True
    if finding["access"] == "public":
        fields["allow_public"] = True
    if ticket:
        fields["ticket"] = ticket
    try:
        return AcceptSettings.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        reason = error["msg"].removeprefix("Value error, ")
        raise UsageError(f"cannot accept {finding['id']}: {where + ': ' if where else ''}{reason}") from None


def check_expires(expires: date, max_days: int, today: date | None = None) -> None:
    """`--expires` bounded as the acceptance files are (config/settings.py): on the UTC date."""
    latest = (today or datetime.now(UTC).date()) + timedelta(days=max_days)
    if expires > latest:
        raise UsageError(f"--expires {expires}: more than [acceptance] max_days ({max_days}) ahead (after {latest})")


def to_toml(entry: AcceptSettings) -> str:
    """The entry as one [[accept]] table (JSON strings are valid TOML basic strings)."""
    lines = ["[[accept]]"]
    for name, value in entry.model_dump(exclude_none=True, exclude_defaults=False).items():
        if name == "allow_public" and not value:
            continue
        if isinstance(value, date):
            lines.append(f"{name} = {value.isoformat()}")
        elif isinstance(value, bool):
            lines.append(f"{name} = {'true' if value else 'false'}")
        else:
            lines.append(f"{name} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def append(config_path: Path, text: str) -> Path:
    """Append the entry to the first `[acceptance] files` file, atomically (a temporary file
    renamed over it), then load the whole config again: on any error the file is left as it was."""
    config = load_config(config_path)
    if not config.acceptance.files:
        raise UsageError(
            f'{config_path}: no [acceptance] files to write to: add  [acceptance] files = ["accepted.toml"]  first'
        )
    target = Path(config.acceptance.files[0])
    before = target.read_text(encoding="utf-8") if target.exists() else None
    updated = (before.rstrip("\n") + "\n\n" if before else "") + text
    _replace(target, updated)
    try:
        load_config(config_path)
    except ConfigError:
        if before is None:
            target.unlink()
        else:
            _replace(target, before)
        raise
    return target


def _replace(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o777)
        else:
            os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
