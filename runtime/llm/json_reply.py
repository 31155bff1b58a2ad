"""The JSON value in a model's reply: strict first, then leniently, by `json_repair`.

Models wrap JSON in prose and fences, and write trailing commas, comments, single quotes or
cut a reply short. ``read_json`` finds the value and says, when it had to be repaired,
what was wrong where (line and column in the reply), so a repair message to the model can
name the real problem::

    reading = read_json(reply.text)      # raises UnreadableJSON
    reading.value, reading.problem       # "line 3, column 41: Expecting property name ..."

Candidates are the fenced blocks, then the whole reply; within one, a JSON value starts at
a bracket outside any JSON string (so ``"code": "x = [3, 5, 8]"`` never yields
``[3, 5, 8]``), and ends at its matching bracket.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import json_repair

__all__ = ["JsonReading", "UnreadableJSON", "extract_json", "read_json"]

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\r?\n(.*?)```", re.DOTALL)
_CLOSE = {"{": "}", "[": "]"}
_LIST_START = re.compile(r"""\s*(?:[\[{"'\]\d-]|true|false|null)""")


class UnreadableJSON(ValueError):
    """A reply holding no JSON value, even read leniently; `errors` says why, one sentence."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors))


@dataclass(frozen=True)
class JsonReading:
    """The value found; `problem` is None when it was strict JSON, else what was repaired."""

    value: Any
    problem: str | None = None


def extract_json(text: str) -> Any:
    """Return the JSON value in a model's reply (raises UnreadableJSON)."""
    return read_json(text).value


def read_json(text: str) -> JsonReading:
    """Return the JSON value in a model's reply, strict if possible, else repaired.

    Raises:
        UnreadableJSON: no candidate holds a JSON object or array.
    """
    regions = [(m.start(1), m.group(1)) for m in _FENCE.finditer(text)] + [(0, text)]
    spans: list[tuple[int, str]] = []  # (offset in the reply, candidate text)
    n_fenced = 0
    for n, (offset, region) in enumerate(regions):
        if n == len(regions) - 1:
            n_fenced = len(spans)
        stripped = region.strip()
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            pass
        else:
            if isinstance(value, dict | list):
                return JsonReading(value)
        spans += [(offset + a, region[a:b]) for a, b in _value_spans(region)]
    strict = []
    for _, cand in spans:
        try:
            strict.append((len(cand), json.loads(cand)))
        except json.JSONDecodeError:
            continue
    if strict:  # the largest strict value: a plan beats a "[1]" in the prose around it
        return JsonReading(max(strict, key=lambda x: x[0])[1])
    if not spans:
        raise UnreadableJSON(["the reply contains no JSON object"])
    # Repair the largest value, in a fence if there is one: outside it, the fence's own
    # backticks and the prose after them would be read into a value cut short.
    fenced = spans[:n_fenced] or spans
    offset, cand = max(fenced, key=lambda s: len(s[1]))
    problem = "not JSON"
    try:
        json.loads(cand)
    except json.JSONDecodeError as e:
        problem = _explain(text, offset, cand, e)
    value = json_repair.loads(cand)
    if not isinstance(value, dict | list) or not value:
        raise UnreadableJSON([f"the reply's JSON cannot be read ({problem})"])
    return JsonReading(value, problem)


def _explain(text: str, offset: int, cand: str, e: json.JSONDecodeError) -> str:
    """Return where a candidate stops being JSON (line and column in the reply) and why,
    naming a trailing comma as such (json says "Expecting property name")."""
    before = cand[:e.pos].rstrip()
    if before.endswith(",") and cand[e.pos:e.pos + 1] in ("}", "]"):
        return (f"{_position(text, offset + len(before) - 1)}: trailing comma before "
                f"'{cand[e.pos]}'")
    return f"{_position(text, offset + e.pos)}: {e.msg}"


def _position(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"line {line}, column {column}"


def _value_spans(text: str) -> Iterator[tuple[int, int]]:
    """Yield (start, end) of each top-level bracketed value in `text`, in order.

    A value never closed runs to the end of the text (a reply cut short) when it opens like
    JSON; a '[' opening prose ("[see below") is skipped.
    """
    i = 0
    while i < len(text):
        if text[i] not in _CLOSE:
            i += 1
            continue
        end = _matching(text, i)
        if end is not None:
            yield i, end
            i = end
        elif text[i] == "{" or _LIST_START.match(text, i + 1):
            yield i, len(text)
            return
        else:
            i += 1


def _matching(text: str, start: int) -> int | None:
    """Return the index after the bracket closing the one at `start`, reading JSON strings
    (brackets inside them do not count), or None when it is never closed."""
    stack = [_CLOSE[text[start]]]
    in_string = escaped = False
    for i in range(start + 1, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in _CLOSE:
            stack.append(_CLOSE[ch])
        elif ch in "]}":
            if ch != stack.pop():
                return None
            if not stack:
                return i + 1
    return None
