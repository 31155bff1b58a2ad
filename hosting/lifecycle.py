"""A worker process's life: start, hand work back on SIGTERM, take it back after a crash.

What decides how soon a task resumes after its worker goes away (bench/chaos.py):

- **SIGTERM (a deploy).** The workers stop polling at once and give their running
  activities `BEESTOWN_SHUTDOWN_GRACE` (5 s) to finish: a step that finishes in time is
  reported, not run again, and a model turn that ends in time is not paid for twice.
  What is still running then is cancelled and its failure (`WorkerShutdown`, retry in 10 ms:
  hosting/interceptors.py) goes back to Temporal, which retries it on another worker
  right away instead of after a heartbeat or start-to-close timeout. Step activities are
  idempotent (a stored result is handed back on retry), so a cancelled attempt costs
  only its own time. The shutdown also tells the server (ShutdownWorker), so the
  workflows' next tasks leave this worker's sticky queue at once. Measured in
  bench/chaos.py (3x3 plan of 1.5 s code steps, SIGTERM 0.7 s into a layer): a new
  worker started beside the old one, the task ends +0.1 s after a clean run (with no
  grace: +0.9-1.0 s, the cut steps ran again).
- **kill -9.** Nothing is handed back. `supervise` runs the worker in a forked child of a
  process that has imported everything, and forks a new child the moment one is killed
  (ready in about a second instead of a cold start's several). A worker that sees, at its
  start or every WATCH_EVERY_S after, pollers of a newly dead process of this host on its
  queues (`dead_pollers`) takes their work back (`recover_orphans`): it fails each
  activity attempt the dead process had started, so Temporal retries it now rather than
  after its heartbeat timeout, and resets the sticky queue of each open workflow, so
  their next tasks do not wait out
  `sticky_queue_schedule_to_start_timeout` behind a dead worker. A worker that died on
  another host is noticed by the heartbeat timeouts of workflows/policies.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import PendingActivityState, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.api.workflowservice.v1 import (
    DescribeTaskQueueRequest,
    DescribeWorkflowExecutionRequest,
    ResetStickyTaskQueueRequest,
)
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.worker import Worker

log = logging.getLogger("beestown.worker")

# How far back a starting worker looks for workflows a dead worker may have held.
LOOKBACK = timedelta(hours=24)
# Concurrent calls to the server while taking work back.
CONCURRENCY = 20


# What a worker runs: these packages and modules of the checkout (the build id's input).
_CODE = ("models", "runtime", "activities", "workflows", "hosting", "worker.py", "client.py")


@functools.cache
def build_id() -> str:
    """The worker's build id: a hash of BeesTown's own source and the SDK's version.

    Temporal's default hashes the bytecode of every loaded module, compiling those without
    a cache: ~0.2-0.4 s of a ~1.2 s start here (`load_default_build_id`), on the critical
    path of every restart. This reads ~200 files instead (a few ms) and still changes
    whenever the code does.
    """
    import hashlib

    import temporalio

    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(f"temporalio {temporalio.__version__}".encode())
    for name in _CODE:
        path = root / name
        # (worker.py and client.py are absent where the packages are installed)
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path] * path.is_file()
        for file in files:
            digest.update(str(file.relative_to(root)).encode() + b"\0")
            digest.update(file.read_bytes())
    return f"beestown-{digest.hexdigest()[:16]}"


def worker_identity() -> str:
    """`pid@host/nonce`: unique per process even when a restarted container reuses its pid."""
    return f"{os.getpid()}@{socket.gethostname()}/{uuid.uuid4().hex[:8]}"


def _dead_here(identity: str, me: str) -> bool:
    """Whether `identity` (`pid@host[/nonce]`) names a process of this host that is gone."""
    if identity == me:
        return False
    pid, _, rest = identity.partition("@")
    host = rest.partition("/")[0]
    my_pid, _, my_rest = me.partition("@")
    if host != my_rest.partition("/")[0] or not pid.isdigit():
        return False
    if pid == my_pid:
        return True  # our pid, another identity: an earlier process that had our pid
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _zombie(int(pid))


def _zombie(pid: int) -> bool:
    """Whether `pid` has exited but not been reaped yet. A worker killed together with its
    supervisor is re-parented, and stays a zombie until its new parent reaps it (seconds
    where PID 1 is slow to): to `kill(pid, 0)` it still exists, but it serves nothing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "pid (comm) S ...": the state follows the last ')' (comm may hold any character).
    return stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"])


