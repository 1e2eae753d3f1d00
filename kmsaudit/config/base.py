"""What every settings class stands on: a strict, frozen model (an unknown key is refused) and
the 12-digit account id."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

ACCOUNT_PATTERN = r"^\d{12}$"

AccountId = Annotated[str, Field(pattern=ACCOUNT_PATTERN)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
