"""Validate a YAML document with a pydantic model, naming file:line:column for every problem.

Shared by the agent configuration and the trust policy file, so both read the same way:
``agent.yaml:12:5: sources[0].ref: Input should be a valid string``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from gitdock.specs.yamlpos import Document, format_path

M = TypeVar("M", bound=BaseModel)


def validation_problems(
    exc: ValidationError, doc: Document, filename: str, overridden: Mapping[str, str] | None = None
) -> list[str]:
    """One line per pydantic error, located in ``doc``; ``overridden`` maps top-level keys to the
    environment variable that set them, which is then named instead of a line."""
    overridden = overridden or {}
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        field = format_path(loc)
        pos = doc.locate(loc, prefer_key=err["type"] == "extra_forbidden")
        top = str(loc[0]) if loc else ""
        where = f"${overridden[top]}" if top in overridden else (str(pos) if pos else filename)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key `{loc[-1]}`"
        lines.append(f"{where}: {field}: {msg}" if field else f"{where}: {msg}")
    return lines
