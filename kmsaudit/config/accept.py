"""Acceptance entries (README "Accepting known access"): `[[accept]]` tables of the config and
of the files `[acceptance] files` names, and the bounds on them."""

from __future__ import annotations

import re
from datetime import date
from typing import Literal

from pydantic import Field, field_validator, model_validator

from kmsaudit.config.base import Strict

ACCEPT_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
AccessLevel = Literal["public", "potential", "effective"]
_NOT_PUBLIC: tuple[AccessLevel, ...] = ("potential", "effective")
_KEY_FORMS = re.compile(r"^(arn:[^\s]{1,2000}|alias/[\w/+=,.@:-]{1,250}|tag:[^=\s]{1,128}=.{0,256})$")
# `*` is matched literally (the principal of a `"*"` statement's finding), as is a service principal.
_PRINCIPAL_FORMS = re.compile(
    r"^(arn:[^\s]{1,2000}|\d{12}|\*|org:o-[a-z0-9]{10,32}|[a-z0-9][a-z0-9.-]{0,200}\.amazonaws\.com(\.cn)?)$"
)


class AcceptSettings(Strict):
    """One piece of known-good access (README "Accepting known access"): narrow, owned, reasoned
    and expiring. A finding is accepted when it is within every bound here."""

    id: str = Field(pattern=ACCEPT_ID)
    keys: list[str] = Field(min_length=1, max_length=1000)  # key ARN globs, alias/NAME, tag:KEY=VALUE
    principals: list[str] = Field(min_length=1, max_length=1000)  # ARN globs, account id, org:o-…, service, "*"
    actions: list[str] = Field(min_length=1, max_length=100)  # the most it accepts (kms:Decrypt, kms:Get*)
    access: list[AccessLevel] = Field(default_factory=lambda: list(_NOT_PUBLIC), min_length=1)
    conditional: bool | None = None  # true: only while the access stays conditional
    allow_public: bool = False
    reason: str = Field(min_length=1, max_length=500)
    owner: str = Field(min_length=1, max_length=200)
    expires: date  # a TOML date (2027-06-30) or such a string; required
    ticket: str | None = Field(None, max_length=200)

    @field_validator("keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        for key in value:
            if not _KEY_FORMS.match(key):
                raise ValueError(f"{key[:80]!r} is not a key ARN (glob), alias/NAME or tag:KEY=VALUE")
        return value

    @field_validator("principals")
    @classmethod
    def _principals(cls, value: list[str]) -> list[str]:
        for principal in value:
            if not _PRINCIPAL_FORMS.match(principal):
                raise ValueError(
                    f"{principal[:80]!r} is not a principal ARN (glob), an account id, org:o-…, "
                    'a service principal (logs.amazonaws.com) or "*"'
                )
        return value

    @field_validator("actions")
    @classmethod
    def _actions(cls, value: list[str]) -> list[str]:
        from kmsaudit.evaluator.actions import pattern_mask

        for action in value:
            if not pattern_mask(action):
                raise ValueError(f"{action[:80]!r} matches no KMS action")
        return value

    @model_validator(mode="after")
    def _public(self) -> AcceptSettings:
        if "public" in self.access and not self.allow_public:
            raise ValueError(f"entry {self.id!r} accepts public access: set allow_public = true if that is meant")
        return self


class AcceptanceSettings(Strict):
    files: list[str] = Field(default_factory=list, max_length=100)  # more [[accept]] tables, one file each
    max_days: int = Field(365, ge=1, le=3650)  # how far ahead `expires` may be


class AcceptFile(Strict):
    accept: list[AcceptSettings] = Field(default_factory=list, max_length=100_000)
