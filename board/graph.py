"""A plan drawn as SVG by Graphviz `dot`: nodes coloured by status, the critical path marked.

Layout depends only on the plan's structure (steps, edges, labels, links), so it is run
once per structure and cached; colours and the critical path are painted onto the cached
SVG as CSS classes. A status change therefore costs a string substitution, not a layout.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from itertools import pairwise
from urllib.parse import quote

from board.errors import BoardError

STATUS_COLOURS: dict[str, str] = {
    "PENDING": "#f1f5f9", "SPLITTING": "#e9d5ff", "READY": "#e0f2fe", "QUEUED": "#e2e8f0",
    "ASSIGNED": "#bfdbfe", "RUNNING": "#7dd3fc", "REVIEWING": "#a5b4fc",
    "COMPLETED": "#86efac", "FAILED": "#fca5a5", "CANCELLED": "#f0abfc", "BLOCKED": "#fde047",
}

_STYLE = "\n".join(
    [f".node.st-{s} path, .node.st-{s} polygon {{ fill: {c}; }}"
     for s, c in STATUS_COLOURS.items()]
    + [".node.crit path, .node.crit polygon { stroke: #dc2626; stroke-width: 2.5px; }",
       ".edge.crit path { stroke: #dc2626; stroke-width: 2.5px; }",
       ".edge.crit polygon { stroke: #dc2626; fill: #dc2626; }"])


@dataclass(frozen=True)
class Step:
    """What the picture needs of one subtask."""

    step_id: str
    subtask_id: str
    title: str = ""
    type: str = ""
    status: str = "PENDING"
    deps: tuple[str, ...] = ()
    seconds: float | None = None  # actual (or, while it runs, elapsed) duration
    estimate: float | None = None
    nested: tuple[str, ...] = ()  # tasks a manager split this step into


@dataclass
class Picture:
    """A painted SVG and what it shows."""

    svg: str
    critical: list[str] = field(default_factory=list)


def steps_from_rows(rows: Sequence[dict[str, object]], nested: dict[str, list[str]],
                    *, now: datetime | None = None) -> list[Step]:
    """Return the graph's steps from `subtasks` rows (and nested task ids by subtask id)."""
    now = now or datetime.now(UTC)
    out = []
    for r in rows:
        seconds = r.get("actual_duration_s")
        started = r.get("started_at")
        if seconds is None and isinstance(started, datetime) and r.get("status") in (
                "RUNNING", "REVIEWING", "BLOCKED"):
            seconds = (now - started).total_seconds()
        deps = r.get("dependencies") or []
        estimate = r.get("estimated_duration_s")
        out.append(Step(
            step_id=str(r["step_id"]), subtask_id=str(r["id"]), title=str(r.get("title") or ""),
            type=str(r.get("type") or ""), status=str(r.get("status") or "PENDING"),
            deps=tuple(str(d) for d in deps) if isinstance(deps, list | tuple) else (),
            seconds=float(seconds) if isinstance(seconds, int | float) else None,
            estimate=float(estimate) if isinstance(estimate, int | float) else None,
            nested=tuple(nested.get(str(r["id"]), [])),
        ))
    return out


def critical_path(steps: Sequence[Step]) -> list[str]:
    """Return the step ids of the longest path by duration (actual, else estimate, else 1)."""
    by_id = {s.step_id: s for s in steps}
    order = _topological(steps)
    best: dict[str, float] = {}
    prev: dict[str, str | None] = {}
    for sid in order:
        s = by_id[sid]
        weight = s.seconds if s.seconds is not None else (s.estimate or 1.0)
        base, via = 0.0, None
        for d in s.deps:
            if d in best and best[d] > base:
                base, via = best[d], d
        best[sid], prev[sid] = base + weight, via
    if not best:
        return []
    end: str | None = max(best, key=lambda k: best[k])
    path = []
    while end is not None:
        path.append(end)
        end = prev[end]
    return path[::-1]


def _topological(steps: Sequence[Step]) -> list[str]:
    ids = {s.step_id for s in steps}
    deps = {s.step_id: [d for d in s.deps if d in ids and d != s.step_id] for s in steps}
    done: set[str] = set()
    order: list[str] = []
    for root in deps:
        stack = [(root, iter(deps[root]))]
        on_path = {root}
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                on_path.discard(node)
                if node not in done:
                    done.add(node)
                    order.append(node)
            elif nxt not in done and nxt not in on_path:
                on_path.add(nxt)
                stack.append((nxt, iter(deps[nxt])))
    return order


def dot_quote(text: str) -> str:
    """Quote `text` as a DOT string whose backslashes and quotes stay literal."""
    # dot expands escapes (\\N, \\G, ...) even in doubled backslashes of some attributes:
    # a backslash in user text is shown as a look-alike instead.
    text = text.replace("\\", "\u2216").replace('"', '\\"').replace("\n", " ")
    return '"' + text + '"'


