"""The board over real HTTP: sign-in, CSRF, who may act for whom, escaping, live events.

The board runs in-process (uvicorn on a loopback port) against the session's real
PostgreSQL and Temporal dev server, with real workers; only the LLM is scripted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client

from board.db import migrate_board
from board.errors import BoardError
from board.server import check_bind, serve
from board.settings import BoardSettings, is_loopback
from models.io import TaskInput
from runtime.documents import load_org
from runtime.org_store import OrgStore
from runtime.settings import Settings
from runtime.store import Store
from testkit.fake_llm import FakeLLM
from testkit.servers import admin_dsn, scratch_database
from tests.conftest import make_settings, temporal_address
from tests.helpers import outcome, plan_of, start_task
from worker import Deps, build_workers

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"

# A small town: eng-lead approves by itself, research-lead and ceo wait for a person.
BOARD_ORG = """
agents:
  - {id: ceo, name: Queen Bee, capacity: 4, review_policy: human}
  - {id: eng-lead, reports_to: ceo, capacity: 4, review_policy: auto, skills: [architecture]}
  - {id: research-lead, reports_to: ceo, capacity: 4, review_policy: human}
  - {id: tools-eng, reports_to: eng-lead, capacity: 4, review_policy: auto, skills: [tools]}
  - {id: writer, name: Jane, reports_to: research-lead, capacity: 4, review_policy: human,
     skills: [writing]}
