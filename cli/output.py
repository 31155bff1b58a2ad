"""How commands print: JSON for scripts, statuses in colour, cells cut to fit."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from rich.markup import escape

__all__ = ["STATUS_STYLE", "cut", "emit_json", "rest", "short_when", "styled", "when"]

STATUS_STYLE = {
    "COMPLETED": "green", "FAILED": "red", "BLOCKED": "yellow", "RUNNING": "cyan",
    "CANCELLED": "magenta", "REVIEWING": "blue", "QUEUED": "dim",
}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def emit_json(value: Any) -> None:
    """Write `value` to stdout as one line of JSON (dates, decimals and models made plain)."""
    sys.stdout.write(json.dumps(value, default=_plain) + "\n")


def styled(status: str | None) -> str:
    """Return a status in its colour, as rich markup."""
    if not status:
        return ""
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else status


def when(value: datetime | None) -> str:
    return "" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def rest(width: int, fixed: dict[str, int]) -> int:
    """The width left for one flexible column beside `fixed` ones (3 characters of
    padding and rule around each column)."""
    return max(10, width - sum(fixed.values()) - 3 * (len(fixed) + 1) - 1)


def short_when(value: datetime | None) -> str:
    """Month, day and minute: what fits a column at 80 characters (--json has it all)."""
    return "" if value is None else f"{value:%m-%d %H:%M}"


def cut(text: str | None, n: int = 60) -> str:
    """Return `text` on one line, at most `n` characters, escaped for rich markup."""
    text = (text or "").replace("\n", " ")
    return escape(text if len(text) <= n else text[: n - 1] + "…")

