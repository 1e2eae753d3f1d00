"""Reading a TOML file and validating it with pydantic, every mistake one clear line naming the
file and the key (SPEC §7): for the config (kmsaudit/config/settings.py) and its acceptance files."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from kmsaudit.errors import ConfigError


def _location(loc: tuple[object, ...], data: object) -> str:
    """`accounts[1].id` from pydantic's location, naming list items by position (from 1)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part + 1}]"
        elif str(part).startswith("function-"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def one_line(text: str, limit: int) -> str:
    """Control characters escaped, newlines included, and the length capped: one clear line."""
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def config_error(path: Path, detail: str) -> ConfigError:
    return ConfigError(f"{one_line(str(path), 300)}: {one_line(detail, 300)}")


def read_toml(path: Path, what: str = "config file") -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise config_error(path, f"no such {what} (see config/example.toml)") from None
    except UnicodeDecodeError as exc:
        raise config_error(path, f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise config_error(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise config_error(path, f"not valid TOML: {exc}") from None
    except RecursionError:
        raise config_error(path, "not valid TOML: values nested too deeply") from None


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: dict[str, Any], path: Path) -> M:
    try:
        return model.model_validate(data)
    except RecursionError:
        raise config_error(path, "values nested too deeply") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _location(tuple(first["loc"]), data)
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise config_error(path, f"{where}: {message}{more}") from None