"""


@pytest_asyncio.fixture
async def board_worker(client: Client, deps: Deps, database_url: str, llm: FakeLLM,
                       tmp_path: Path) -> AsyncIterator[Settings]:
    """Workers on the test's own queue, with the board's small org chart loaded."""
    org = tmp_path / "org.yaml"
    org.write_text(BOARD_ORG)
    await OrgStore(deps.pool).save_org(load_org(org))
    settings = make_settings(tmp_path, database_url, llm.base_url, temporal_address(client),
                             org_enabled=True, temporal_ui_url="http://ui.example:8233")
    async with contextlib.AsyncExitStack() as stack:
        for w in build_workers(client, settings, deps):
            await stack.enter_async_context(w)
        yield settings


@dataclass
class Running:
    url: str
    settings: Settings


@contextlib.asynccontextmanager
async def running_board(settings: Settings, **board: Any) -> AsyncIterator[Running]:
    urls: list[str] = []
    ready, stop = asyncio.Event(), asyncio.Event()
    board_settings = BoardSettings(**({"secret_key": "test-secret-" + "x" * 32} | board))
    task = asyncio.create_task(serve(settings, board_settings, host="127.0.0.1", port=0,
                                     ready=ready, stop=stop, on_url=urls.append))
    done, _ = await asyncio.wait([task, asyncio.create_task(ready.wait())], timeout=30,
                                 return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises what went wrong
    try:
        yield Running(url=urls[0], settings=settings)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)


@pytest_asyncio.fixture
async def board(board_worker: Settings, deps: Deps) -> AsyncIterator[Running]:
    await migrate_board(deps.pool)
    await add_people(deps.pool)
    async with running_board(board_worker) as r:
        yield r


async def add_people(pool: asyncpg.Pool) -> None:
    from board.accounts import Accounts

    accounts = Accounts(pool)
    await accounts.add("rita", PASSWORD, ["research-lead", "writer"], replace=True)
    await accounts.add("carl", PASSWORD, ["ceo"], replace=True)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


@contextlib.asynccontextmanager
async def sign_in(url: str, name: str, password: str = PASSWORD
                  ) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        page = await http.get("/login")
        r = await http.post("/login", data={"name": name, "password": password,
                                            "csrf": csrf_of(page.text)})
        assert r.status_code == 303, r.text
        yield http


async def post_form(http: httpx.AsyncClient, page: str, action: str,
                    data: dict[str, str], files: dict[str, Any] | None = None
                    ) -> httpx.Response:
    """POST `data` to `action` with the CSRF token of `page`, as a browser would."""
    csrf = csrf_of((await http.get(page)).text)
    return await http.post(action, data={"csrf": csrf, **data}, files=files,
                           headers={"referer": http.base_url.join(page).__str__()})


async def wait_for_status(pool: asyncpg.Pool, sub_id: str, status: str,
                          within_s: float = 30) -> None:
    for _ in range(int(within_s * 10)):
        if await pool.fetchval("SELECT status FROM subtasks WHERE id = $1", sub_id) == status:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{sub_id} never reached {status}")


async def update_events(client: Client, workflow_id: str) -> int:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return sum(1 for e in history.events
               if e.HasField("workflow_execution_update_accepted_event_attributes")
               or e.HasField("workflow_execution_update_completed_event_attributes"))


# -- identity -------------------------------------------------------------------------------
async def test_every_page_redirects_to_sign_in_without_a_session(board: Running) -> None:
    async with httpx.AsyncClient(base_url=board.url) as http:
        for path in ("/tasks", "/task?id=x", "/step?id=x/y", "/start", "/reviews",
                     "/escalations", "/org", "/costs", "/blob?id=x"):
            r = await http.get(path)
            assert r.status_code == 303, path
            assert r.headers["location"].startswith("/login?next="), path
        r = await http.post("/review", data={"subtask": "x/y", "agent": "ceo",
                                             "decision": "approve"})
        assert r.status_code == 303
        assert (await http.get("/events")).status_code == 401
        login = await http.get("/login")
        assert login.status_code == 200
        assert "content-security-policy" in login.headers


async def test_session_cookie_is_httponly_and_samesite(board: Running) -> None:
    async with httpx.AsyncClient(base_url=board.url) as http:
        page = await http.get("/login")
        r = await http.post("/login", data={"name": "rita", "password": PASSWORD,
                                            "csrf": csrf_of(page.text)})
        assert r.status_code == 303
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=lax" in cookie


async def test_forged_or_missing_csrf_token_is_refused(board: Running, deps: Deps) -> None:
    async with sign_in(board.url, "rita") as http:
        before = await deps.pool.fetchval("SELECT count(*) FROM tasks")
        plan = "steps:\n  - {id: a, type: tool, tool: echo, args: {value: 1}}\n"
        for token in ("forged", ""):
            r = await http.post("/start", data={"csrf": token, "priority": "medium"},
                                files={"plan": ("p.yaml", plan.encode())})
            assert r.status_code == 403, r.text
        r = await http.post("/review", data={"subtask": "x/y", "agent": "writer",
                                             "decision": "approve"})
        assert r.status_code == 403
        assert await deps.pool.fetchval("SELECT count(*) FROM tasks") == before
    # A token from another session does not work either.
    async with sign_in(board.url, "carl") as other:
        carl_token = csrf_of((await other.get("/start")).text)
    async with sign_in(board.url, "rita") as http:
        r = await http.post("/logout", data={"csrf": carl_token})
        assert r.status_code == 403


async def test_sign_in_is_rate_limited(board: Running) -> None:
    async with httpx.AsyncClient(base_url=board.url) as http:
        token = csrf_of((await http.get("/login")).text)
        codes = []
        for _ in range(5):
            r = await http.post("/login", data={"name": "carl", "password": "wrong",
                                                "csrf": token})
            codes.append(r.status_code)
        assert codes == [401] * 5
        r = await http.post("/login", data={"name": "carl", "password": PASSWORD,
                                            "csrf": token})
        assert r.status_code == 429  # even the right password, for a while


async def test_trusted_header_counts_only_when_configured(board_worker: Settings,
                                                         deps: Deps) -> None:
    await migrate_board(deps.pool)
    await add_people(deps.pool)
    async with running_board(board_worker) as off, httpx.AsyncClient(base_url=off.url) as h:
        r = await h.get("/tasks", headers={"X-Forwarded-User": "rita"})
        assert r.status_code == 303
    async with (running_board(board_worker, trusted_header="X-Forwarded-User") as on,
                httpx.AsyncClient(base_url=on.url) as h):
        r = await h.get("/tasks", headers={"X-Forwarded-User": "rita"})
        assert r.status_code == 200
        assert "rita" in r.text
        r = await h.get("/tasks", headers={"X-Forwarded-User": "mallory"})
        assert r.status_code == 303  # no such account


def test_only_loopback_may_listen_without_accounts() -> None:
    board = BoardSettings()
    for host in ("127.0.0.1", "::1", "localhost", "[::1]"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.5", "board.example"):
        assert not is_loopback(host), host
    check_bind("127.0.0.1", accounts=0, board=board)
    check_bind("0.0.0.0", accounts=1, board=board)
    with pytest.raises(BoardError, match="no accounts"):
        check_bind("0.0.0.0", accounts=0, board=board)


async def beestown(*args: str, database_url: str, stdin: str = "",
                   env: dict[str, str] | None = None, within_s: float = 60
                   ) -> tuple[int, str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "BEESTOWN"))}
    full.update({"DATABASE_URL": database_url, **(env or {})})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", *args, cwd=ROOT, env=full,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=within_s)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_web_refuses_a_public_address_until_someone_has_an_account(
        tmp_path: Path) -> None:
    async with scratch_database(await admin_dsn(tmp_path), "beestown_board") as dsn:
        rc, out, err = await beestown("web", "--host", "0.0.0.0", "--port", "0",
                                      database_url=dsn)
        assert rc == 2, (out, err)
        assert "refusing to listen on 0.0.0.0" in err
        rc, out, err = await beestown("user", "add", "ann", "--password-stdin",
                                      database_url=dsn, stdin=PASSWORD + "\n")
        assert rc == 0, err
        rc, out, err = await beestown("user", "list", database_url=dsn)
        assert "ann" in out


# -- acting for agents ----------------------------------------------------------------------
async def test_review_for_an_agent_one_does_not_act_for_is_403_and_never_reaches_history(
    client: Client, board: Running, llm: FakeLLM, deps: Deps
) -> None:
    llm.script_for("draft a note", "A note.")
    handle = await start_task(client, board.settings, TaskInput(plan=plan_of(
        {"id": "note", "type": "write", "description": "draft a note", "assignee": "writer"})))
    sub = f"{handle.id}/note"
    await wait_for_status(deps.pool, sub, "REVIEWING")
    async with sign_in(board.url, "carl") as carl:
        r = await post_form(carl, "/reviews", "/review", {
            "subtask": sub, "agent": "research-lead", "decision": "approve"})
        assert r.status_code == 403
        assert await update_events(client, sub) == 0
        # As ceo, whom carl does act for, the workflow's validator refuses, on the page.
        r = await post_form(carl, "/reviews", "/review", {
            "subtask": sub, "agent": "ceo", "decision": "approve"})
        assert r.status_code == 303
        shown = (await carl.get(r.headers["location"])).text
        assert "only research-lead may review" in shown
        assert await update_events(client, sub) == 0
        # carl's reviews page does not list it
        assert sub not in (await carl.get("/reviews")).text
    audit = await deps.pool.fetch(
        "SELECT person, agent, outcome FROM board_audit WHERE workflow_id = $1 ORDER BY id", sub)
    assert [(a["person"], a["agent"], a["outcome"][:8]) for a in audit] == [
        ("carl", "research-lead", "forbidde"), ("carl", "ceo", "refused:")]
    async with sign_in(board.url, "rita") as rita:
        assert sub in (await rita.get("/reviews")).text
        r = await post_form(rita, "/reviews", "/review", {
            "subtask": sub, "agent": "research-lead", "decision": "reject", "feedback": " "})
        assert "needs feedback" in (await rita.get(r.headers["location"])).text
        assert await update_events(client, sub) == 0
        r = await post_form(rita, "/reviews", "/review", {
            "subtask": sub, "agent": "research-lead", "decision": "approve"})
        assert "approved as research-lead" in (await rita.get(r.headers["location"])).text
    result = await asyncio.wait_for(outcome(handle), timeout=30)
    assert result.status.value == "COMPLETED", result.error
    assert await update_events(client, sub) == 2  # accepted + completed, once
    last = await deps.pool.fetchrow(
        "SELECT person, agent, action, payload, outcome FROM board_audit"
        " WHERE workflow_id = $1 ORDER BY id DESC LIMIT 1", sub)
    assert last is not None
    assert (last["person"], last["agent"], last["action"], last["outcome"]) == (
        "rita", "research-lead", "review", "ok")
    assert last["payload"]["decision"] == "approve"


# -- escaping and secrets -------------------------------------------------------------------
async def seed_task(pool: asyncpg.Pool, task_id: str, *, output: Any, title: str) -> str:
    store = Store(pool)
    await pool.execute(
        "INSERT INTO tasks (id, title, status, plan) VALUES ($1, $2, 'COMPLETED', '{}')",
        task_id, title)
    sub = f"{task_id}/a"
    await pool.execute(
        "INSERT INTO subtasks (id, task_id, step_id, title, type, status, result)"
        " VALUES ($1, $2, 'a', $3, 'write', 'COMPLETED', $4)",
        sub, task_id, title, {"success": True, "output": output})
    await store.put_messages(sub, 0, [
        {"role": "user", "content": output},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "echo", "arguments": json.dumps({"value": output})}}]},
        {"role": "tool", "tool_call_id": "c1", "content": output}])
    return sub


async def test_script_in_user_text_renders_as_text(board: Running, deps: Deps) -> None:
    evil = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'
    task_id = f"evil-{uuid.uuid4().hex[:6]}"
    sub = await seed_task(deps.pool, task_id, output=evil, title=evil)
    async with sign_in(board.url, "rita") as http:
        for path in (f"/step?id={sub}", f"/task?id={task_id}", f"/tasks?q={task_id}"):
            r = await http.get(path)
            assert r.status_code == 200, path
            assert "<script>alert" not in r.text, path
            assert "<img src=x" not in r.text, path
            assert "&lt;script&gt;" in r.text, path


async def test_no_secret_appears_on_any_page(board: Running, database_url: str) -> None:
    async with sign_in(board.url, "rita") as http:
        for path in ("/tasks", "/start", "/reviews", "/escalations", "/org", "/costs",
                     "/login"):
            r = await http.get(path)
            assert r.status_code == 200, path
            for secret in ("test-key", database_url, "test-secret-", "argon2"):
                assert secret not in r.text, (path, secret)
            assert "test-key" not in str(r.headers)


# -- start a task ---------------------------------------------------------------------------
async def test_start_form_shows_every_error_and_starts_nothing_when_invalid(
    board: Running, deps: Deps
) -> None:
    cyclic = "steps:\n  - {id: a, type: tool, tool: echo, deps: [b]}\n" \
             "  - {id: b, type: tool, tool: echo, deps: [a]}\n"
    async with sign_in(board.url, "rita") as http:
        before = await deps.pool.fetchval("SELECT count(*) FROM tasks")
        r = await post_form(http, "/start", "/start", {"priority": "medium", "prompt": ""})
        assert r.status_code == 400
        assert "give either a prompt or a plan file" in r.text
        r = await post_form(http, "/start", "/start",
                            {"priority": "medium", "budget": "-3", "deadline": "2001-01-01T00:00",
                             "assignee": "nobody"},
                            files={"plan": ("cyclic.yaml", cyclic.encode())})
        assert r.status_code == 400
        for msg in ("dependency cycle", "budget must be a whole number",
                    "deadline has already passed", "unknown agent"):
            assert msg in r.text, msg
        assert await deps.pool.fetchval("SELECT count(*) FROM tasks") == before
        plan = "steps:\n  - {id: a, type: tool, tool: echo, args: {value: hi},"\
               " assignee: tools-eng}\n"
        r = await post_form(http, "/start", "/start",
                            {"priority": "high", "budget": "5000", "title": "from the board"},
                            files={"plan": ("ok.yaml", plan.encode())})
        assert r.status_code == 303, r.text
        task_id = r.headers["location"].split("id=")[1]
        row = await deps.pool.fetchrow("SELECT * FROM tasks WHERE id = $1", task_id)
        for _ in range(100):
            row = await deps.pool.fetchrow("SELECT * FROM tasks WHERE id = $1", task_id)
            if row and row["status"] == "COMPLETED":
                break
            await asyncio.sleep(0.1)
        assert row is not None
        assert (row["status"], row["priority"], row["creator"], row["title"]) == (
            "COMPLETED", "high", "rita", "from the board")
        page = (await http.get(r.headers["location"])).text
        assert f"http://ui.example:8233/namespaces/default/workflows/{task_id}/" \
               f"{row['run_id']}/history" in page


# -- tasks page -----------------------------------------------------------------------------
async def test_tasks_page_filters_counts_and_pages_newest_first(board: Running,
                                                               deps: Deps) -> None:
    tag = uuid.uuid4().hex[:6]
    await deps.pool.executemany(
        "INSERT INTO tasks (id, title, status, priority, created_at)"
        " VALUES ($1, $2, $3, $4, now() - make_interval(secs => $5))",
        [(f"pg-{tag}-{i:03d}", f"paged {tag} {i}", "COMPLETED" if i % 3 else "FAILED",
          "high" if i % 2 else "low", float(i)) for i in range(120)])
    seen: list[str] = []
    async with sign_in(board.url, "rita") as http:
        url = f"/tasks?q={tag}"
        while url:
            r = await http.get(url)
            assert r.status_code == 200
            seen += re.findall(r'data-task="([^"]+)"', r.text)
            m = re.search(r'href="([^"]+)" id="older"', r.text)
            url = m.group(1).replace("&amp;", "&") if m else ""
        assert seen == [f"pg-{tag}-{i:03d}" for i in range(120)]
        r = await http.get(f"/tasks?q={tag}&status=FAILED&priority=low")
        ids = re.findall(r'data-task="([^"]+)"', r.text)
        assert ids == [f"pg-{tag}-{i:03d}" for i in range(120) if i % 3 == 0 and i % 2 == 0]
        # Counts ignore the status filter: what each status chip would give.
        assert re.search(r">FAILED</span> 20\b", r.text)
        assert re.search(r">COMPLETED</span> 40\b", r.text)


# -- live -----------------------------------------------------------------------------------
async def test_a_store_write_reaches_an_open_event_stream(board: Running, deps: Deps) -> None:
    task_id = f"live-{uuid.uuid4().hex[:6]}"
    sub = await seed_task(deps.pool, task_id, output="x", title="live")
    async with (sign_in(board.url, "rita") as http,
                http.stream("GET", f"/events?topic=task:{task_id}") as stream):
        lines = stream.aiter_lines()
        assert (await anext(lines)).startswith("retry:")
        await deps.pool.execute("UPDATE subtasks SET status = 'FAILED' WHERE id = $1", sub)

        async def first_data() -> dict[str, Any]:
            async for line in lines:
                if line.startswith("data: "):
                    data: dict[str, Any] = json.loads(line[6:])
                    return data
            raise AssertionError("stream ended")

        event = await asyncio.wait_for(first_data(), timeout=5)
        assert event == {"table": "subtasks", "task": task_id, "subtask": sub,
                         "status": "FAILED"}


# -- graph ----------------------------------------------------------------------------------
async def test_graph_command_draws_the_same_picture_as_the_task_page(
    client: Client, board: Running, deps: Deps, database_url: str
) -> None:
    handle = await start_task(client, board.settings, TaskInput(plan=plan_of(
        {"id": "a", "type": "tool", "tool": "echo", "args": {"value": 1},
         "assignee": "tools-eng"},
        {"id": "b", "type": "tool", "tool": "echo", "args": {"value": 2}, "deps": ["a"],
         "assignee": "tools-eng"},
        {"id": "c", "type": "tool", "tool": "echo", "args": {"value": 3}, "deps": ["a"],
         "assignee": "tools-eng"},
        {"id": "d", "type": "tool", "tool": "concat", "args": {"parts": ["${b}", "${c}"]},
         "deps": ["b", "c"], "assignee": "tools-eng"})))
    result = await asyncio.wait_for(outcome(handle), timeout=30)
    assert result.status.value == "COMPLETED", result.error
    out = Path(str(board.settings.state_dir)) / "plan.svg"
    rc, stdout, err = await beestown("graph", handle.id, "--svg", str(out),
                                     database_url=database_url)
    assert rc == 0, err
    svg = out.read_text()
    async with sign_in(board.url, "rita") as http:
        page = (await http.get(f"/task?id={handle.id}")).text
    for picture in (svg, page):
        nodes = dict(re.findall(r'data-step="([^"]+)" data-status="([^"]+)"', picture))
        assert nodes == dict.fromkeys("abcd", "COMPLETED")
        edges = set(re.findall(r'data-from="([^"]+)" data-to="([^"]+)"', picture))
        assert edges == {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")}
    assert "critical path" in stdout
    rc, stdout, err = await beestown("watch", handle.id, database_url=database_url)
    assert rc == 0, err
    assert "COMPLETED" in stdout


# -- metrics --------------------------------------------------------------------------------
async def test_metrics_port_serves_board_and_town_figures(board_worker: Settings,
                                                         deps: Deps) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    await migrate_board(deps.pool)
    await add_people(deps.pool)
    await seed_task(deps.pool, f"metrics-{uuid.uuid4().hex[:6]}", output="x", title="m")
    async with (running_board(board_worker, metrics_port=port) as r,
                httpx.AsyncClient(base_url=r.url) as http):
        await http.get("/login")
        text = ""
        for _ in range(50):
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            if 'beestown_steps{status="COMPLETED",type="write"}' in text:
                break
            await asyncio.sleep(0.1)
        assert 'beestown_steps{status="COMPLETED",type="write"}' in text
        assert 'beestown_board_requests_total{code="200",route="/login"}' in text
        assert "beestown_board_event_streams 0.0" in text


async def test_sign_in_never_sends_a_person_to_another_site(board: Running) -> None:
    async with httpx.AsyncClient(base_url=board.url) as http:
        for nxt, expected in (("//evil.example/x", "/tasks"), ("/\\evil.example", "/tasks"),
                              ("https://evil.example", "/tasks"), ("/org", "/org")):
            page = await http.get("/login", params={"next": nxt})
            r = await http.post("/login", params={"next": nxt}, data={
                "name": "rita", "password": PASSWORD, "csrf": csrf_of(page.text)})
            assert r.headers["location"] == expected, nxt
        r = await post_form(http, "/reviews", "/review",
                            {"subtask": "x/y", "agent": "writer", "decision": "approve"})
        r2 = await http.post("/review", data={"csrf": csrf_of((await http.get("/org")).text),
                                              "subtask": "x/y", "agent": "writer",
                                              "decision": "approve"},
                             headers={"referer": "https://evil.example/phish"})
        assert r.headers["location"] == "/reviews"
        assert r2.headers["location"] == "/reviews"


async def test_a_step_split_into_a_sub_plan_links_to_it_from_the_graph(
        board: Running, deps: Deps) -> None:
    task_id = f"nest-{uuid.uuid4().hex[:6]}"
    sub = await seed_task(deps.pool, task_id, output="x", title="parent step")
    await deps.pool.execute(
        "INSERT INTO tasks (id, title, status, parent_subtask) VALUES ($1, 'sub', 'COMPLETED',"
        " $2)", f"{sub}/sub1", sub)
    await deps.pool.execute(
        "INSERT INTO subtasks (id, task_id, step_id, type, status) VALUES ($1, $2, 'inner',"
        " 'tool', 'COMPLETED')", f"{sub}/sub1/inner", f"{sub}/sub1")
    async with sign_in(board.url, "rita") as http:
        page = (await http.get("/task", params={"id": task_id})).text
        nested = (await http.get("/task", params={"id": f"{sub}/sub1"})).text
    assert f'xlink:href="/task?id={task_id}%2Fa%2Fsub1"' in page
    assert "▸ sub&#45;plan" in page  # the node says so (dot escapes the dash)
    assert 'data-step="inner"' in nested
    assert "Nested in step" in nested


async def test_pages_work_while_temporal_is_down_and_starting_says_why(
        settings: Settings, deps: Deps) -> None:
    await migrate_board(deps.pool)
    await add_people(deps.pool)
    task_id = f"down-{uuid.uuid4().hex[:6]}"
    sub = await seed_task(deps.pool, task_id, output="stored", title="while down")
    down = settings.model_copy(update={"temporal_address": "127.0.0.1:9"})
    async with running_board(down) as r, sign_in(r.url, "rita") as http:
        for path in (f"/task?id={task_id}", f"/step?id={sub}", "/tasks", "/reviews"):
            assert (await http.get(path)).status_code == 200, path
        plan = "steps:\n  - {id: a, type: tool, tool: echo}\n"
        resp = await post_form(http, "/start", "/start", {"priority": "low"},
                               files={"plan": ("p.yaml", plan.encode())})
        assert resp.status_code == 400
        assert "Temporal at 127.0.0.1:9" in resp.text


async def test_artifacts_png_inline_and_files_downloaded(board: Running, deps: Deps) -> None:
    import base64

    task_id = f"art-{uuid.uuid4().hex[:6]}"
    sub = await seed_task(deps.pool, task_id, output="chart", title="chart")
    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    store = Store(deps.pool)
    await store.save_blob(f"{sub}#png", task_id=task_id, subtask=sub, name="result-0.png",
                          mime="image/png", data=png)
    await store.save_blob(f"{sub}#csv", task_id=task_id, subtask=sub, name="data <1>.html",
                          mime="text/html", data=b"<script>alert(1)</script>")
    async with sign_in(board.url, "rita") as http:
        page = (await http.get("/step", params={"id": sub})).text
        assert f'<img src="/blob?id={task_id}%2Fa%23png"' in page
        assert "data &lt;1&gt;.html" in page
        r = await http.get("/blob", params={"id": f"{sub}#png"})
        assert (r.headers["content-type"], r.content) == ("image/png", png)
        assert r.headers["content-disposition"].startswith("inline")
        r = await http.get("/blob", params={"id": f"{sub}#csv"})
        assert r.headers["content-type"] == "application/octet-stream"  # never rendered
        assert r.headers["content-disposition"].startswith("attachment")
        assert r.headers["x-content-type-options"] == "nosniff"
