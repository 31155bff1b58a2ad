"""Documents from outside (plan, org chart, tools and price files; a model's plan) as models.

One reader for every YAML or JSON file (``load_document``) and one way to say what is
wrong with one (``describe``), so that every bad file is reported alike: the file's
path, then one sentence per problem, each naming where it is (``agents.0.capacity: ...``;
a list entry with a ``name`` is named by it: ``tools[1] ('web') ...``).

Each kind of document keeps its own exception (``InvalidPlan``, ``InvalidOrg``,
``InvalidToolsConfig``, ``PriceTableError``); each is built from the list of problems
and keeps it as ``errors``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from pydantic import BaseModel, ValidationError

from models.org import InvalidOrg, OrgChart
from models.plan import InvalidPlan, Plan, graph_errors, raw_nodes, unknown_fields, unwrap_plan
from models.tools import InvalidToolsConfig, ToolsConfig
from runtime.llm.json_reply import UnreadableJSON, read_json

M = TypeVar("M")
E = TypeVar("E", bound=Exception)


def problems(e: ValidationError, data: Any = None) -> list[str]:
    """Return one sentence per error in `e`; `data` (what was validated) names list entries.

    A validator that raised an exception carrying its own ``errors`` list (an org chart's
    graph rules) contributes those sentences as they are.
    """
    out: list[str] = []
    for err in e.errors():
        cause = (err.get("ctx") or {}).get("error")
        nested = getattr(cause, "errors", None)
        if isinstance(nested, list):
            out.extend(str(n) for n in nested)
            continue
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] in ("dict_type", "model_type"):
            msg = f"expected a mapping, got {type(err['input']).__name__}"
        where = _where(list(err["loc"]), data)
        out.append(f"{where} {msg}" if where else msg)
    return out


def describe(e: ValidationError, data: Any = None) -> str:
    """Return every error in `e` as one line: sentences joined by '; '."""
    return "; ".join(problems(e, data))


def _where(loc: list[Any], data: Any) -> str:
    """Return what goes before a message: `a.0.b:`; a named list entry: `a[0] ('x') b:`."""
    named = ""
    if len(loc) >= 2 and isinstance(loc[1], int) and isinstance(data, dict):
        entries = data.get(loc[0])
        entry = entries[loc[1]] if isinstance(entries, list) and loc[1] < len(entries) else None
        if isinstance(entry, dict) and entry.get("name"):
            named, loc = f"{loc[0]}[{loc[1]}] ({entry['name']!r})", loc[2:]
    dotted = ".".join(str(p) for p in loc)
    return " ".join(w for w in (named, f"{dotted}:" if dotted else "") if w)


def load_document(
    path: Path | str,
    model: type[M] | Callable[[Any], M],
    *,
    what: str,
    error: type[E],
) -> M:
    """Return the `model` in a YAML or JSON file (JSON is YAML too).

    `model` is a pydantic model, or a function from the decoded data to one that raises
    `error` (a plan is also checked as a graph). `what` names the file in messages.

    Raises:
        error: built from a list of problems, each naming the file.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise error([f"cannot read {what} {path}: {e.strerror}"]) from e
    except yaml.YAMLError as e:
        raise error([f"{path}: not YAML or JSON: {e}"]) from e
    try:
        if isinstance(model, type) and issubclass(model, BaseModel):
            return cast(M, model.model_validate(data))
        return cast(Callable[[Any], M], model)(data)
    except ValidationError as e:
        raise error([f"{path}: {p}" for p in problems(e, data)]) from e
    except error as e:
        raise error([f"{path}: {p}" for p in getattr(e, "errors", [str(e)])]) from e


# -- plans ----------------------------------------------------------------------------
def parse_plan(data: Any, *, max_steps: int, tools: Collection[str] | None = None) -> Plan:
    """Return a valid Plan from decoded JSON/YAML, or raise InvalidPlan naming every problem.

    Every problem at once: unknown fields, fields that do not validate, and the graph's
    (duplicates, unknown or self dependencies, cycles, the cap, unknown `tools` when given)
    read from the raw data when the fields do not validate.
    """
    data = unwrap_plan(data)
    errors = unknown_fields(data)
    plan: Plan | None = None
    try:
        plan = Plan.model_validate(data)
    except ValidationError as e:
        errors += problems(e, data)
    nodes = raw_nodes(data) if plan is None else None
    if plan is not None or nodes is not None:
        errors += graph_errors(plan if plan is not None else nodes or [],
                               max_steps=max_steps, tools=tools)
    if errors or plan is None:
        raise InvalidPlan(errors or ["the plan cannot be read"])
    return plan


def parse_plan_text(text: str, *, max_steps: int, tools: Collection[str] | None = None) -> Plan:
    """Return a valid Plan from a model's reply (JSON, maybe fenced, wrapped in prose, or
    needing repair), or raise InvalidPlan; a repaired reply's problems name where the JSON
    was broken first."""
    try:
        reading = read_json(text)
    except UnreadableJSON as e:
        raise InvalidPlan(e.errors) from e
    try:
        return parse_plan(reading.value, max_steps=max_steps, tools=tools)
    except InvalidPlan as e:
        if reading.problem is None:
            raise
        raise InvalidPlan([f"the reply is not valid JSON ({reading.problem}); read "
                           "leniently it gives this plan", *e.errors]) from e


def load_plan(path: Path | str, *, max_steps: int) -> Plan:
    """Return the valid Plan in a YAML or JSON file, or raise InvalidPlan naming the file."""
    return load_document(path, partial(parse_plan, max_steps=max_steps), what="plan file",
                         error=InvalidPlan)


# -- org charts -----------------------------------------------------------------------
def parse_org(data: Any) -> OrgChart:
    """Return a valid OrgChart from decoded YAML/JSON, or raise InvalidOrg naming every problem."""
    try:
        return OrgChart.model_validate(data)
    except ValidationError as e:
        raise InvalidOrg(problems(e, data)) from e


def load_org(path: Path | str) -> OrgChart:
    """Return the valid OrgChart in a YAML or JSON file, or raise InvalidOrg naming the file."""
    return load_document(path, parse_org, what="org file", error=InvalidOrg)


# -- tools files ----------------------------------------------------------------------
def parse_tools_config(data: Any) -> ToolsConfig:
    """Return the validated config in decoded YAML/JSON, or raise InvalidToolsConfig."""
    try:
        return ToolsConfig.model_validate({} if data is None else data)
    except ValidationError as e:
        raise InvalidToolsConfig(problems(e, data)) from e


def load_tools_config(path: Path | str) -> ToolsConfig:
    """Return the validated config in a YAML or JSON file, or raise InvalidToolsConfig."""
    return load_document(path, parse_tools_config, what="tools file", error=InvalidToolsConfig)
