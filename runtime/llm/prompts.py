"""What BeesTown tells the model, and how it reads the model's replies."""

from __future__ import annotations

import json
import re
from typing import Any

from models.agent import ToolCallRequest
from models.tools import ToolSpec

SPLIT_SYSTEM = """You split a job into a dependency graph of steps for BeesTown.
Reply with one JSON object and nothing else: {{"title": str, "steps": [step, ...]}}.
A step is {{"id": str (letters, digits, _ . -), "type": "search"|"code"|"tool"|"write",
"title": str, "description": str, "deps": [ids of steps whose output it needs],
"skills": [skills the step needs], "assignee": optional agent id}}.
A code step also has "code": Python source; it reads dependencies' outputs from the dict
`inputs` (keyed by step id) and prints its output. A tool step has "tool" (one of: {tools})
and "args" (an object; the string "${{step_id}}" stands for that dependency's output).
Use at most {max_steps} steps. No cycles; every dep must be the id of another step."""

REPAIR = """Your plan cannot run:
{errors}
Reply with the corrected plan as one JSON object, nothing else."""

AGENT_SYSTEM = """You are an agent of BeesTown. You carry out one {type} step of a larger
job. Use the tools offered when they help; call several at once when they are
independent. When the step is done, answer with its result as plain text and call no tool."""

CODE_SYSTEM = """You write Python 3 code that runs in a sandbox with no network. A dict
named `inputs` holds the outputs of the steps this one depends on, keyed by step id. numpy,
pandas and matplotlib are available. Print the step's result, or assign it (JSON-able) to a
variable named `result`. Reply with the code only, in one ```python fenced block."""

_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)

REVIEW_SYSTEM = """You review a teammate's result for one step of a job. Reply with JSON:
{"decision": "approve" | "reject", "feedback": "what to change (required to reject)"}."""
ESCALATION_SYSTEM = """A step you are responsible for is in trouble. Decide, replying with
JSON: {"action": "retry" | "skip" | "escalate", "note": "why"}."""
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["decision"],
    "properties": {"decision": {"enum": ["approve", "reject"]}, "feedback": {"type": "string"}},
}
DECISION_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["action"],
    "properties": {"action": {"enum": ["retry", "skip", "escalate"]},
                   "note": {"type": "string"}},
}


def parent_section(*, task_id: str, title: str, summary: str, step: str = "") -> str:
    """Tell an agent which task its job serves (and as which of that task's steps)."""
    text = f"# Parent task ({task_id})\n{title}\n{summary}".strip()
    return f"{text}\nThis job is its step: {step}" if step else text


def files_section(files: list[tuple[str, str]]) -> str:
    """Show the job's related files: (path, text or why it was not read) each."""
    return "\n\n".join(f"# Related file {path}\n{text}" for path, text in files)


def agents_section(ids: list[str], known: dict[str, dict[str, Any]]) -> str:
    """Describe the job's related agents: role and skills, or that the chart lacks them."""
    lines = ["# Agents related to this job"]
    for agent_id in ids:
        a = known.get(agent_id)
        if a is None:
            lines.append(f"- {agent_id}: not in the org chart")
            continue
        skills = sorted(set(a.get("skills") or []) | set(a.get("department_skills") or []))
        who = ", ".join(x for x in (a.get("name"), a.get("role")) if x)
        lines.append(f"- {agent_id}{f' ({who})' if who else ''}: skills "
                     f"{', '.join(skills) or 'none listed'}")
    return "\n".join(lines)


def model_tool_name(name: str) -> str:
    """Return a tool name as OpenAI accepts it ([A-Za-z0-9_-]): dots become '__'."""
    return name.replace(".", "__")


def extract_code(text: str) -> str:
    """Return the code in a model's reply: the first fenced block, else the whole reply."""
    m = _FENCE.search(text)
    return (m.group(1) if m else text).strip()


def tool_definition(spec: ToolSpec) -> dict[str, Any]:
    """Return a tool as OpenAI's function calling describes it."""
    params = spec.parameters or {"type": "object", "properties": {}}
    return {"type": "function", "function": {
        "name": model_tool_name(spec.name),
        "description": spec.description[:1000],
        "parameters": params,
    }}


def tool_call_request(call_id: str, name: str, arguments: str) -> ToolCallRequest:
    """Return the model's tool call, or why its arguments cannot be used."""
    try:
        args = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError as e:
        return ToolCallRequest(call_id=call_id, name=name,
                               args_error=f"arguments are not valid JSON: {e}")
    if not isinstance(args, dict):
        return ToolCallRequest(call_id=call_id, name=name,
                               args_error="arguments must be a JSON object")
    return ToolCallRequest(call_id=call_id, name=name, args=args)
