"""The `code` step: run Python in a sandbox session that lives exactly as long as the step."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import mimetypes
from datetime import UTC, datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import metrics
from activities.boundary import boundary
from activities.errors import SANDBOX_UNAVAILABLE
from activities.steps import StepBook, summarize
from models.io import StepOutcome, StepRun
from models.sandbox import CellResult
from models.task import Artifact, Metrics, Result
from runtime.sandbox import SandboxFactory, SandboxInfraError
from runtime.sandbox.notebook import (
    EPILOGUE,
    MAX_ARTIFACT_BYTES,
    RESULT_FILE,
    is_utf8,
    merge_cells,
    prelude,
)

log = logging.getLogger(__name__)

# Locally only: the SDK throttles what reaches the server (see workflows/policies.py).
HEARTBEAT_EVERY_S = 0.5

class CodeActivities:
    """Runs `code` steps; `factory` is None when the sandbox self-test failed on this host."""

    def __init__(
        self, factory: SandboxFactory | None, book: StepBook, *, unavailable: str | None = None
    ) -> None:
        self.factory = factory
        self.book = book
        self.unavailable = unavailable

    @activity.defn(name="run_code_step")
    @boundary
    async def run_code_step(self, run: StepRun) -> StepOutcome:
        """Run the step's code with `inputs` bound; stdout is its output unless it sets `result`."""
        if self.factory is None:
            raise ApplicationError(
                "code steps are refused on this worker because the sandbox is unavailable: "
                f"{self.unavailable or 'no sandbox configured'}",
                type=SANDBOX_UNAVAILABLE,
                non_retryable=True,
            )
        started = datetime.now(UTC)
        if done := await self.book.begin(run):
            return done
        inputs = await self.book.full_inputs(run)
        beat = asyncio.create_task(_heartbeat_forever())
        try:
            session = await self.factory.open()
        except BaseException:
            beat.cancel()
            raise
        metrics.sandbox_opened()
        try:
            setup = await session.run_cell(prelude(inputs))
            if setup.error or setup.timed_out:
                raise SandboxInfraError(f"could not bind inputs: {setup.error}")
            cells: list[CellResult] = []
            for code in run.step.cells:
                cells.append(await session.run_cell(code, on_output=_report_line))
                if cells[-1].error is not None or cells[-1].timed_out:
                    break
            cell = merge_cells(cells)
            value: Any = cell.stdout.rstrip("\n")
            if cell.error is None and not cell.timed_out:
                await session.run_cell(EPILOGUE)
                with contextlib.suppress(FileNotFoundError, OSError):
                    value = json.loads(await session.read_file(RESULT_FILE))
            artifacts = await self._keep_artifacts(run, session, cell)
            streams = await self._keep_streams(run, cell)
        finally:
            beat.cancel()
            try:
                await session.close()
            finally:
                metrics.sandbox_closed()
        error = None
        if cell.timed_out:
            error = "the code timed out"
        elif cell.error is not None:
            error = f"{cell.error.name}: {cell.error.value}"
        result = Result(
            success=error is None,
            output=value,
            summary=summarize(value) if error is None else error,
            stdout=cell.stdout,
            stderr=cell.stderr,
            error=error,
            truncated=cell.stdout_truncated or cell.stderr_truncated,
            artifacts=artifacts + streams,
            metrics=Metrics(files_modified=[a.name for a in artifacts]),
        )
        if cell.error is not None:
            result.stderr = (result.stderr + "\n" + cell.error.traceback).strip()
        outcome = await self.book.finish(run, result=result, started=started)
        if not result.success:
            outcome.detail = result.stderr[-2000:]
        return outcome

    async def _keep_streams(self, run: StepRun, cell: CellResult) -> list[Artifact]:
        """Keep stdout / stderr as written when they were cut or are not UTF-8 text."""
        kept: list[Artifact] = []
        for name, raw, cut in (("stdout", cell.stdout_raw, cell.stdout_truncated),
                               ("stderr", cell.stderr_raw, cell.stderr_truncated)):
            text = is_utf8(raw)
            if not raw or (not cut and text):
                continue
            blob_id = f"{run.subtask_id}/{name}"
            mime = "text/plain; charset=utf-8" if text else "application/octet-stream"
            await self.book.store.save_blob(blob_id, task_id=run.task_id,
                                            subtask=run.subtask_id, name=name, mime=mime,
                                            data=raw)
            kept.append(Artifact(name=name, id=blob_id, mime=mime, size=len(raw)))
        return kept

    async def _keep_artifacts(
        self, run: StepRun, session: Any, cell: CellResult
    ) -> list[Artifact]:
        kept: list[Artifact] = []
        store = self.book.store

        async def keep(name: str, data: bytes, mime: str) -> None:
            blob_id = f"{run.subtask_id}/{hashlib.sha256(name.encode()).hexdigest()[:16]}"
            await store.save_blob(blob_id, task_id=run.task_id, subtask=run.subtask_id,
                                  name=name, mime=mime, data=data)
            kept.append(Artifact(name=name, id=blob_id, mime=mime, size=len(data)))

        for i, rich in enumerate(cell.results):
            if rich.png:
                await keep(f"result-{i}.png", base64.b64decode(rich.png), "image/png")
        for name in await session.list_files():
            if name == RESULT_FILE:
                continue
            data = await session.read_file(name)
            if len(data) > MAX_ARTIFACT_BYTES:
                log.warning("artifact %s of %s is %d bytes; not kept", name, run.subtask_id,
                            len(data))
                continue
            await keep(name, data, mimetypes.guess_type(name)[0] or "application/octet-stream")
        return kept


def _report_line(stream: str, line: str) -> None:
    # Heartbeat details show the latest output line in the Web UI (throttled by the SDK).
    activity.heartbeat({"stream": stream, "line": line[:200]})


async def _heartbeat_forever() -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(HEARTBEAT_EVERY_S)
