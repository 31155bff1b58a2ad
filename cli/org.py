"""`beestown org load` and `org show`: the org chart, checked, stored and drawn."""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape
from rich.tree import Tree

from cli.output import emit_json
from cli.session import EXIT_OK, BadUsage, Session
from models.org import InvalidOrg
from runtime.documents import load_org


async def cmd_org_load(args: argparse.Namespace, s: Session) -> int:
    from runtime.org_store import OrgStore

    try:
        chart = load_org(args.file)
    except InvalidOrg as e:
        raise BadUsage("invalid org chart:\n  " + "\n  ".join(e.errors)) from e
    change = await OrgStore(await s.pool()).save_org(chart)
    if args.json:
        emit_json(change)
        return EXIT_OK
    s.out.print(f"org chart {escape(str(args.file))}: {len(chart.agents)} agents, "
                f"root {escape(chart.root.id)}")
    s.out.print("tasks started from now on use it (running workers need no restart; one "
                "started with BEESTOWN_ORG=0 ignores it)")
    if not (change.added or change.changed or change.removed):
        s.out.print("no change")
    for what, ids in (("added", change.added), ("changed", change.changed),
                      ("removed", change.removed)):
        if ids:
            s.out.print(f"  {what}: {escape(', '.join(ids))}")
    return EXIT_OK


async def cmd_org_show(args: argparse.Namespace, s: Session) -> int:
    from runtime.org_store import OrgStore

    store = OrgStore(await s.pool())
    count = await store.pool.fetchval("SELECT count(*) FROM agents WHERE removed_at IS NULL")
    if not count:
        if args.json:
            emit_json({"root": None, "departments": [], "agents": []})
        else:
            s.out.print("no org chart loaded: beestown org load FILE")
        return EXIT_OK
    chart = await store.load_org()
    loads = await store.loads()
    agents = [
        a.model_dump(mode="json") | {
            "all_skills": sorted(chart.skills_of(a.id)),
            "load": loads.get(a.id, 0),
            "reports": [r.id for r in chart.reports(a.id)],
        }
        for a in chart.agents
    ]
    if args.json:
        emit_json({"root": chart.root.id,
                   "departments": [d.model_dump(mode="json") for d in chart.departments],
                   "agents": agents})
        return EXIT_OK
    by_id = {a["id"]: a for a in agents}

    def label(a: dict[str, Any]) -> str:
        name = f" {escape(a['name'])}" if a["name"] else ""
        dept = f" [cyan]{escape(a['department'])}[/]" if a["department"] else ""
        inactive = "" if a["active"] else " [red]inactive[/]"
        load_style = "red" if a["load"] >= a["capacity"] else "green"
        lines = [
            f"[bold]{escape(a['id'])}[/]{name}{dept}{inactive}  "
            f"[{load_style}]load {a['load']}/{a['capacity']}[/]  review {a['review_policy']}",
        ]
        if a["role"]:
            lines.append(f"[dim]{escape(a['role'])}[/]")
        if a["all_skills"]:
            lines.append("skills: " + escape(", ".join(a["all_skills"])))
        return "\n".join(lines)

    def grow(branch: Tree, agent_id: str) -> None:
        for r in by_id[agent_id]["reports"]:
            grow(branch.add(label(by_id[r])), r)

    root = Tree(label(by_id[chart.root.id]))
    grow(root, chart.root.id)
    s.out.print(root)
    return EXIT_OK
