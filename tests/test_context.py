"""An agent's context: the seed's task fields (project, related files and agents, parent
task) and memories that stay inside their project and hold only approved results."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client

from models.io import TaskInput
from models.review import Decision, ReviewInput
from models.task import Status
from models.tools import InvalidToolsConfig
from runtime.documents import load_org
from runtime.org_store import OrgStore
from runtime.settings import Settings
from runtime.store import Store
from runtime.tools.errors import ToolFailed
from runtime.tools.files import FileRefused, Workspace, register_file_tools
from runtime.tools.registry import ToolRegistry
from testkit.fake_llm import FakeLLM, Scripted
from tests.conftest import make_settings, temporal_address
from tests.helpers import by_step, outcome, plan_of, start_task
from worker import Deps, build_workers

ROOT = Path(__file__).resolve().parent.parent


def workspace_tree(tmp: Path) -> Path:
    """A workspace with a brief, a big file and a binary one; a secret and symlinks that
    point outside it."""
    root = tmp / "ws"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "brief.md").write_text("The okapi brief: stripes on the legs only.\n")
    (root / "big.txt").write_text("a" * 5000 + "TAIL")
    (root / "blob.bin").write_bytes(bytes(range(256)))
    (tmp / "secret.txt").write_text("the vault code is 4711")
    (root / "escape.txt").symlink_to(tmp / "secret.txt")
    (root / "outside").symlink_to(tmp)
    (root / "alias.md").symlink_to(root / "docs" / "brief.md")
    return root


@pytest_asyncio.fixture
async def ws_worker(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> AsyncIterator[Settings]:
    """A worker whose workspace is a fresh tree; the example org chart is stored."""
    await OrgStore(deps.pool).save_org(load_org(ROOT / "examples" / "org.yaml"))
    settings = make_settings(tmp_path, database_url, llm.base_url, temporal_address(client),
                             workspace_root=workspace_tree(tmp_path),
                             workspace_file_limit=1000)
    async with contextlib.AsyncExitStack() as stack:
        for w in build_workers(client, settings, deps):
            await stack.enter_async_context(w)
        yield settings


def user_message(request: dict[str, Any]) -> str:
    return str(request["body"]["messages"][1]["content"])


# -- the seed's fields ----------------------------------------------------------------------
def test_seed_task_fields_are_read_by_their_camel_case_names() -> None:
    task = TaskInput.model_validate({
        "prompt": "x", "projectId": "zoo", "relatedFiles": ["docs/brief.md"],
        "relatedAgents": ["writer"], "parentTaskId": "t-parent"})
    assert (task.project_id, task.related_files, task.related_agents, task.parent_task) == (
        "zoo", ["docs/brief.md"], ["writer"], "t-parent")
    # What BeesTown writes (and history carries) uses the snake_case names, and reads back.
    dumped = task.model_dump(mode="json")
    assert dumped["project_id"] == "zoo"
    assert "projectId" not in dumped
    assert TaskInput.model_validate(dumped) == task
    with pytest.raises(ValueError, match="should match pattern"):
        TaskInput.model_validate({"projectId": "../etc"})


# -- the workspace and its file tool ------------------------------------------------------
async def test_workspace_refuses_traversal_outside_paths_and_escaping_symlinks(
    tmp_path: Path,
) -> None:
    ws = Workspace(workspace_tree(tmp_path), limit=1000)
    assert "stripes" in (await ws.read("docs/brief.md")).text
    assert "stripes" in (await ws.read(str(ws.root / "docs" / "brief.md"))).text
    assert "stripes" in (await ws.read("alias.md")).text  # a symlink inside is fine
    assert "stripes" in (await ws.read("docs/../docs/brief.md")).text
    refused = {
        "../secret.txt": "path traversal",
        "docs/../../secret.txt": "path traversal",
        str(tmp_path / "secret.txt"): "absolute path",
        "/etc/passwd": "absolute path",
        "escape.txt": "symlink",
        "outside/secret.txt": "symlink",
        "nothing.md": "does not exist",
        "docs": "not a regular file",
        "": "not a file path",
    }
    for path, why in refused.items():
        with pytest.raises(FileRefused, match=why):
            await ws.read(path)
    big = await ws.read("big.txt")
    assert big.truncated
    assert (big.size, len(big.text)) == (5004, 1000)
    assert "TAIL" not in big.shown()
    assert "big.txt is 5004 bytes; only the first 1000 are shown" in big.shown()
    blob = await ws.read("blob.bin")  # not UTF-8: replaced, not fatal
    assert "\ufffd" in blob.text
    assert not blob.truncated
    # A root that is not a directory stops the worker like a bad tools file.
    with pytest.raises(InvalidToolsConfig, match="BEESTOWN_WORKSPACE"):
        Workspace(tmp_path / "secret.txt")


async def test_read_file_tool_reads_the_workspace_and_refuses_the_rest(tmp_path: Path) -> None:
    registry = ToolRegistry()
    register_file_tools(registry, Workspace(workspace_tree(tmp_path)))
    assert "read_file" in registry.names()
    assert "stripes" in await registry.call("read_file", {"path": "docs/brief.md"})
    for path in ("../secret.txt", "escape.txt", str(tmp_path / "secret.txt")):
        with pytest.raises(ToolFailed, match="outside the workspace root") as e:
            await registry.call("read_file", {"path": path})
        assert not e.value.retryable
        assert "4711" not in str(e.value)


# -- the agent's context ---------------------------------------------------------------------
async def test_agent_context_has_related_files_agents_and_the_parent_task(
    client: Client, ws_worker: Settings, llm: FakeLLM, deps: Deps
) -> None:
    llm.script_for("Plan the okapi exhibit", "Plan: one enclosure.")
    parent = await outcome(await start_task(client, ws_worker, TaskInput.model_validate({
        "title": "Okapi exhibit", "prompt": "Plan the okapi exhibit for the spring opening",
        "projectId": f"zoo-{uuid.uuid4().hex[:6]}",
        "plan": plan_of({"id": "plan", "type": "write", "description": "Plan it"})})))
    assert parent.status is Status.COMPLETED, parent.error
    llm.script_for("Write the okapi sign", "Sign written.")
    child = await outcome(await start_task(client, ws_worker, TaskInput.model_validate({
        "prompt": "Write the okapi sign",
        "relatedFiles": ["docs/brief.md", "../secret.txt", "escape.txt", "big.txt"],
        "relatedAgents": ["writer", "ghost"], "parentTaskId": parent.task_id,
        "plan": plan_of({"id": "sign", "type": "write", "description": "Write the sign"})})))
    assert child.status is Status.COMPLETED, child.error
    [request] = [r for r in llm.requests if "Write the okapi sign" in user_message(r)]
    context = user_message(request)
    # Related files, read through the workspace; what leads outside it is refused.
    assert "# Related file docs/brief.md\nThe okapi brief: stripes on the legs only." in context
    assert "4711" not in context
    assert "'../secret.txt' is outside the workspace root (path traversal refused)" in context
    assert "'escape.txt' is a symlink leading outside the workspace root" in context
    assert "only the first 1000 are shown" in context
    # Related agents: role and skills from the chart; an unknown one is named as such.
    assert "- writer (Jane, Writer; turns findings into reports): skills" in context
    assert "summarizing" in context
    assert "- ghost: not in the org chart" in context
    # The parent task: its title and a summary of what it asked.
    assert f"# Parent task ({parent.task_id})\nOkapi exhibit\nPlan the okapi exhibit" in context
    # The child belongs to its parent's project; history carried only the paths.
    store = Store(deps.pool)
    rows = {t: await store.get_task(t) for t in (parent.task_id, child.task_id)}
    assert rows[child.task_id]["project_id"] == rows[parent.task_id]["project_id"]
    assert rows[child.task_id]["parent_task"] == parent.task_id
    for wid in (child.task_id, f"{child.task_id}/sign"):
        history = await client.get_workflow_handle(wid).fetch_history()
        assert "The okapi brief" not in history.to_json()


async def test_a_parent_task_that_does_not_exist_is_refused(
    client: Client, ws_worker: Settings, llm: FakeLLM
) -> None:
    result = await outcome(await start_task(client, ws_worker, TaskInput(
        parent_task="t-nobody", plan=plan_of(
            {"id": "e", "type": "tool", "tool": "echo", "args": {"value": 1}}))))
    assert result.status is Status.FAILED
    assert "parent task 't-nobody' does not exist" in (result.error or "")


def auto_org(tmp: Path) -> Path:
    """The example org, every manager approving on its own (no person in the loop)."""
    text = (ROOT / "examples" / "org.yaml").read_text()
    for policy in ("human", "llm"):
        text = text.replace(f"review_policy: {policy}", "review_policy: auto")
    path = tmp / "org.yaml"
    path.write_text(text)
    return path


async def test_nested_tasks_inherit_the_project_files_and_know_their_parent_task(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    await OrgStore(deps.pool).save_org(load_org(auto_org(tmp_path)))
    settings = make_settings(tmp_path, database_url, llm.base_url, temporal_address(client),
                             org_enabled=True, workspace_root=workspace_tree(tmp_path))
    project = f"zoo-{uuid.uuid4().hex[:6]}"
    llm.script_for("gather giraffe facts", Scripted(json.dumps({"steps": [
        {"id": "lookup", "type": "search", "title": "Look up giraffes",
         "description": "look up giraffe necks", "skills": ["search"],
         "assignee": "searcher"}]})))
    llm.script_for("look up giraffe necks", "Giraffe necks have seven vertebrae.")
    async with contextlib.AsyncExitStack() as stack:
        for w in build_workers(client, settings, deps):
            await stack.enter_async_context(w)
        result = await outcome(await start_task(client, settings, TaskInput(
            prompt="Giraffe exhibit", title="Giraffes", project_id=project,
            related_files=["docs/brief.md"], assignee="ceo", plan=plan_of(
                {"id": "facts", "type": "search", "title": "Facts",
                 "description": "gather giraffe facts", "assignee": "research-lead"}))))
    assert result.status is Status.COMPLETED, result.error
    t = result.task_id
    nested = await Store(deps.pool).get_task(f"{t}/facts/sub1")
    assert nested["project_id"] == project
    assert nested["parent_task"] == t
    assert list(nested["related_files"]) == ["docs/brief.md"]
    [request] = [r for r in llm.requests if "look up giraffe necks" in user_message(r)
                 and "tools" in r["body"]]
    context = user_message(request)
    assert f"# Parent task ({t})\nGiraffes\nGiraffe exhibit\nThis job is its step: facts" \
        in context
    assert "The okapi brief" in context  # the file the top task named
    memory = await deps.pool.fetchrow(
        "SELECT project_id, agent_id FROM memories WHERE id = $1", f"{t}/facts/sub1/lookup")
    assert memory is not None
    assert (memory["project_id"], memory["agent_id"]) == (project, "searcher")


# -- memory --------------------------------------------------------------------------------
async def test_a_second_project_cannot_recall_the_first_projects_memory(
    client: Client, worker: Settings, llm: FakeLLM
) -> None:
    first, second = (f"p-{uuid.uuid4().hex[:8]}" for _ in range(2))
    llm.script("Quokka colonies nest on Rottnest island.")
    done = await outcome(await start_task(client, worker, TaskInput(project_id=first, plan=plan_of(
        {"id": "r", "type": "search", "title": "Quokka colonies",
         "description": "Where do quokka colonies nest?"}))))
    assert done.status is Status.COMPLETED, done.error
    for project in (second, first):
        llm.script("ok")
        later = await outcome(await start_task(client, worker, TaskInput(
            project_id=project, plan=plan_of(
                {"id": "q", "type": "write", "title": "Brief on quokka colonies",
                 "description": "Write about where quokka colonies nest"}))))
        assert later.status is Status.COMPLETED, later.error
    other, same = user_message(llm.requests[1]), user_message(llm.requests[2])
    assert "Rottnest" not in other
    assert "Related results from earlier work" not in other
    assert "Quokka colonies nest on Rottnest island." in same  # its own project recalls it


async def test_recall_stays_in_its_project_and_prefers_the_agents_own(deps: Deps) -> None:
    store = Store(deps.pool)
    project, elsewhere = f"p-{uuid.uuid4().hex[:8]}", f"p-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    for task_id, proj in (("mem-a-" + project, project), ("mem-b-" + elsewhere, elsewhere)):
        await store.insert_task(task_id, TaskInput(prompt="x", project_id=proj),
                                status=Status.READY, created_at=now)
    memories = [("m1", "mem-a-" + project, "ada", "wombat burrows wombat burrows wombat"),
                ("m2", "mem-a-" + project, "linus", "wombat burrows"),
                ("m3", "mem-b-" + elsewhere, "linus", "wombat burrows everywhere")]
    for key, task_id, agent, text in memories:
        await store.remember(f"{key}-{project}", task_id=task_id, subtask=None,
                             title="Wombats", content=text, agent_id=agent)
    found = await store.recall("wombat burrows", project_id=project, agent_id="linus")
    assert [m["id"] for m in found] == [f"m2-{project}", f"m1-{project}"]
    found = await store.recall("wombat burrows", project_id=project, agent_id="ada")
    assert [m["id"] for m in found] == [f"m1-{project}", f"m2-{project}"]
    assert [m["project_id"] for m in await store.recall(
        "wombat", project_id=elsewhere)] == [elsewhere]


async def test_a_rejected_draft_is_never_remembered(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    text = (ROOT / "examples" / "org.yaml").read_text().replace(
        "review_policy: llm", "review_policy: human")
    (tmp_path / "org.yaml").write_text(text)
    await OrgStore(deps.pool).save_org(load_org(tmp_path / "org.yaml"))
    settings = make_settings(tmp_path, database_url, llm.base_url, temporal_address(client),
                             org_enabled=True)
    llm.script_for("mention the horns", "Okapi note, second draft: with ossicones.")
    llm.script_for("draft an okapi note", "Okapi note, first draft.")
    store = Store(deps.pool)
    async with contextlib.AsyncExitStack() as stack:
        for w in build_workers(client, settings, deps):
            await stack.enter_async_context(w)
        handle = await start_task(client, settings, TaskInput(plan=plan_of(
            {"id": "note", "type": "write", "description": "draft an okapi note",
             "assignee": "writer"}), assignee="research-lead", project_id="okapis"))
        sub = f"{handle.id}/note"

        async def review(decision: Decision, round_: int) -> None:
            for _ in range(300):
                row = await store.pool.fetchrow(
                    "SELECT status FROM subtasks WHERE id = $1", sub)
                rejected = await store.pool.fetchval(
                    "SELECT count(*) FROM events WHERE subtask_id = $1 "
                    "AND kind = 'review_requested'", sub)
                if row and row["status"] == "REVIEWING" and rejected >= round_:
                    break
                await asyncio.sleep(0.1)
            # Awaiting review: nothing of this draft is in memory yet.
            assert await store.pool.fetchval(
                "SELECT count(*) FROM memories WHERE subtask_id = $1", sub) == 0
            await client.get_workflow_handle(sub).execute_update("review", ReviewInput(
                reviewer_id="research-lead", decision=decision,
                feedback="mention the horns" if decision is Decision.REJECT else ""))

        await review(Decision.REJECT, 1)
        await review(Decision.APPROVE, 2)
        result = await asyncio.wait_for(outcome(handle), timeout=30)
    assert result.status is Status.COMPLETED, result.error
    assert by_step(result)["note"].output == "Okapi note, second draft: with ossicones."
    rows = await store.pool.fetch(
        "SELECT content, agent_id, project_id FROM memories WHERE subtask_id = $1", sub)
    assert [(r["content"], r["agent_id"], r["project_id"]) for r in rows] == [
        ("Okapi note, second draft: with ossicones.", "writer", "okapis")]
    assert all("first draft" not in m["content"]
               for m in await store.recall("okapi first draft", project_id="okapis"))
