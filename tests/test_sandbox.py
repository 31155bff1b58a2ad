"""The local sandbox as a notebook: state, rich results, errors, timeouts, files, streams."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest

from models.sandbox import SandboxLimits
from runtime.sandbox import (
    CodeSession,
    SandboxFactory,
    SandboxInfraError,
    SandboxUnavailable,
    isolation,
)
from runtime.sandbox import local as local_mod
from runtime.sandbox.isolation import classify_start_failure
from tests.sandbox_conftest_helpers import (  # noqa: F401 - fixtures
    TEST_LIMITS,
    factory_fixture,
    local,
    processes_of_uid,
    session_fixture,
)


async def test_variables_and_imports_persist_between_cells(session: CodeSession) -> None:
    await session.run_cell("import math\nx = 20")
    result = await session.run_cell("y = x + 1\nmath.floor(y * 2.5)")
    assert result.error is None
    assert [r.text for r in result.results] == ["52"]


async def test_last_expression_is_a_text_result_unless_silenced(session: CodeSession) -> None:
    shown = await session.run_cell("'a' * 3")
    silenced = await session.run_cell("'a' * 3;")
    none = await session.run_cell("None")
    assert [r.text for r in shown.results] == ["'aaa'"]
    assert silenced.results == []
    assert none.results == []


async def test_display_and_repr_html_give_rich_results(session: CodeSession) -> None:
    result = await session.run_cell(
        "class T:\n"
        "    def _repr_html_(self): return '<b>t</b>'\n"
        "    def __repr__(self): return 'T()'\n"
        "display(1, 2)\n"
        "T()")
    assert [r.text for r in result.results] == ["1", "2", "T()"]
    assert result.results[2].data["text/html"] == "<b>t</b>"


async def test_matplotlib_figure_comes_back_as_png(session: CodeSession,
                                                   factory: SandboxFactory) -> None:
    if factory.report.get("batteries") != "yes":
        pytest.skip("batteries env not installed (python -m runtime.sandbox.setup)")
    result = await session.run_cell(
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t');")
    assert result.error is None, result.error
    pngs = [r.png for r in result.results if r.png]
    assert len(pngs) == 1
    assert base64.b64decode(pngs[0]).startswith(b"\x89PNG\r\n\x1a\n")
    # Figures are closed at the end of a cell: the next cell shows none.
    assert (await session.run_cell("1")).results[0].png is None


async def test_pandas_dataframe_has_html(session: CodeSession, factory: SandboxFactory) -> None:
    if factory.report.get("batteries") != "yes":
        pytest.skip("batteries env not installed")
    result = await session.run_cell("import pandas as pd\npd.DataFrame({'a': [1, 2]})")
    assert result.error is None
    assert "<table" in result.results[0].data["text/html"]


async def test_user_exception_is_a_result_and_the_session_goes_on(session: CodeSession) -> None:
    result = await session.run_cell("x = 1\ndef f():\n    return 1 / 0\nf()")
    assert result.error is not None
    assert result.error.name == "ZeroDivisionError"
    assert "<cell-" in result.error.traceback
    assert "return 1 / 0" in result.error.traceback
    assert "runner.py" not in result.error.traceback
    syntax = await session.run_cell("def (")
    assert syntax.error is not None
    assert syntax.error.name == "SyntaxError"
    exited = await session.run_cell("raise SystemExit(3)")
    assert exited.error is not None
    assert exited.error.name == "SystemExit"
    assert (await session.run_cell("x")).results[0].text == "1"


async def test_stdout_stderr_and_subprocess_output_are_captured(session: CodeSession) -> None:
    result = await session.run_cell(
        "import os, sys\nprint('out')\nprint('err', file=sys.stderr)\n"
        "os.system('echo from-shell')\nprint('no newline', end='')")
    assert result.stdout == "out\nfrom-shell\nno newline"
    assert result.stderr == "err\n"


async def test_output_streams_to_the_callback_while_the_cell_runs(session: CodeSession) -> None:
    seen: list[tuple[float, str, str]] = []
    started = time.monotonic()
    result = await session.run_cell(
        "import sys, time\nprint('first')\nprint('warn', file=sys.stderr)\n"
        "time.sleep(0.6)\nprint('last', end='')",
        on_output=lambda stream, line: seen.append((time.monotonic(), stream, line)))
    ended = time.monotonic()
    assert [(s, line) for _, s, line in seen] == [
        ("stdout", "first"), ("stderr", "warn"), ("stdout", "last")]
    assert seen[0][0] - started < ended - started - 0.4  # arrived before the sleep ended
    assert result.stdout == "first\nlast"


async def test_wall_timeout_interrupts_the_cell_and_keeps_the_session(
        session: CodeSession) -> None:
    await session.run_cell("kept = 'yes'")
    result = await session.run_cell("import time\ntime.sleep(3600)", timeout_s=0.5)
    assert result.timed_out  # an hour's sleep came back: it was interrupted
    assert result.error is not None
    assert result.error.name == "CellTimeout"
    # `except Exception` cannot swallow the interrupt.
    looped = await session.run_cell(
        "while True:\n    try:\n        pass\n    except Exception:\n        pass",
        timeout_s=0.5)
    assert looped.timed_out
    assert (await session.run_cell("kept")).results[0].text == "'yes'"


async def test_a_cell_that_ignores_the_interrupt_kills_the_session(session: CodeSession) -> None:
    result = await session.run_cell(
        "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True: pass",
        timeout_s=0.5)
    assert result.timed_out
    with pytest.raises(SandboxInfraError, match="lost"):
        await session.run_cell("1")


async def test_files_roundtrip_and_listing(session: CodeSession) -> None:
    blob = bytes(range(256)) * 40_000  # ~10 MB: several protocol chunks
    await session.write_file("data/blob.bin", blob)
    await session.write_file("empty.txt", b"")
    await session.run_cell("open('made_by_cell.txt', 'w').write('hi')")
    assert await session.read_file("data/blob.bin") == blob
    assert await session.read_file("made_by_cell.txt") == b"hi"
    assert await session.list_files() == ["data/blob.bin", "empty.txt", "made_by_cell.txt"]
    assert (await session.run_cell("len(open('data/blob.bin','rb').read())")).results[0].text \
        == str(len(blob))
    with pytest.raises(FileNotFoundError):
        await session.read_file("missing.txt")
    for bad in ("../escape", "/etc/passwd", "."):
        with pytest.raises(ValueError, match="inside the work dir"):
            await session.write_file(bad, b"x")


async def test_close_is_idempotent_and_a_closed_session_refuses_cells(
        factory: SandboxFactory) -> None:
    s = await factory.open()
    await s.close()
    await s.close()
    with pytest.raises(SandboxInfraError, match="closed"):
        await s.run_cell("1")


async def test_sessions_are_separate_interpreters_and_uids(factory: SandboxFactory) -> None:
    async with await factory.open() as a, await factory.open() as b:
        await a.run_cell("secret = 42")
        result = await b.run_cell("secret")
        assert result.error is not None
        assert result.error.name == "NameError"
        if local(a).plan.per_session_uid:
            ua, ub = await asyncio.gather(a.run_cell("import os; os.getuid()"),
                                          b.run_cell("import os; os.getuid()"))
            assert ua.results[0].text != ub.results[0].text
            assert int(ua.results[0].text or 0) >= isolation.UID_BASE


async def test_self_test_reports_how_sessions_are_confined(factory: SandboxFactory) -> None:
    await factory.self_test()
    assert factory.report["checks"] == "all held"
    assert "session limits" in factory.report


async def test_missing_bwrap_is_unavailable_with_the_fix() -> None:
    f = SandboxFactory(backend="local", bwrap="/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        await f.self_test()
    with pytest.raises(SandboxUnavailable):
        await f.open()


def test_blocked_namespaces_are_reported_as_unavailable() -> None:
    docker = classify_start_failure(
        "bwrap: No permissions to creating new namespace, likely because the kernel does "
        "not allow non-privileged user namespaces.", 1)
    assert isinstance(docker, SandboxUnavailable)
    assert "seccomp" in str(docker)
    assert isinstance(classify_start_failure("bwrap: setting up uid map: Permission denied", 1),
                      SandboxUnavailable)
    assert isinstance(classify_start_failure("", 137), SandboxInfraError)


async def test_e2b_backend_without_a_key_is_unavailable() -> None:
    with pytest.raises(SandboxUnavailable, match="E2B_API_KEY"):
        await SandboxFactory(backend="e2b").open()
    assert SandboxFactory(backend="auto").backend == "local"
    assert SandboxFactory(backend="auto", e2b_api_key="k").backend == "e2b"


async def test_self_test_fails_when_a_protection_is_removed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = local_mod.bwrap_argv

    def without_netns(plan: isolation.HostPlan, limits: SandboxLimits) -> list[str]:
        return [a for a in real(plan, limits) if a != "--unshare-net"]

    monkeypatch.setattr(local_mod, "bwrap_argv", without_netns)
    with pytest.raises(SandboxUnavailable, match="tcp to host loopback: NOT HELD"):
        await SandboxFactory(backend="local").self_test()


async def test_long_output_keeps_head_and_tail_with_a_marker_and_raw_bytes_aside(
        factory: SandboxFactory) -> None:
    limits = TEST_LIMITS.model_copy(update={"output_bytes": 1000, "raw_output_bytes": 3000})
    async with await factory.open(limits=limits) as s:
        long = await s.run_cell(
            "import sys\nsys.stdout.write('HEAD' + 'm' * 4000 + 'TAIL')\n"
            "sys.stderr.write('short')")
        binary = await s.run_cell("import sys\nsys.stdout.buffer.write(bytes(range(256)))")
    assert long.stdout_truncated
    assert not long.stderr_truncated
    assert long.stdout_dropped == 4008 - 1000
    assert long.stdout.startswith("HEAD" + "m" * 496 + "\n…[3,008 bytes of stdout dropped")
    assert long.stdout.endswith("it was 4,008 bytes]…\n" + "m" * 496 + "TAIL")
    assert long.stdout_raw == (b"HEAD" + b"m" * 4000 + b"TAIL")[:3000]  # up to the keep
    assert (long.stderr, long.stderr_raw) == ("short", b"short")
    # Raw bytes that are not UTF-8 are decoded with replacement, and kept as written.
    assert binary.error is None
    assert not binary.stdout_truncated
    assert binary.stdout == bytes(range(256)).decode("utf-8", errors="replace")
    assert binary.stdout_raw == bytes(range(256))
