"""A process's cold start: the heavy SDKs are imported where first used, not at start.

A worker restarted after a crash or a deploy serves again only once its imports are done;
the OpenAI and MCP SDKs alone cost more than a second of them (`python -X importtime`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Imported only when a model call, an MCP server or an e2b sandbox first needs them
# (`hosting.warmup` loads the ones a worker will use once it serves).
DEFERRED = ("openai", "mcp", "mcp_types", "e2b", "e2b_code_interpreter", "playwright")

_LOADED = "print(json.dumps(sorted({m.partition('.')[0] for m in sys.modules})))"


def _loaded_after(code: str, env: dict[str, str] | None = None) -> list[str]:
    out = subprocess.run([sys.executable, "-c", f"import json, sys\n{code}\n{_LOADED}"],
                         cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
                         env=env)
    return list(json.loads(out.stdout))


@pytest.mark.parametrize("module", ["worker", "starter", "cli"])
def test_starting_imports_no_heavy_sdk(module: str) -> None:
    loaded = _loaded_after(f"import {module}")
    assert [m for m in DEFERRED if m in loaded] == []


@pytest.mark.parametrize(("roles", "tools", "warmed"), [
    ("llm", True, ["openai", "mcp"]),
    ("llm", False, ["openai"]),
    ("workflows,sandbox,tools", True, ["mcp"]),
    ("workflows", False, []),
])
def test_a_ready_worker_loads_the_sdks_its_settings_use(
    roles: str, tools: bool, warmed: list[str], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI", "BEESTOWN", "E2B"))}
    env.update(OPENAI_BASE_URL="http://127.0.0.1:9/v1", BEESTOWN_WORKER_ROLES=roles)
    if tools:
        (tmp_path / "tools.json").write_text('{"tools": []}')
        env["BEESTOWN_TOOLS_FILE"] = str(tmp_path / "tools.json")
    loaded = _loaded_after(
        "import threading, worker\n"
        "from hosting.warmup import warm_up\n"
        "from runtime.settings import Settings\n"
        "warm_up(Settings())\n"
        "for t in threading.enumerate():\n"
        "    if t.name == 'beestown-warm-up': t.join()", env=env)
    assert [m for m in ("openai", "mcp") if m in loaded] == warmed


def test_the_build_id_is_cheap_and_follows_the_code(tmp_path: Path) -> None:
    """The worker's build id hashes BeesTown's own source (the SDK's default hashes every
    loaded module's bytecode, ~0.2-0.4 s of each start): another source, another id."""
    import shutil

    from hosting import lifecycle

    first = lifecycle.build_id()
    assert first.startswith("beestown-")
    assert first == lifecycle.build_id()
    copy = tmp_path / "checkout"
    for name in lifecycle._CODE:
        src = Path(lifecycle.__file__).resolve().parent.parent / name
        if src.is_dir():
            shutil.copytree(src, copy / name)
        else:
            shutil.copy(src, copy / name)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from hosting.lifecycle import build_id; print(build_id())")
    same = subprocess.run([sys.executable, "-c", code, str(copy)], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert same == first
    (copy / "workflows" / "task.py").write_text(
        (copy / "workflows" / "task.py").read_text() + "\n# changed\n")
    changed = subprocess.run([sys.executable, "-c", code, str(copy)], capture_output=True,
                             text=True, check=True).stdout.strip()
    assert changed != first
