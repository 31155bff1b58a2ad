"""Pieces the fault benches and tests share: servers that can be killed, workers that can
be killed, and the audit that says what a fault cost (repeats, duplicates, losses).

- `TemporalDev`: a tuned Temporal dev server on its own port and `--db-filename`, so it
  can be killed and started again on the same data.
- `PgCluster`: a scratch PostgreSQL cluster (initdb + pg_ctl) that can be stopped and
  started without touching any shared server.
- `killable_servers`: a temp dir, a scratch database and a `TemporalDev` for one run.
- `WorkerProc`: `python -m bench.chaos_worker` (worker.py plus a journal of the work).
- `audit`: reads the journal, the store and the task's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from testkit.servers import DEV_SERVER_ARGS, admin_dsn, scratch_database, temporal_cli

ROOT = Path(__file__).resolve().parent.parent

def children(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid`, 0 when it is gone."""
    try:
        for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1]) * 1024
    except OSError:
        pass
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_port(port: int, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


class TemporalDev:
    """A dev server with its own SQLite file: kill() and start() keep the data."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.db = tmp / "temporal.db"
        self.log = tmp / "temporal.log"
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def requests(self, operation: str) -> float:
        """The frontend's count of `operation` calls so far (its Prometheus metrics)."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as r:
            text = r.read().decode()
        total = 0.0
        for ln in text.splitlines():
            if (ln.startswith("service_requests{") and f'operation="{operation}"' in ln
                    and "frontend" in ln):
                total += float(ln.rsplit(" ", 1)[1])
        return total

    async def start(self) -> None:
        self.spawn()
        await wait_port(self.port)

    def spawn(self) -> None:
        self.proc = subprocess.Popen(
            [temporal_cli(), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
             "--port", str(self.port), "--http-port", str(free_port()),
             "--metrics-port", str(self.metrics_port), "--db-filename", str(self.db),
             "--log-level", "error", *DEV_SERVER_ARGS],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.asynccontextmanager
async def killable_servers(name: str) -> AsyncIterator[tuple[Path, str, TemporalDev]]:
    """For one bench run: a temp dir, a scratch database and a started `TemporalDev`;
    the server is stopped and the database dropped afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    async with scratch_database(await admin_dsn(tmp), f"beestown_{name}") as dsn:
        temporal = TemporalDev(tmp)
        await temporal.start()
        try:
            yield tmp, dsn, temporal
        finally:
            temporal.stop()


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise SystemExit(f"{name} not found (PostgreSQL server binaries)")
    return found


class PgCluster:
    """A throwaway PostgreSQL cluster of our own (never the machine's shared server)."""

    def __init__(self) -> None:
        # Its own directory, reachable by the uid it runs as (not under a 0700 tmp dir).
        self.base = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
        self.base.chmod(0o755)
        self.dir = self.base / "pgdata"
        self.port = free_port()
        self.log = self.base / "pg.log"
        self.sock = self.base / "sock"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/chaos"

    def _as_user(self) -> dict[str, Any]:
        # initdb refuses root; run the cluster as `nobody` when we are root.
        if os.geteuid() != 0:
            return {}
        import pwd

        nobody = pwd.getpwnam("nobody")
        return {"user": nobody.pw_uid, "group": nobody.pw_gid}

    def _run(self, *args: str) -> None:
        subprocess.run(list(args), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, **self._as_user())

    async def create(self) -> None:
        self.sock.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            ids = self._as_user()
            for p in (self.base, self.sock):
                os.chown(p, ids["user"], ids["group"])
        await asyncio.to_thread(
            self._run, _pg_bin("initdb"), "-D", str(self.dir), "-U", "postgres", "-A",
            "trust", "--no-sync")
        await asyncio.to_thread(self.start)
        conn = await asyncpg.connect(self.dsn.rsplit("/", 1)[0] + "/postgres")
        await conn.execute("CREATE DATABASE chaos")
        await conn.close()

    def start(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.dir), "-l", str(self.log), "-w", "start",
                  "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 "
                        f"-c unix_socket_directories={self.sock} -c fsync=off "
                        "-c max_connections=300")

    def stop(self, mode: str = "immediate") -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.dir), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@dataclass
class WorkerProc:
    """One `python -m bench.chaos_worker` process."""

    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def start(self) -> WorkerProc:
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.chaos_worker"], cwd=ROOT,
                                     env=self.env, stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT)
        return self

    def pids(self) -> set[int]:
        """This process and its children (the worker a supervisor forked)."""
        if self.proc is None or self.proc.poll() is not None:
            return set()
        return {self.proc.pid, *children(self.proc.pid)}

    def worker_pid(self) -> int | None:
        """The pid serving now: the supervisor's child, else the process itself."""
        kids = self.pids() - {self.proc.pid} if self.proc else set()
        return max(kids) if kids else (self.proc.pid if self.alive and self.proc else None)

    async def ready(self, *, since: int = 0, limit: float = 60) -> float:
        """Wait until a process of ours logs "worker ready" after byte `since` of the log;
        return seconds since `started_at`."""
        assert self.proc is not None
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            text = self.log.read_bytes()[since:].decode(errors="replace")
            for pid in self.pids():
                if f"[{pid}] INFO beestown.worker: worker ready" in text:
                    return time.monotonic() - self.started_at
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}:\n"
                                   + self.log.read_text(errors="replace")[-3000:])
            await asyncio.sleep(0.02)
        raise TimeoutError("worker never became ready")

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def worker_env(*, address: str, queue: str, database_url: str, state_dir: Path,
               journal: Path, llm_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI", "E2B", "BEESTOWN", "DATABASE_URL", "TEMPORAL"))}
    env.update({
        "TEMPORAL_ADDRESS": address, "BEESTOWN_TASK_QUEUE": queue,
        "DATABASE_URL": database_url, "BEESTOWN_STATE_DIR": str(state_dir),
        "BEESTOWN_SANDBOX": "local", "CHAOS_JOURNAL": str(journal),
        # The plans measured here run without an organization, whatever chart another
        # test or run stored in the same database (unset, a stored chart would apply).
        "BEESTOWN_ORG": "0",
    })
    if llm_url:
        env.update({"OPENAI_BASE_URL": llm_url, "OPENAI_API_KEY": "chaos",
                    "BEESTOWN_MODEL": "fake-model"})
    env.update(extra)
    return env


# -- the audit ------------------------------------------------------------------------------
@dataclass
class Audit:
    completed: bool
    repeated: list[str] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    # Work that ran again because its worker died after the work ended but before its
    # result was stored: the step had not completed (at-least-once, as for any activity;
    # only an idempotent tool avoids it). Not counted in `repeated`.
    cut: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.completed and not self.repeated and not self.duplicates and not self.lost


def journal_times(journal: Path, event: str) -> dict[str, list[float]]:
    """Each key's times (epoch seconds, ascending) of `event` ("start" or "end")."""
    times: dict[str, list[float]] = {}
    if journal.exists():
        for line in journal.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[2] == event:
                times.setdefault(parts[3], []).append(float(parts[0]))
    return {k: sorted(v) for k, v in times.items()}


def journal_ends(journal: Path) -> Counter[str]:
    """How many times each key's work ran to its end."""
    return Counter({k: len(v) for k, v in journal_times(journal, "end").items()})


def repeated_work(journal: Path) -> list[str]:
    """Keys whose work ran to its end more than once."""
    return sorted(k for k, n in journal_ends(journal).items() if n > 1)


# Columns that legitimately differ between two rows recording the same thing.
_VOLATILE = {"id", "created_at", "updated_at", "applied_at", "started_at", "completed_at",
             "opened_at", "closed_at", "at", "search"}
# Rows told apart only by their id (one per model response, keyed `<call>/<attempt>`):
# checked by key below instead.
_BY_KEY_ONLY = {"usage"}


async def duplicate_rows(conn: asyncpg.Connection, task_id: str | None = None
                         ) -> dict[str, int]:
    """Rows that say the same thing twice, per table (only `task_id`'s rows, if given).

    Every table has a primary key, so a duplicate is a row equal to another on all its
    non-key, non-time columns; usage rows are keyed `<call>/<attempt>`, so two attempts of
    one call recorded twice also count.
    """
    out: dict[str, int] = {}
    tables = [r["tablename"] for r in await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    for table in tables:
        columns = [r["column_name"] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "'public' AND table_name = $1 AND data_type NOT IN ('tsvector', 'bytea')", table)]
        where, args = "", []
        if task_id is not None:
            key = "task_id" if "task_id" in columns else (
                "subtask_id" if "subtask_id" in columns else None)
            if key is None:
                continue
            where, args = f'WHERE "{key}" = $1 OR "{key}" LIKE $1 || \'/%\'', [task_id]
        if table in _BY_KEY_ONLY:
            n = await conn.fetchval(
                f'SELECT coalesce(sum(c - 1), 0) FROM (SELECT count(*) c FROM "{table}" '
                f"{where} GROUP BY regexp_replace(id, '/[0-9]+$', '') HAVING count(*) > 1) d",
                *args)
            if n:
                out[f"{table} (one call, two attempts)"] = int(n)
            continue
        cols = [c for c in columns if c not in _VOLATILE]
        if not cols:
            continue
        quoted = ", ".join(f'"{c}"::text' for c in cols)
        n = await conn.fetchval(
            f'SELECT coalesce(sum(c - 1), 0) FROM (SELECT count(*) c FROM "{table}" {where} '
            f"GROUP BY {quoted} HAVING count(*) > 1) d", *args)
        if n:
            out[table] = int(n)
    return out


async def lost_results(conn: asyncpg.Connection, task_id: str,
                       produced: set[str]) -> list[str]:
    """Steps whose work ended (journal keys == subtask ids) yet hold no stored result."""
    rows = await conn.fetch(
        "SELECT id, status, result IS NOT NULL AS has_result FROM subtasks "
        "WHERE task_id = $1", task_id)
    stored = {r["id"] for r in rows if r["has_result"] and r["status"] == "COMPLETED"}
    return sorted(produced - stored)


async def cut_before_stored(conn: asyncpg.Connection, task_id: str, journal: Path,
                            keys: list[str]) -> list[str]:
    """Of `keys` (work that ended more than once), those whose first run had ended before
    the second started, and whose step first stored a result (`subtasks.completed_at`,
    written with it) only after that second start: the first run ended, but its worker
    died before the result was written."""
    rows = await conn.fetch("SELECT id, completed_at FROM subtasks WHERE task_id = $1",
                            task_id)
    stored_at = {r["id"]: r["completed_at"].timestamp() for r in rows if r["completed_at"]}
    starts = journal_times(journal, "start")
    ends = journal_times(journal, "end")
    # Overlapping runs (a second attempt while the first still ran) are real repeats.
    return sorted(k for k in keys if k in stored_at and len(starts.get(k, [])) > 1
                  and starts[k][1] >= ends.get(k, [float("inf")])[0]
                  and stored_at[k] >= starts[k][1])


async def audit(database_url: str, task_id: str, journal: Path, *, completed: bool) -> Audit:
    """What `task_id`'s run left behind: completed steps whose work ran again, work cut
    before its result was stored (ran again, the step not yet completed), rows recorded
    twice, and results produced yet never stored."""
    twice = [k for k in repeated_work(journal) if k.startswith(task_id + "/")]
    conn = await asyncpg.connect(database_url)
    try:
        dups = await duplicate_rows(conn, task_id)
        produced = {k for k in journal_ends(journal) if k.startswith(task_id + "/")}
        lost = await lost_results(conn, task_id, produced)
        cut = await cut_before_stored(conn, task_id, journal, twice)
    finally:
        await conn.close()
    return Audit(completed=completed, repeated=[k for k in twice if k not in cut],
                 duplicates=dups, lost=lost, cut=cut)
