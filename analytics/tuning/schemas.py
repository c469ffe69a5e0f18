"""Request bodies of the suggestions API (pydantic at the boundary only)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AcceptBody", "PinBody", "ReasonBody"]


class ReasonBody(BaseModel):
    """Why an operator rejects or rolls back (kept in the audit log)."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=1000)


class AcceptBody(ReasonBody):
    """`observe` publishes the change with `enforce: false` first; `enforce` makes it bite."""

    mode: Literal["observe", "enforce"] = "observe"


class PinBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=1000)