# An attempt whose own timeout fires within this is left to it: failing it by id just as
# the server retries it could fail the new attempt instead (ById names no attempt). A
# retry starts no sooner than its policy's first interval (200 ms or more, every policy in
# workflows/policies.py), so a describe-then-fail faster than margin + 200 ms cannot hit
# one. It was 1 s: a cold restart's first sweep (~1.3 s after a kill) then often skipped
# the dead attempt, and the heartbeat timeout plus the server's timer lag (~1-1.7 s
# measured on the dev server) cost +4.8 s instead of +2.2 s (bench/chaos.py kill9cold).
TIMER_MARGIN = timedelta(milliseconds=200)


def _about_to_time_out(act: PendingActivityInfo) -> bool:
    timeout = act.activity_options.heartbeat_timeout.ToTimedelta()
    if not timeout:
        timeout = act.activity_options.start_to_close_timeout.ToTimedelta()
    if not timeout:
        return False
    last = (act.last_heartbeat_time if act.HasField("last_heartbeat_time")
            else act.last_started_time).ToDatetime(tzinfo=UTC)
    return datetime.now(UTC) + TIMER_MARGIN >= last + timeout


@contextlib.contextmanager
def _one_sweeper(state_dir: Path) -> Iterator[bool]:
    """Yield whether we may sweep: one process of this host at a time (two failing the
    same activity by id could fail the retry one of them caused)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "sweep.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True


async def recover_orphans(client: Client, task_queue: str, *, limit: int = 10_000
                          ) -> tuple[int, int]:
    """Take back what dead workers held in the open workflows of `task_queue`.

    Resets each workflow's sticky queue (its next task goes to the normal queue: no
    wait of `sticky_queue_schedule_to_start_timeout` behind a dead worker; a live
    worker's workflow only replays once), and fails each activity attempt started by a
    dead process of this host, so Temporal retries it now instead of after its heartbeat
    timeout. Returns (workflows reset, attempts failed).
    """
    since = (datetime.now(UTC) - LOOKBACK).strftime("%Y-%m-%dT%H:%M:%SZ")
    query = (f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running' "
             f"AND StartTime > '{since}'")
    me = client.identity
    sem = asyncio.Semaphore(CONCURRENCY)
    counts = [0, 0]

    async def take_back(workflow_id: str, run_id: str) -> None:
        execution = WorkflowExecution(workflow_id=workflow_id, run_id=run_id)
        async with sem:
            with contextlib.suppress(RPCError):
                await client.workflow_service.reset_sticky_task_queue(
                    ResetStickyTaskQueueRequest(namespace=client.namespace,
                                                execution=execution))
                counts[0] += 1
            with contextlib.suppress(RPCError):
                desc = await client.workflow_service.describe_workflow_execution(
                    DescribeWorkflowExecutionRequest(namespace=client.namespace,
                                                     execution=execution))
                for act in desc.pending_activities:
                    if (act.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                            and _dead_here(act.last_worker_identity, me)
                            and not _about_to_time_out(act)):
                        handle = client.get_async_activity_handle(
                            workflow_id=workflow_id, run_id=run_id,
                            activity_id=act.activity_id)
                        with contextlib.suppress(RPCError):
                            await handle.fail(ApplicationError(
                                f"worker {act.last_worker_identity} died while running "
                                "this attempt", type="WorkerLost",
                                next_retry_delay=timedelta(milliseconds=10)))
                            counts[1] += 1
                            log.info("failed %s/%s: its worker %s is gone", workflow_id,
                                     act.activity_id, act.last_worker_identity)

    jobs = []
    async for wf in client.list_workflows(query, limit=limit):
        jobs.append(asyncio.create_task(take_back(wf.id, wf.run_id)))
    await asyncio.gather(*jobs)
    return counts[0], counts[1]


async def dead_pollers(client: Client, queues: list[str]) -> list[str]:
    """Identities of this host's dead processes that polled `queues` lately (the server
    remembers pollers for a few minutes)."""
    me = client.identity
    dead: set[str] = set()
    for queue in queues:
        for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                     TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
            resp = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
                namespace=client.namespace, task_queue=TaskQueue(name=queue),
                task_queue_type=kind))
            dead |= {p.identity for p in resp.pollers if _dead_here(p.identity, me)}
    return sorted(dead)


# How often a running worker looks for processes of this host that died (a few cheap
# DescribeTaskQueue calls), so a survivor takes their work back without waiting for a
# replacement to start.
WATCH_EVERY_S = 2.0


async def watch_dead_peers(client: Client, task_queue: str, queues: list[str],
                           state_dir: Path, *, every: float = WATCH_EVERY_S) -> None:
    """At start and then every `every` s: when a process of this host that polled our
    queues has died since we last looked, take its work back (`recover_orphans`)."""
    seen: set[str] = set()
    while True:
        try:
            dead = set(await dead_pollers(client, queues))
            if dead - seen:
                with _one_sweeper(state_dir) as mine:
                    if mine:
                        log.info("processes of this host that died lately: %s",
                                 ", ".join(sorted(dead - seen)))
                        reset, failed = await recover_orphans(client, task_queue)
                        log.info("took back from dead workers: %d sticky queues reset, "
                                 "%d attempts failed for retry", reset, failed)
            seen = dead
        except RPCError as e:  # the server is away: the timeouts still apply
            log.warning("could not look for dead workers: %s", e)
        await asyncio.sleep(every)


async def run_until_stopped(workers: list[Worker], stop: asyncio.Event) -> None:
    """Run `workers` until `stop` is set, then shut them all down together."""
    runs = [asyncio.create_task(w.run()) for w in workers]
    stopped = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*runs, stopped], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not stopped:
                t.result()  # a worker that ended on its own raised: say why
    finally:
        stopped.cancel()
        # All at once: each worker cancels its in-flight activities and gives up its
        # sticky queue; the polls end; the activities' failures reach the server. Every
        # worker still running is told, including one whose run() is still validating its
        # namespace (not `is_running` yet): skipping it left a worker stopped right after
        # "worker ready" waiting for ever.
        await asyncio.gather(*(w.shutdown() for w, r in zip(workers, runs, strict=True)
                               if not r.done()), return_exceptions=True)
        await asyncio.gather(*runs, return_exceptions=True)


# -- the supervisor ---------------------------------------------------------------------
# A crash loop is slowed down: three children in a row that die this soon after start ...
_EARLY_DEATH_S = 5.0
# ... is started again after a pause that doubles up to this.
_MAX_PAUSE_S = 30.0


def supervise(run: Callable[[], None], *, preload: Callable[[], None] | None = None) -> int:
    """Run `run()` in a forked child; when the child is killed, fork a new one at once.

    The parent has imported everything already, so a new child is serving within a
    second, where a cold start of the interpreter takes several (measured in
    bench/chaos.py). SIGTERM/SIGINT go to the child, which lets its running work finish
    within its grace, hands the rest back and exits; the parent then exits with it. A
    child that exits by itself (bad configuration, say) ends the parent with its exit
    code. The child dies with the parent (PR_SET_PDEATHSIG), so killing the parent
    leaves nothing behind.
    `preload()` runs here once the first child is forked: what it imports, the children
    forked after a kill have already. Returns the exit code for the process.
    """
    stopping = False
    child = 0

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    pause, early = 0.5, 0
    while True:
        started = time.monotonic()
        child = os.fork()
        if child == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            _die_with_parent()
            code = 0
            try:
                run()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                log.exception("worker process failed")
                code = 1
            os._exit(code)
        log.info("supervising worker process %d", child)
        if preload is not None:
            preload()
            preload = None
        while True:
            try:
                _, status = os.waitpid(child, 0)
                break
            except ChildProcessError:
                return 0
            except InterruptedError:
                continue
        if stopping:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 0
        if os.WIFEXITED(status):
            return os.WEXITSTATUS(status)
        log.error("worker process %d was killed by signal %d; starting another",
                  child, os.WTERMSIG(status))
        early = early + 1 if time.monotonic() - started < _EARLY_DEATH_S else 0
        if early >= 3:  # a crash loop, not a kill: slow down
            time.sleep(pause)
            pause = min(pause * 2, _MAX_PAUSE_S)
        else:
            pause = 0.5


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
