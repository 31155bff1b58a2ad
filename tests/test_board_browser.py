"""The board in a real browser (Debian's chromium driven by playwright) against a real
worker, Temporal dev server and PostgreSQL: sign in, start a plan, watch it live, review,
reject and approve, be refused, decide an escalation. Screenshots of each page are kept
under the test's tmp directory (printed at the end)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect
from temporalio.client import Client

from testkit.fake_llm import FakeLLM
from tests.test_board import PASSWORD, Running, update_events, wait_for_status
from worker import Deps

pytest_plugins = ["tests.test_board"]

PLAN = """\
title: browser plan
steps:
  - {id: fetch, type: tool, tool: sleep, args: {seconds: 5}, assignee: tools-eng,
     title: Fetch the data}
  - {id: note, type: write, deps: [fetch], assignee: writer, title: Write the note,
     description: draft a note about the data}
  - {id: publish, type: tool, tool: echo, args: {value: "${note}"}, deps: [note],
     assignee: tools-eng, title: Publish it}
"""

BROKEN = """\
steps:
  - {id: broken, type: tool, tool: fail, args: {message: source down}, assignee: tools-eng}
  - {id: after, type: tool, tool: echo, args: {value: 1}, deps: [broken], assignee: tools-eng}
"""


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is missing: make system (apt-get install chromium)")
    return path


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium())
        try:
            yield b
        finally:
            await b.close()


class Shots:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.paths: list[Path] = []

    async def take(self, page: Page, name: str) -> None:
        path = self.root / f"{len(self.paths) + 1:02d}-{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        self.paths.append(path)


async def sign_in(browser: Browser, url: str, name: str, shots: Shots | None = None) -> Page:
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await ctx.new_page()
    await page.goto(url + "/tasks")
    await expect(page).to_have_url(f"{url}/login?next=%2Ftasks")
    await page.fill("input[name=name]", name)
    await page.fill("input[name=password]", PASSWORD)
    if shots:
        await shots.take(page, "sign-in")
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{url}/tasks")
    return page


async def node_status(page: Page, step: str, status: str, timeout_ms: float = 30_000) -> None:
    await expect(page.locator(f'#graph g[data-step="{step}"]')).to_have_attribute(
        "data-status", status, timeout=timeout_ms)


async def start_plan(page: Page, url: str, tmp: Path, name: str, text: str) -> str:
    plan = tmp / name
    plan.write_text(text)
    await page.goto(url + "/start")
    await page.set_input_files("input[name=plan]", str(plan))
    await page.select_option("select[name=priority]", "high")
    await page.click("form[action='/start'] button[type=submit]")
    await page.wait_for_url(f"{url}/task?id=*", timeout=15_000)
    return page.url.split("id=", 1)[1]


async def test_a_person_starts_watches_reviews_and_decides_in_a_browser(
    client: Client, board: Running, browser: Browser, llm: FakeLLM, deps: Deps,
    tmp_path: Path
) -> None:
    llm.script_for("make it longer", "A longer note.")
    llm.script_for("draft a note", "A note.")
    url = board.url
    # BOARD_SCREENSHOTS keeps them somewhere pytest's tmp rotation does not reach.
    shots = Shots(Path(os.environ.get("BOARD_SCREENSHOTS") or tmp_path / "screenshots"))
    rita = await sign_in(browser, url, "rita", shots)
    await shots.take(rita, "tasks")

    # An invalid form starts nothing and says why.
    before = await deps.pool.fetchval("SELECT count(*) FROM tasks")
    await rita.goto(url + "/start")
    await rita.fill("input[name=budget]", "lots")
    await rita.click("form[action='/start'] button[type=submit]")
    errors = rita.locator("#form-errors")
    await expect(errors).to_contain_text("give either a prompt or a plan file")
    await expect(errors).to_contain_text("token budget must be a whole number")
    await shots.take(rita, "start-invalid")
    assert await deps.pool.fetchval("SELECT count(*) FROM tasks") == before

    # Start the plan from the form; the page shows it live.
    task_id = await start_plan(rita, url, tmp_path, "plan.yaml", PLAN)
    await expect(rita.locator("body[data-live='1']")).to_have_count(1, timeout=10_000)
    await rita.evaluate("window.__sameDocument = true")
    await node_status(rita, "fetch", "RUNNING")
    await shots.take(rita, "task-running")
    await node_status(rita, "fetch", "COMPLETED")
    assert await rita.evaluate("window.__sameDocument === true")  # no reload happened

    # The graph is the plan: its nodes and edges.
    nodes = await rita.locator("#graph g.node").evaluate_all(
        "els => els.map(e => e.dataset.step)")
    edges = await rita.locator("#graph g.edge").evaluate_all(
        "els => els.map(e => [e.dataset.from, e.dataset.to])")
    assert sorted(nodes) == ["fetch", "note", "publish"]
    assert sorted(map(tuple, edges)) == [("fetch", "note"), ("note", "publish")]
    await node_status(rita, "note", "REVIEWING")
    assert await rita.evaluate("window.__sameDocument === true")

    # The review waits in "My reviews"; a rejection needs feedback.
    note = f"{task_id}/note"
    await rita.goto(url + "/reviews")
    card = rita.locator(f'section.review[data-subtask="{note}"]')
    await expect(card).to_contain_text("A note.")
    await shots.take(rita, "my-reviews")
    await card.locator("button[value=reject]").click()
    await expect(rita.locator(".flash.error")).to_contain_text("needs feedback")
    assert await update_events(client, note) == 0
    card = rita.locator(f'section.review[data-subtask="{note}"]')
    await card.locator("textarea[name=feedback]").fill("make it longer")
    await card.locator("button[value=reject]").click()
    await expect(rita.locator(".flash.ok")).to_contain_text("rejected as research-lead")
    # The rework comes back for review on the same page, without a reload.
    await rita.evaluate("window.__sameDocument = true")
    await expect(rita.locator(f'section.review[data-subtask="{note}"]')).to_contain_text(
        "A longer note.", timeout=30_000)
    assert await rita.evaluate("window.__sameDocument === true")
    await shots.take(rita, "my-reviews-rework")
    updates = await update_events(client, note)

    # carl acts for ceo, not for research-lead: refused with 403, nothing reaches Temporal.
    carl = await sign_in(browser, url, "carl")
    await carl.goto(url + "/reviews")
    await expect(carl.locator("#no-reviews")).to_be_visible()
    token = await carl.locator("input[name=csrf]").first.get_attribute("value")
    refused = await carl.request.post(url + "/review", form={
        "csrf": token or "", "subtask": note, "agent": "research-lead", "decision": "approve"})
    assert refused.status == 403
    assert await update_events(client, note) == updates

    # rita approves; the dependent step starts and the task completes, live.
    card = rita.locator(f'section.review[data-subtask="{note}"]')
    await card.locator("button[value=approve]").click()
    await expect(rita.locator(".flash.ok")).to_contain_text("approved as research-lead")
    await rita.goto(f"{url}/task?id={task_id}")
    await rita.evaluate("window.__sameDocument = true")
    await node_status(rita, "publish", "COMPLETED")
    await expect(rita.locator("h1 .status")).to_have_text("COMPLETED", timeout=15_000)
    assert await rita.evaluate("window.__sameDocument === true")
    await shots.take(rita, "task-completed")
    await rita.goto(f"{url}/step?id={note}")
    await expect(rita.locator("#reviews")).to_contain_text("make it longer")
    await expect(rita.locator("#output")).to_contain_text("A longer note.")
    await shots.take(rita, "step")

    # An escalation reaches the top (ceo, a person): rita may not decide it, carl skips it.
    broken_task = await start_plan(rita, url, tmp_path, "broken.yaml", BROKEN)
    broken = f"{broken_task}/broken"
    await wait_for_status(deps.pool, broken, "BLOCKED", within_s=60)
    await rita.goto(url + "/escalations")
    esc = rita.locator(f'section.escalation[data-subtask="{broken}"]')
    await expect(esc).to_contain_text("held by ceo", timeout=20_000)
    await expect(esc).to_contain_text("you act for nobody who may decide this")
    token = await rita.locator("input[name=csrf]").first.get_attribute("value")
    refused = await rita.request.post(url + "/resolve", multipart={
        "csrf": token or "", "subtask": broken, "agent": "ceo", "action": "skip"})
    assert refused.status == 403
    assert await update_events(client, broken) == 0
    await carl.goto(url + "/escalations")
    esc = carl.locator(f'section.escalation[data-subtask="{broken}"]')
    await expect(esc).to_contain_text("waits for a person")
    await shots.take(carl, "escalations")
    await esc.locator("select[name=action]").select_option("skip")
    await esc.locator("input[name=note]").fill("not worth it")
    await esc.locator("button[type=submit]").click()
    await expect(carl.locator(".flash.ok")).to_contain_text("skip as ceo")
    await carl.goto(f"{url}/task?id={broken_task}")
    try:
        await expect(carl.locator("h1 .status")).to_have_text("FAILED", timeout=20_000)
    except AssertionError:
        rows = await deps.pool.fetch("SELECT id, status, updated_at FROM tasks WHERE id = $1"
                                     " UNION ALL SELECT id, status, updated_at FROM subtasks"
                                     " WHERE task_id = $1", broken_task)
        raise AssertionError(f"{[tuple(r) for r in rows]} {await carl.content()}") from None
    await expect(carl.locator('#steps tr[data-step="broken"]')).to_contain_text("FAILED")
    await carl.goto(f"{url}/step?id={broken}")
    await expect(carl.locator("#step-error")).to_contain_text("skipped by ceo")
    audit = await deps.pool.fetchrow(
        "SELECT person, agent, action, outcome, payload FROM board_audit"
        " WHERE workflow_id = $1 AND outcome = 'ok'", broken)
    assert audit is not None
    assert (audit["person"], audit["agent"], audit["action"]) == ("carl", "ceo", "resolve")
    assert audit["payload"]["action"] == "skip"

    for name in ("org", "costs"):
        await rita.goto(f"{url}/{name}")
        await shots.take(rita, name)
    await expect(rita.locator("#agents")).to_have_count(0)  # costs page: no agents table
    await rita.goto(f"{url}/org")
    await expect(rita.locator("#agents")).to_contain_text("research-lead")
    await rita.goto(f"{url}/tasks")
    await shots.take(rita, "tasks-after")
    print("\nscreenshots:\n" + "\n".join(str(p) for p in shots.paths))
