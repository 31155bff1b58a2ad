"""starter.py as a person runs it: exit codes, --json, clear errors."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from runtime.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


async def starter(*args: str, settings: Settings | None = None,
                  extra_env: dict[str, str] | None = None) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "BEESTOWN"))}
    if settings is not None:
        env.update({"TEMPORAL_ADDRESS": settings.temporal_address,
                    "BEESTOWN_TASK_QUEUE": settings.task_queue})
    env.update(extra_env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "starter.py", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_plan_with_json_prints_the_result_and_exits_zero(
    worker: Settings, tmp_path: Path
) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(
        "steps:\n- {id: a, type: tool, tool: echo, args: {value: hi}}\n"
        "- {id: b, type: tool, tool: concat, deps: [a], args: {parts: ['${a}', '!']}}\n")
    rc, out, err = await starter("--plan", str(plan), "--json", "--id", "cli-ok-1",
                                 settings=worker)
    assert rc == 0, err
    result = json.loads(out)
    assert result["task_id"] == "cli-ok-1"
    assert result["status"] == "COMPLETED"
    assert {s["id"]: s["output"] for s in result["subtasks"]} == {
        "cli-ok-1/a": "hi", "cli-ok-1/b": "hi!"}
    assert "namespaces/default/workflows/cli-ok-1/" in err


async def test_failing_plan_exits_non_zero_with_the_error(
    worker: Settings, tmp_path: Path
) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text("steps:\n- {id: a, type: tool, tool: sleep, args: {seconds: 9999}}\n")
    rc, out, _ = await starter("--plan", str(plan), "--json", settings=worker)
    assert rc == 1
    result = json.loads(out)
    assert result["status"] == "FAILED"
    assert "between 0 and 540" in result["error"]


async def test_prompt_without_llm_says_how_to_configure_one() -> None:
    rc, out, err = await starter("write me a poem")
    assert rc == 2
    assert "OPENAI_BASE_URL" in out + err
    assert "--plan" in out + err


async def test_invalid_plan_file_is_refused_before_anything_starts(tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text("steps:\n- {id: a, type: write, deps: [a]}\n")
    rc, out, err = await starter("--plan", str(plan))
    assert rc == 2
    assert "depends on itself" in out + err


async def test_unreachable_temporal_is_reported(tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text("steps:\n- {id: a, type: tool, tool: echo, args: {value: 1}}\n")
    rc, out, err = await starter("--plan", str(plan),
                                 extra_env={"TEMPORAL_ADDRESS": "127.0.0.1:1"})
    assert rc == 2
    assert "cannot reach Temporal" in out + err
