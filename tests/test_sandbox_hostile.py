"""Hostile code against the local sandbox: each test asserts that a protection held.

Every attack is also shown to work (or its target to exist) from the host where that is
not obvious, so a test fails if the protection is removed rather than passing vacuously.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.sandbox import CodeSession, SandboxFactory, SandboxInfraError
from tests.sandbox_conftest_helpers import (  # noqa: F401 - fixtures
    TEST_LIMITS,
    factory_fixture,
    local,
    needs_root,
    processes_of_uid,
    session_fixture,
)

PROJECT = Path(__file__).resolve().parents[1]


def _connect_probe(host: str, port: int) -> str:
    return textwrap.dedent(f"""
        import socket
        try:
            socket.create_connection(({host!r}, {port}), timeout=2).close()
            print("CONNECTED")
        except OSError as e:
            print("refused", e)
    """)


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen(8)
        yield s.getsockname()[1]


def _host_ip() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 1))
        return str(s.getsockname()[0])


def _host_can_connect(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize("port", ["listener", 5432])
async def test_no_tcp_to_host_loopback(session: CodeSession, listener: int,
                                       port: int | str) -> None:
    target = listener if port == "listener" else int(port)
    if not _host_can_connect("127.0.0.1", target):
        pytest.skip(f"nothing listens on 127.0.0.1:{target} on this host")
    result = await session.run_cell(_connect_probe("127.0.0.1", target))
    assert result.stdout.startswith("refused"), result.stdout


async def test_no_tcp_to_host_ip(session: CodeSession, listener: int) -> None:
    ip = _host_ip()
    assert _host_can_connect(ip, listener)
    result = await session.run_cell(_connect_probe(ip, listener))
    assert result.stdout.startswith("refused"), result.stdout


async def test_no_dns(session: CodeSession) -> None:
    result = await session.run_cell(
        "import socket\ntry:\n    print(socket.getaddrinfo('pypi.org', 443))\n"
        "except OSError as e:\n    print('refused', e)")
    assert result.stdout.startswith("refused"), result.stdout


async def test_no_abstract_unix_socket_to_host(session: CodeSession) -> None:
    name = f"\0beestown-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(name)
        server.listen(1)
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(name)  # reachable from the host
        result = await session.run_cell(
            f"import socket\ns = socket.socket(socket.AF_UNIX)\n"
            f"try:\n    s.connect({name!r})\n    print('CONNECTED')\n"
            f"except OSError as e:\n    print('refused', e)")
    assert result.stdout.startswith("refused"), result.stdout


async def test_host_files_are_invisible(session: CodeSession) -> None:
    pyproject = PROJECT / "pyproject.toml"
    assert pyproject.is_file()
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="beestown-marker-") as marker:
        os.chmod(marker.name, 0o644)
        result = await session.run_cell(
            "import os\n"
            f"[os.path.exists(p) for p in ({str(pyproject)!r}, {marker.name!r}, '/root', "
            f"'/etc/passwd', {str(PROJECT)!r})]")
    assert result.results[0].text == "[False, False, False, False, False]"


async def test_etc_shadow_is_unreadable(session: CodeSession) -> None:
    result = await session.run_cell("open('/etc/shadow').read()")
    assert result.error is not None
    assert result.error.name in {"FileNotFoundError", "PermissionError"}


async def test_host_environment_is_not_passed_in(session: CodeSession,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 factory: SandboxFactory) -> None:
    monkeypatch.setenv("BEESTOWN_TEST_SECRET", "s3cr3t")
    async with await factory.open() as fresh:
        result = await fresh.run_cell(
            "import os\n's3cr3t' in repr(dict(os.environ)), os.environ.get('HOME')")
    assert result.results[0].text == "(False, '/home/sandbox')"


async def test_root_and_usr_are_read_only(session: CodeSession) -> None:
    result = await session.run_cell(textwrap.dedent("""
        import os
        out = []
        for p in ('/x', '/usr/x', '/etc/x', '/dev/x', '/proc/x'):
            try:
                open(p, 'w').close()
                out.append('WROTE ' + p)
            except OSError:
                out.append('ro')
        out
    """))
    assert result.results[0].text == str(["ro"] * 5)


async def test_fork_bomb_is_capped_per_session(factory: SandboxFactory) -> None:
    bomb = textwrap.dedent("""
        import os, time
        n, err = 0, None
        try:
            for _ in range(100000):
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                n += 1
        except OSError as e:
            err = type(e).__name__
        (n, err)
    """)
    async with await factory.open() as s:
        result = await s.run_cell(bomb, timeout_s=10)
        n, err = eval(result.results[0].text or "")
        assert err == "BlockingIOError"
        assert n < TEST_LIMITS.pids
        # Another session is not starved by the first one's processes.
        async with await factory.open() as other:
            ok = await other.run_cell("import subprocess\nsubprocess.run(['true']).returncode")
            assert ok.results[0].text == "0"


async def test_infinite_loop_and_sleep_forever_are_interrupted(session: CodeSession) -> None:
    for code in ("while True: pass", "import time\ntime.sleep(10**9)",
                 "import threading\nthreading.Event().wait()"):
        result = await session.run_cell(code, timeout_s=0.5)
        assert result.timed_out, code
    assert (await session.run_cell("1 + 1")).results[0].text == "2"


async def test_cpu_time_is_limited_per_process(factory: SandboxFactory) -> None:
    from models.sandbox import SandboxLimits

    async with await factory.open(limits=SandboxLimits(cpu_s=1, wall_s=20)) as s:
        result = await s.run_cell("while True: pass", timeout_s=20)
    assert result.error is not None
    assert result.error.name == "CPUTimeExceeded"  # the CPU limit, not the 20 s wall


async def test_one_huge_allocation_fails(session: CodeSession) -> None:
    result = await session.run_cell("b = bytearray(4 * 1024**3)")
    assert result.error is not None
    assert result.error.name == "MemoryError"
    assert (await session.run_cell("'alive'")).results[0].text == "'alive'"


async def test_children_cannot_exceed_the_session_memory(factory: SandboxFactory) -> None:
    code = textwrap.dedent("""
        import os, time
        kids = []
        for _ in range(6):
            pid = os.fork()
            if pid == 0:
                x = b'x' * (800 * 1024**2)
                time.sleep(3)
                os._exit(0)
            kids.append(pid)
        statuses = [os.waitpid(p, 0)[1] for p in kids]
        print(sum(1 for s in statuses if os.WIFEXITED(s) and os.WEXITSTATUS(s) == 0))
    """)
    async with await factory.open() as s:
        result = await s.run_cell(code, timeout_s=30)
    if result.error is not None:
        # The kernel may pick the interpreter itself; the session is then lost.
        assert result.error.name == "MemoryError", result.error
    else:
        assert int(result.stdout) <= 1, "more than 1 GiB held by the session"


async def test_output_flood_is_truncated_and_host_memory_stays_flat(
        session: CodeSession) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    lines = 0

    def count(stream: str, line: str) -> None:
        nonlocal lines
        lines += 1

    result = await session.run_cell(
        "import sys\nchunk = 'y' * 999 + '\\n'\nfor _ in range(100_000): sys.stdout.write(chunk)",
        on_output=count, timeout_s=30)
    assert result.error is None
    assert result.stdout_truncated
    assert result.stdout_dropped == 100_000_000 - TEST_LIMITS.output_bytes
    assert f"{result.stdout_dropped:,} bytes of stdout dropped" in result.stdout
    assert len(result.stdout) < TEST_LIMITS.output_bytes + 200  # head, marker, tail
    assert result.stdout_raw == b""  # TEST_LIMITS keep no raw copy
    assert lines <= TEST_LIMITS.output_bytes // 1000 + 1
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 50_000  # 100 MB went through; the host kept a bounded copy
    assert (await session.run_cell("'after'")).results[0].text == "'after'"


async def test_big_files_are_refused(session: CodeSession) -> None:
    result = await session.run_cell(textwrap.dedent("""
        chunk = b'0' * 1024**2
        with open('big.bin', 'wb') as f:
            for _ in range(1024):
                f.write(chunk)
    """))
    assert result.error is not None
    assert "File too large" in result.error.value
    # Many files under the size limit stop at the tmpfs size.
    result = await session.run_cell(textwrap.dedent("""
        import os
        chunk, written = b'0' * 1024**2, 0
        try:
            for i in range(1024):
                with open(f'/tmp/f{i}', 'wb') as f:
                    for _ in range(32):
                        f.write(chunk); written += 1
        except OSError as e:
            print(e.strerror)
        written
    """))
    assert result.stdout.strip() == "No space left on device"
    assert int(result.results[0].text or 0) <= TEST_LIMITS.tmpfs_mb


_DAEMON = textwrap.dedent("""
    import os, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execvp('sleep', ['sleep', '1000'])
        os._exit(0)
    time.sleep(0.2)
    'spawned'