def _cut(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def step_href(subtask_id: str) -> str:
    return "/step?id=" + quote(subtask_id, safe="")


def task_href(task_id: str) -> str:
    return "/task?id=" + quote(task_id, safe="")


def to_dot(steps: Sequence[Step], *, href: Callable[[Step], str] | None = None) -> str:
    """Return the DOT source of the plan's structure (no statuses: those are painted)."""

    def link(s: Step) -> str:
        return task_href(s.nested[-1]) if s.nested else step_href(s.subtask_id)

    href = href or link
    index = {s.step_id: i for i, s in enumerate(steps)}
    lines = [
        "digraph plan {",
        '  graph [rankdir=LR, nodesep=0.25, ranksep=0.45, bgcolor="transparent"];',
        '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica",'
        ' fontsize=10, margin="0.12,0.05"];',
        '  edge [color="#64748b", arrowsize=0.7];',
    ]
    for i, s in enumerate(steps):
        parts = [s.step_id] + ([_cut(s.title, 36)] if s.title else []) + (
            [f"[{s.type}]"] if s.type else []) + (["▸ sub-plan"] if s.nested else [])
        label = "\\n".join(dot_quote(p)[1:-1] for p in parts)
        tip = s.title or s.step_id
        lines.append(
            f'  n{i} [id="n{i}", label="{label}", tooltip={dot_quote(tip)},'
            f' URL={dot_quote(href(s))}, target="_top"'
            f'{", peripheries=2" if s.nested else ""}];')
    e = 0
    for s in steps:
        for d in s.deps:
            if d in index:
                lines.append(f'  n{index[d]} -> n{index[s.step_id]} [id="e{e}"];')
                e += 1
    lines.append("}")
    return "\n".join(lines)


class Layouts:
    """Runs `dot` once per distinct source; keeps the most recent `size` layouts."""

    def __init__(self, size: int = 256, *, dot: str | None = None) -> None:
        self.size = size
        self.dot = dot or shutil.which("dot")
        self._cache: OrderedDict[str, list[str]] = OrderedDict()
        self.runs = 0

    async def svg(self, source: str) -> str:
        """Return the SVG `dot` draws for `source` (once per distinct source)."""
        return "".join(await self.parts(source))

    async def parts(self, source: str) -> list[str]:
        """Return the layout of `source` cut at its nodes and edges (see `paint`)."""
        key = hashlib.sha256(source.encode()).hexdigest()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if not self.dot:
            raise BoardError("Graphviz `dot` is not installed (apt-get install graphviz)")
        proc = await asyncio.create_subprocess_exec(
            self.dot, "-Tsvg", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(source.encode()), timeout=30)
        if proc.returncode != 0:
            raise BoardError(f"dot failed: {err.decode(errors='replace')[:500]}")
        self.runs += 1
        text = out.decode()
        text = text[text.index("<svg"):]  # drop the XML prolog, doctype and comments
        parts = _split(re.sub(r"<!-- .*? -->\n", "", text))
        self._cache[key] = parts
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return parts


_MARK = re.compile(r'<g id="([ne])(\d+)" class="(?:node|edge)">')


def _split(svg: str) -> list[str]:
    """Cut a layout at its node and edge groups: text, kind, index, text, kind, ... ."""
    return _MARK.split(svg)


def paint(svg: str | list[str], steps: Sequence[Step], critical: Sequence[str]) -> str:
    """Return `svg` with each node classed by status and the critical path marked."""
    parts = _split(svg) if isinstance(svg, str) else svg
    on_path = set(critical)
    crit_edges = set(pairwise(critical))
    index = {s.step_id: i for i, s in enumerate(steps)}
    edges: list[tuple[str, str]] = [(d, s.step_id) for s in steps for d in s.deps
                                    if d in index]
    out = [parts[0]]
    for k in range(1, len(parts), 3):
        kind, i = parts[k], int(parts[k + 1])
        if kind == "n":
            s = steps[i]
            crit = " crit" if s.step_id in on_path else ""
            out.append(f'<g id="n{i}" class="node st-{escape(s.status)}{crit}" '
                       f'data-step="{escape(s.step_id)}" data-status="{escape(s.status)}">')
        else:
            a, b = edges[i] if i < len(edges) else ("", "")
            crit = " crit" if (a, b) in crit_edges else ""
            out.append(f'<g id="e{i}" class="edge{crit}" data-from="{escape(a)}" '
                       f'data-to="{escape(b)}">')
        out.append(parts[k + 2])
    head_end = out[0].index(">") + 1
    out[0] = out[0][:head_end] + f"\n<style>{_STYLE}</style>" + out[0][head_end:]
    return "".join(out)


async def draw(steps: Sequence[Step], layouts: Layouts, *,
               href: Callable[[Step], str] | None = None) -> Picture:
    """Return the plan's painted SVG (laid out once per structure)."""
    if not steps:
        return Picture(svg="")
    critical = critical_path(steps)
    parts = await layouts.parts(to_dot(steps, href=href))
    return Picture(svg=paint(parts, steps, critical), critical=critical)
