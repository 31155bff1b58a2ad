"""A code step's long or binary output: cut visibly, marked `truncated`, kept whole aside.

Before, output past 1,000,000 bytes was cut with no sign of it, and raw bytes (a NUL
among them) made the result write fail and the code run again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client

from models.io import TaskInput
from models.task import Status
from runtime.sandbox import SandboxFactory
from runtime.settings import Settings
from runtime.storable import NUL_SIGN
from runtime.store import Store
from testkit.fake_llm import FakeLLM
from tests.conftest import make_settings, running_workers, temporal_address
from tests.helpers import outcome, plan_of, start_task
from worker import Deps

MiB = 1024 * 1024


async def run_code(
    client: Client, settings: Settings, deps: Deps, code: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one code step to completion; return its subtask row and its artifacts by name."""
    result = await outcome(await start_task(client, settings, TaskInput(plan=plan_of(
        {"id": "c", "type": "code", "code": code}))))
    assert result.status is Status.COMPLETED, result.error
    row = (await Store(deps.pool).list_subtasks(result.task_id))[0]
    blobs = {a["name"]: a for a in row["result"]["artifacts"]}
    return row, blobs


async def test_22_mb_of_stdout_keeps_head_and_tail_and_the_whole_as_an_artifact(
    client: Client, worker: Settings, deps: Deps
) -> None:
    body = "0123456789" * 2_200_000
    row, artifacts = await run_code(
        client, worker, deps, f"import sys\nsys.stdout.write('START\\n' + {body[:10]!r} * 2_200_000"
        " + '\\nEND\\n')")
    result = row["result"]
    written = ("START\n" + body + "\nEND\n").encode()
    assert result["truncated"] is True
    assert result["stdout"].startswith("START\n0123456789")
    assert result["stdout"].endswith("0123456789\nEND\n")
    dropped = len(written) - 1_000_000
    assert f"…[{dropped:,} bytes of stdout dropped here: it was {len(written):,} bytes]…" \
        in result["stdout"]
    assert len(result["stdout"]) < 1_000_100
    assert result["output"] == result["stdout"].rstrip("\n")
    stdout = artifacts["stdout"]
    assert (stdout["size"], stdout["mime"]) == (len(written), "text/plain; charset=utf-8")
    assert await Store(deps.pool).get_blob(stdout["id"]) == written
    assert row["attempts"] == 1


async def test_raw_binary_stdout_is_decoded_with_replacement_and_kept_as_bytes(
    client: Client, worker: Settings, deps: Deps
) -> None:
    row, artifacts = await run_code(
        client, worker, deps, "import sys\nsys.stdout.buffer.write(bytes(range(256)) * 4096)")
    result = row["result"]
    assert result["truncated"] is True
    assert result["stdout"].startswith(NUL_SIGN + "\x01\x02")
    assert "\ufffd" in result["stdout"]
    assert "bytes of stdout dropped here" in result["stdout"]
    raw = artifacts["stdout"]
    assert raw["mime"] == "application/octet-stream"
    assert await Store(deps.pool).get_blob(raw["id"]) == bytes(range(256)) * 4096
    assert row["attempts"] == 1

    # Short binary output is whole inline (decoded) and kept as bytes, not `truncated`.
    row, artifacts = await run_code(
        client, worker, deps, "import sys\nsys.stdout.buffer.write(b'ok\\xff\\x00!')\n"
        "sys.stderr.buffer.write(b'\\xfe')")
    assert row["result"]["truncated"] is False
    assert row["result"]["stdout"] == f"ok\ufffd{NUL_SIGN}!"
    assert row["result"]["stderr"] == "\ufffd"
    assert await Store(deps.pool).get_blob(artifacts["stdout"]["id"]) == b"ok\xff\x00!"
    assert await Store(deps.pool).get_blob(artifacts["stderr"]["id"]) == b"\xfe"


async def test_short_text_output_keeps_no_stream_artifact(
    client: Client, worker: Settings, deps: Deps
) -> None:
    row, artifacts = await run_code(client, worker, deps, "print('hello')")
    assert row["result"]["truncated"] is False
    assert artifacts == {}


@pytest_asyncio.fixture
async def capped_worker(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Settings]:
    """A worker whose settings (from BEESTOWN_OUTPUT_ARTIFACT_MB=1) keep 1 MiB per stream."""
    monkeypatch.setenv("BEESTOWN_OUTPUT_ARTIFACT_MB", "1")
    settings = make_settings(tmp_path, database_url, llm.base_url, temporal_address(client))
    assert settings.output_artifact_mb == 1
    factory = SandboxFactory.from_settings(settings)
    assert factory.limits.raw_output_bytes == MiB
    capped = dataclasses.replace(deps, sandbox=factory)
    async with running_workers(client, settings, capped):
        yield settings


async def test_the_artifact_keeps_the_configured_size_of_the_stream(
    client: Client, capped_worker: Settings, deps: Deps
) -> None:
    row, artifacts = await run_code(client, capped_worker, deps, "print('z' * 3_000_000)")
    assert row["result"]["truncated"] is True
    assert "3,000,001 bytes]" in row["result"]["stdout"]
    assert artifacts["stdout"]["size"] == MiB
    assert await Store(deps.pool).get_blob(artifacts["stdout"]["id"]) == b"z" * MiB
