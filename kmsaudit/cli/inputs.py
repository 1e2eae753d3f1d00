"""What `kmsaudit evaluate` is handed, checked at the edge by its shape (issue #25).

Every input file goes through `read_input`: the JSON is read, recognized by a small table of the
shapes users actually have on disk (the AWS CLI outputs around a key, a policy document, SARIF,
kmsaudit's own findings), and the kind the option expects is then validated with pydantic. A wrong
kind is one line naming the file and what it looks like instead, exit 2: a wrong file is never an
all-clear (`{}` is not a key policy).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from kmsaudit.config.file import one_line
from kmsaudit.errors import InputFileError

Kind = Literal["key-policy", "grants", "iam", "org"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class _Statement(_Open):
    Effect: str


class _PolicyDocument(_Open):
    Statement: list[_Statement]  # one statement object stands for a list of one
    Version: str | None = None
    Id: str | None = None

    @field_validator("Statement", mode="before")
    @classmethod
    def _one_statement(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value


class _GetKeyPolicy(_Open):
    Policy: str
    PolicyName: str | None = None


class _Grant(_Open):
    GrantId: str
    GranteePrincipal: str
    Operations: list[str]
    KeyId: str | None = None
    Name: str | None = None
    RetiringPrincipal: str | None = None
    IssuingAccount: str | None = None
    Constraints: dict[str, dict[str, str]] | None = None


class _ListGrants(_Open):
    Grants: list[_Grant]


class _Named(_Open):
    Arn: str


class _AuthorizationDetails(_Open):
    UserDetailList: list[_Named] = []
    GroupDetailList: list[_Named] = []
    RoleDetailList: list[_Named] = []
    Policies: list[_Named] = []


class _Account(_Open):
    Id: str
    Arn: str


class _ListAccounts(_Open):
    Accounts: list[_Account]


_DETAILS_LISTS = ("UserDetailList", "GroupDetailList", "RoleDetailList", "Policies")


def _keys(data: Any, *names: str) -> bool:
    return isinstance(data, dict) and any(name in data for name in names)


def _list_of(data: Any, *names: str) -> bool:
    return (
        isinstance(data, list)
        and bool(data)
        and all(isinstance(item, dict) and all(n in item for n in names) for item in data)
    )


# What a file looks like, first match wins: (recognizer, name, description for the user).
_SHAPES: tuple[tuple[Callable[[Any], bool], str, str], ...] = (
    (lambda d: _keys(d, "Statement"), "policy-document", "a policy document"),
    (
        lambda d: isinstance(d, dict) and isinstance(d.get("Policy"), str),
        "get-key-policy",
        "`aws kms get-key-policy` output",
    ),
    (
        lambda d: isinstance(d, dict) and isinstance(d.get("Policy"), dict),
        "iam-get-policy",
        "`aws iam get-policy` output",
    ),
    (lambda d: _keys(d, "PolicyVersion"), "iam-get-policy-version", "`aws iam get-policy-version` output"),
    (lambda d: _keys(d, "KeyMetadata"), "describe-key", "`aws kms describe-key` output"),
    (lambda d: _keys(d, "PolicyNames"), "list-key-policies", "`aws kms list-key-policies` output"),
    (lambda d: _keys(d, "Grants"), "list-grants", "`aws kms list-grants` output"),
    (lambda d: _list_of(d, "GrantId"), "grant-list", "a list of grants"),
    (lambda d: _keys(d, "Keys"), "list-keys", "`aws kms list-keys` output"),
    (lambda d: _keys(d, "Aliases"), "list-aliases", "`aws kms list-aliases` output"),
    (lambda d: _keys(d, "Tags"), "list-resource-tags", "`aws kms list-resource-tags` output"),
    (
        lambda d: _keys(d, *_DETAILS_LISTS),
        "authorization-details",
        "`aws iam get-account-authorization-details` output",
    ),
    (lambda d: _keys(d, "Accounts"), "list-accounts", "`aws organizations list-accounts` output"),
    (lambda d: _keys(d, "Organization"), "describe-organization", "`aws organizations describe-organization` output"),
    (lambda d: _keys(d, "UserId") and _keys(d, "Account"), "caller-identity", "`aws sts get-caller-identity` output"),
    (lambda d: _keys(d, "runs") and _keys(d, "version"), "sarif", "a SARIF log"),
    (lambda d: _list_of(d, "key_arn", "principal"), "findings", "kmsaudit findings (JSON)"),
    (lambda d: d == {}, "empty-object", "an empty JSON object"),
    (lambda d: d == [], "empty-list", "an empty JSON list"),
)

# What each option takes: the shapes it accepts, their models, and how it is named to the user.
_EXPECTED: dict[str, tuple[dict[str, type[BaseModel] | None], str]] = {
    "key-policy": (
        {"policy-document": _PolicyDocument, "get-key-policy": _GetKeyPolicy},
        "a key policy (nor `aws kms get-key-policy` output)",
    ),
    "grants": (
        {"list-grants": _ListGrants, "grant-list": None, "empty-list": None},
        "`aws kms list-grants` output",
    ),
    "iam": ({"authorization-details": _AuthorizationDetails}, "`aws iam get-account-authorization-details` output"),
    "org": ({"list-accounts": _ListAccounts}, "`aws organizations list-accounts` output"),
}


def looks_like(data: Any) -> tuple[str, str]:
    """The shape's name and its description for a user, e.g. ("describe-key", "`aws kms describe-key` output")."""
    for recognize, name, text in _SHAPES:
        if recognize(data):
            return name, text
    if isinstance(data, dict):
        keys = ", ".join(sorted(str(k) for k in data)[:4])
        return "object", f"a JSON object with {keys}{', …' if len(data) > 4 else ''}"
    if isinstance(data, list):
        return "list", "a JSON list"
    return "scalar", f"a JSON {'null' if data is None else type(data).__name__.replace('str', 'string')}"


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "(top level)"


