"""client.connect: every entry point reaches Temporal one way and says so when it cannot."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from client import TemporalUnreachable, connect
from runtime.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
NOWHERE = "127.0.0.1:1"  # a port nothing listens on: refused at once


async def test_connect_to_nowhere_raises_one_named_error() -> None:
    with pytest.raises(TemporalUnreachable) as caught:
        await connect(Settings(temporal_address=NOWHERE))
    assert caught.value.address == NOWHERE
    assert str(caught.value).startswith(f"cannot reach Temporal at {NOWHERE}: ")
    assert "\n" not in str(caught.value)
    assert "tonic" not in str(caught.value)  # the transport's internals stay out


@pytest.mark.parametrize("command", [
    ["worker.py"],
    ["starter.py", "--plan", "examples/demo.yaml"],
    ["-m", "cli", "cancel", "some-task"],
])
async def test_entry_points_report_an_unreachable_temporal_in_one_line_and_exit_2(
    command: list[str],
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "BEESTOWN"))}
    env["TEMPORAL_ADDRESS"] = NOWHERE
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *command, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    text = (out + err).decode()
    assert proc.returncode == 2, text
    assert f"cannot reach Temporal at {NOWHERE}" in text
    assert "Traceback" not in text
    [line] = [ln for ln in err.decode().splitlines() if "Temporal" in ln]
    assert NOWHERE in line
