"""The E2B adapter against the SDK's real types, with a stand-in for the network side.

E2B is unreachable here: ``FakeAsyncSandbox`` replaces ``AsyncSandbox`` only, and hands
back the SDK's own ``Execution``/``Logs``/``Result``/``ExecutionError``/``OutputMessage``/
``EntryInfo`` objects and raises its own exception classes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

import e2b_code_interpreter as sdk
import pytest
from e2b_code_interpreter.models import Execution, ExecutionError, Logs, OutputMessage, Result

from models.sandbox import SandboxLimits
from runtime.sandbox import SandboxInfraError, SandboxUnavailable
from runtime.sandbox.e2b_backend import WORKDIR, E2BSession, classify


class FakeFiles:
    def __init__(self) -> None:
        self.store: dict[str, bytes] = {}

    async def write(self, path: str, data: bytes) -> None:
        self.store[path] = data

    async def read(self, path: str, format: str = "text") -> bytearray:
        if path not in self.store:
            raise sdk.FileNotFoundException(f"{path} not found")
        return bytearray(self.store[path])

    async def list(self, path: str, depth: int = 1) -> list[Any]:
        def entry(p: str, kind: Any) -> Any:
            return sdk.EntryInfo(name=p.rsplit("/", 1)[-1], type=kind, path=p, metadata=None,
                                 size=0, mode=0o644, permissions="rw-r--r--", owner="user",
                                 group="user", modified_time=datetime.now())
        return [entry(p, sdk.FileType.FILE) for p in self.store] + [
            entry(f"{path}/sub", sdk.FileType.DIR)]


class FakeAsyncSandbox:
    created: ClassVar[list[dict[str, Any]]] = []
    create_error: ClassVar[BaseException | None] = None
    script: ClassVar[list[Execution | BaseException]] = []

    def __init__(self) -> None:
        self.files = FakeFiles()
        self.killed = False
        self.calls: list[dict[str, Any]] = []

    @classmethod
    async def create(cls, **kwargs: Any) -> FakeAsyncSandbox:
        cls.created.append(kwargs)
        if cls.create_error is not None:
            raise cls.create_error
        return cls()

    async def run_code(self, code: str, *, language: str | None = None,
                       on_stdout: Callable[[OutputMessage], Any] | None = None,
                       on_stderr: Callable[[OutputMessage], Any] | None = None,
                       timeout: float | None = None,  # noqa: ASYNC109 - the SDK signature
                       **kwargs: Any) -> Execution:
        self.calls.append({"code": code, "timeout": timeout, **kwargs})
        if "os.chdir" in code:
            return Execution()
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        for line in step.logs.stdout:
            if on_stdout:
                on_stdout(OutputMessage(line, 0, False))
        for line in step.logs.stderr:
            if on_stderr:
                on_stderr(OutputMessage(line, 0, True))
        return step

    async def kill(self) -> bool:
        self.killed = True
        return True


@pytest.fixture(autouse=True)
def _reset() -> None:
    FakeAsyncSandbox.created = []
    FakeAsyncSandbox.create_error = None
    FakeAsyncSandbox.script = []


async def _session(limits: SandboxLimits | None = None) -> E2BSession:
    return await E2BSession.start(api_key="k", limits=limits or SandboxLimits(),
                                  sandbox_cls=FakeAsyncSandbox)


async def test_create_passes_no_host_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "host-secret")
    s = await _session()
    kwargs = FakeAsyncSandbox.created[0]
    assert kwargs["envs"] == {}
    assert kwargs["api_key"] == "k"
    assert kwargs["allow_internet_access"] is False
    assert "host-secret" not in repr(kwargs)
    await s.close()


async def test_execution_maps_to_cell_result() -> None:
    FakeAsyncSandbox.script = [Execution(
        results=[Result(text="42", is_main_result=True),
                 Result(png="iVBORw0KGgo=", text="<Figure>"), Result(html="<b>x</b>")],
        logs=Logs(stdout=["a\n", "b\n"], stderr=["warn\n"]))]
    s = await _session()
    seen: list[tuple[str, str]] = []
    result = await s.run_cell("x", on_output=lambda n, line: seen.append((n, line)))
    assert result.stdout == "a\nb\n"
    assert result.stderr == "warn\n"
    assert [r.text for r in result.results] == ["42", "<Figure>", None]
    assert result.results[1].png == "iVBORw0KGgo="
    assert result.results[2].data == {"text/html": "<b>x</b>"}
    assert seen == [("stdout", "a"), ("stdout", "b"), ("stderr", "warn")]
    assert result.error is None
    assert not result.timed_out


async def test_user_error_is_a_result() -> None:
    FakeAsyncSandbox.script = [Execution(error=ExecutionError("ZeroDivisionError",
                                                              "division by zero", "Traceback…"))]
    result = await (await _session()).run_cell("1/0")
    assert result.error is not None
    assert (result.error.name, result.error.traceback) == ("ZeroDivisionError", "Traceback…")


async def test_output_is_capped() -> None:
    FakeAsyncSandbox.script = [Execution(logs=Logs(stdout=["x" * 600, "y" * 600]))]
    s = await _session(SandboxLimits(output_bytes=1000))
    result = await s.run_cell("print")
    assert result.stdout_truncated
    assert result.stdout_dropped == 200
    assert result.stdout.startswith("x" * 500)
    assert result.stdout.endswith("y" * 500)
    assert "200 bytes of stdout dropped" in result.stdout


async def test_execution_timeout_is_timed_out_and_keeps_the_session() -> None:
    from e2b_code_interpreter.exceptions import format_execution_timeout_error

    FakeAsyncSandbox.script = [format_execution_timeout_error(), Execution(
        results=[Result(text="1", is_main_result=True)])]
    s = await _session(SandboxLimits(wall_s=3))
    result = await s.run_cell("while True: pass")
    assert result.timed_out
    assert result.error is not None
    assert result.error.name == "CellTimeout"
    assert (await s.run_cell("1")).results[0].text == "1"


@pytest.mark.parametrize(("exc", "kind"), [
    (sdk.AuthenticationException("401: Unauthorized"), SandboxUnavailable),
    (sdk.NotFoundException("template not found"), SandboxUnavailable),
    (sdk.SandboxException("403: forbidden", status_code=403), SandboxUnavailable),
    (sdk.RateLimitException("429: Rate limit exceeded"), SandboxInfraError),
    (sdk.SandboxException("502: bad gateway", status_code=502), SandboxInfraError),
    (sdk.TimeoutException("Request timed out"), SandboxInfraError),
    (ConnectionError("connection refused"), SandboxInfraError),
])
async def test_create_failures_are_classified(exc: BaseException, kind: type) -> None:
    FakeAsyncSandbox.create_error = exc
    with pytest.raises(kind):
        await _session()


@pytest.mark.parametrize("exc", [
    sdk.TimeoutException("Request timed out"),
    sdk.SandboxNotRunningException("The sandbox was killed"),
    sdk.NotFoundException("sandbox was not found"),
    sdk.SandboxException("500: internal", status_code=500),
])
async def test_failures_during_a_cell_are_retryable_and_lose_the_session(
        exc: BaseException) -> None:
    FakeAsyncSandbox.script = [exc]
    s = await _session()
    with pytest.raises(SandboxInfraError):
        await s.run_cell("1")
    with pytest.raises(SandboxInfraError, match="lost"):
        await s.run_cell("1")


def test_authentication_is_permanent_anywhere() -> None:
    assert isinstance(classify(sdk.AuthenticationException("no key")), SandboxUnavailable)


async def test_files_roundtrip_under_the_work_dir() -> None:
    s = await _session()
    await s.write_file("out/a.csv", b"1,2")
    assert await s.read_file("out/a.csv") == b"1,2"
    assert await s.list_files() == ["out/a.csv"]
    with pytest.raises(FileNotFoundError):
        await s.read_file("nope")
    with pytest.raises(ValueError, match="inside the work dir"):
        await s.write_file("../../etc/x", b"")
    assert WORKDIR.startswith("/home/user")


async def test_close_kills_once_and_refuses_cells() -> None:
    s = await _session()
    sbx = s._sbx
    async with s:
        pass
    await s.close()
    assert sbx.killed
    with pytest.raises(SandboxInfraError, match="closed"):
        await s.run_cell("1")