def _validation_line(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and ("[" in p or p in ("list", "dict"))))
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{_location(loc)}: {error['msg']}{more}"


def read_json(path: str, option: str) -> Any:
    """A JSON file, or InputFileError naming the option and the file (exit 2)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputFileError(f"{option} {path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputFileError(f"{option} {path}: not UTF-8 text") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InputFileError(f"{option} {path}: not valid JSON ({one_line(str(exc), 80)})") from None


def check_shape(data: Any, kind: Kind, path: str, option: str) -> str:
    """The shape of `data` if `option` takes it, else InputFileError: one line, what it looks like instead."""
    accepted, expected = _EXPECTED[kind]
    name, text = looks_like(data)
    if name not in accepted:
        raise InputFileError(f"{option} {one_line(path, 200)}: this is {text}, not {expected}")
    model = accepted[name]
    if model is not None:
        try:
            model.model_validate(data)
        except ValidationError as exc:
            raise InputFileError(
                f"{option} {one_line(path, 200)}: {text}, but {one_line(_validation_line(exc), 200)}"
            ) from None
        except RecursionError:
            raise InputFileError(f"{option} {one_line(path, 200)}: nested too deeply") from None
    if name == "grant-list":
        _validate_each(data, path, option)
    if name == "get-key-policy":
        _check_inner_policy(data["Policy"], path, option)
    return name


def _validate_each(items: list[Any], path: str, option: str) -> None:
    try:
        _ListGrants.model_validate({"Grants": items})
    except ValidationError as exc:
        raise InputFileError(f"{option} {one_line(path, 200)}: a list of grants, but {_validation_line(exc)}") from None


def _check_inner_policy(text: str, path: str, option: str) -> None:
    """The policy inside `get-key-policy` output: JSON that is not a policy is refused; text that is
    not JSON at all is the evaluator's (an `unparseable` finding, as a scan reports it)."""
    try:
        inner = json.loads(text)
    except (ValueError, RecursionError):
        return
    name, looks = looks_like(inner)
    if name != "policy-document":
        raise InputFileError(f"{option} {one_line(path, 200)}: its Policy is {looks}, not a key policy")
    try:
        _PolicyDocument.model_validate(inner)
    except ValidationError as exc:
        raise InputFileError(
            f"{option} {one_line(path, 200)}: its Policy is a policy document, but {_validation_line(exc)}"
        ) from None


def read_input(path: str, option: str, kind: Kind) -> Any:
    """The JSON of an input file, checked to be what `option` takes (exit 2 with one line if not)."""
    data = read_json(path, option)
    check_shape(data, kind, path, option)
    return data
