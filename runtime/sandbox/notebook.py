"""A code step as notebook cells: the cells BeesTown wraps around the user's code, and one
result for all of a step's cells."""

from __future__ import annotations

import json
from typing import Any

from models.sandbox import CellResult

RESULT_FILE = ".beestown_result.json"
# Files the code leaves in its work dir are kept as artifacts up to this size each.
MAX_ARTIFACT_BYTES = 20 * 1024 * 1024
_PRELUDE = """import json as _bt_json
inputs = _bt_json.loads({payload})
del _bt_json
"""
# Publishes the JSON value of a `result` variable, if the code set one.
EPILOGUE = f"""
def _bt_publish():
    import json
    g = globals()
    if 'result' in g:
        try:
            text = json.dumps(g['result'])
        except (TypeError, ValueError):
            text = json.dumps(repr(g['result']))
        with open({RESULT_FILE!r}, 'w') as f:
            f.write(text)
_bt_publish()
del _bt_publish
"""



def prelude(inputs: dict[str, Any]) -> str:
    """Return the cell that binds `inputs` (the dependencies' outputs) before the code runs."""
    return _PRELUDE.format(payload=repr(json.dumps(inputs)))


def merge_cells(cells: list[CellResult]) -> CellResult:
    """Return one result for a step's cells: streams joined, the last error, every display."""
    merged = CellResult()
    for c in cells:
        merged.stdout += c.stdout
        merged.stderr += c.stderr
        merged.results += c.results
        merged.error = c.error or merged.error
        merged.timed_out = merged.timed_out or c.timed_out
        merged.stdout_truncated = merged.stdout_truncated or c.stdout_truncated
        merged.stderr_truncated = merged.stderr_truncated or c.stderr_truncated
        merged.stdout_dropped += c.stdout_dropped
        merged.stderr_dropped += c.stderr_dropped
        merged.stdout_raw += c.stdout_raw
        merged.stderr_raw += c.stderr_raw
        merged.duration_ms += c.duration_ms
    return merged


def is_utf8(data: bytes) -> bool:
    """Tell whether `data` is valid UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
