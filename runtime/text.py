"""Text for people: a value said in one line."""

from __future__ import annotations

import json
from typing import Any


def summarize(value: Any, *, limit: int = 200) -> str:
    """Return `value` (text, or JSON of it) on one line, cut to `limit` characters with '…'."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
