"""What PostgreSQL can hold: every value BeesTown writes passes ``storable`` first.

PostgreSQL refuses two kinds of text that Python strings (and so tool arguments, code
output, model replies, titles, error texts) may carry:

- the NUL character U+0000, in ``text`` and in ``jsonb`` (``\\u0000``): asyncpg raises
  ``CharacterNotInRepertoireError`` / ``UntranslatableCharacterError``;
- lone UTF-16 surrogates (U+D800..U+DFFF, from JSON such as ``"\\ud800"`` or from bytes
  decoded with ``surrogateescape``): they cannot be encoded as UTF-8 at all.

``storable`` replaces them *visibly* instead of failing the write: NUL becomes
U+2400 SYMBOL FOR NULL (``␀``, one character, so lengths and offsets stay put and no
backslash sequence a user wrote can be mistaken for it) and a lone surrogate becomes
U+FFFD REPLACEMENT CHARACTER. ``bytes`` pass untouched (``bytea`` holds any byte: raw
output is kept that way, as a blob). The store's connections apply it to every query
parameter (``runtime.db.StorableConnection``), so no call site needs to remember it.

JSON has no NaN or infinity and ``jsonb`` refuses them: ``storable_json`` (the jsonb
encoder) writes them as ``null``, as pydantic does in JSON mode.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["NUL_SIGN", "StoreRefused", "storable", "storable_json", "storable_text"]

NUL_SIGN = "\u2400"  # what a NUL character is stored as
_SURROGATE = re.compile("[\ud800-\udfff]")


class StoreRefused(ValueError):
    """PostgreSQL refused a value itself (SQLSTATE class 22, data exception): permanent.

    Writing the same value again cannot succeed, so a caller must not retry (and, above
    all, must not redo the work that produced it).
    """


def storable_text(text: str) -> str:
    """Return `text` with NUL as U+2400 and lone surrogates as U+FFFD (same object if clean)."""
    if "\x00" in text:
        text = text.replace("\x00", NUL_SIGN)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _SURROGATE.sub("\ufffd", text)
    return text


def storable(value: Any) -> Any:
    """Return `value` with every string in it (dict keys too) made storable.

    Strings, lists, tuples and dicts are walked; anything else (numbers, bytes, dates,
    None) is returned as it is.
    """
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    if isinstance(value, tuple):
        return tuple(storable(v) for v in value)
    return value


def storable_json(value: Any) -> str:
    """Return `value` as JSON text ``jsonb`` accepts (non-finite numbers become null)."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