""")


@needs_root()
async def test_double_forked_daemon_dies_with_the_session(factory: SandboxFactory) -> None:
    s = await factory.open()
    uid = local(s).uid
    result = await s.run_cell(_DAEMON)
    assert result.results[0].text == "'spawned'"
    assert "sleep" in _names(processes_of_uid(uid))
    await s.close()
    assert processes_of_uid(uid) == []


def _names(pids: list[int]) -> list[str]:
    return [Path(f"/proc/{p}/comm").read_text().strip() for p in pids]


_OWNER = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {root!r})
    from runtime.sandbox import SandboxFactory

    async def main():
        session = await SandboxFactory(backend="local").open()
        print("UID", session.uid, flush=True)
        await session.run_cell({daemon!r})
        print("RUNNING", flush=True)
        await session.run_cell("import time\\ntime.sleep(600)", timeout_s=600)

    asyncio.run(main())
""")


@needs_root()
async def test_kill_9_of_the_owner_leaves_nothing_behind(factory: SandboxFactory) -> None:
    await factory.self_test()  # the owner's own self-test then finds a warm host
    script = _OWNER.format(root=str(PROJECT), daemon=_DAEMON)
    owner = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE)
    try:
        assert owner.stdout is not None
        uid = int((await owner.stdout.readline()).split()[1])
        assert (await owner.stdout.readline()).strip() == b"RUNNING"
        await asyncio.sleep(0.2)
        assert len(processes_of_uid(uid)) >= 3  # bwrap, interpreter, daemon
        owner.send_signal(signal.SIGKILL)
        await owner.wait()
        deadline = time.monotonic() + 5
        left = processes_of_uid(uid)
        while left and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            left = processes_of_uid(uid)
        assert left == []
    finally:
        if owner.returncode is None:
            owner.kill()
            await owner.wait()


async def test_printed_protocol_frames_are_just_output(session: CodeSession) -> None:
    fake = json.dumps({"op": "ready", "id": "x", "ok": True, "results": []})
    result = await session.run_cell(f"print({fake!r})\n7")
    assert result.stdout == fake + "\n"
    assert result.results[0].text == "7"


async def test_garbage_on_the_protocol_fd_loses_only_that_session(
        session: CodeSession, factory: SandboxFactory) -> None:
    result = await session.run_cell(textwrap.dedent("""
        import os
        for fd in map(int, os.listdir('/proc/self/fd')):
            if fd > 2:
                try:
                    os.write(fd, b'not json\\n')
                except OSError:
                    pass
        'done'
    """))
    if result.error is None:
        assert result.results[0].text == "'done'"
    else:
        with pytest.raises(SandboxInfraError):
            await session.run_cell("1")
    async with await factory.open() as other:
        assert (await other.run_cell("2")).results[0].text == "2"
