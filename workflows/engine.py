"""The agent engine inside a subtask workflow: model turns and tool calls, each an activity.

A crash resumes at the last finished call: finished model turns and tool calls are in
history and never run again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities import errors
    from activities.agent import AgentActivities
    from activities.code import CodeActivities
    from activities.tools import ToolActivities
    from models.agent import (
        AgentTurnInput,
        CodeAttempt,
        ToolCallRequest,
        ToolReply,
        WriteCodeInput,
    )
    from models.io import StepOutcome, StepRun, SubtaskInput
    from models.task import Metrics
    from models.tools import ToolCallInput, ToolCallResult
    from workflows import policies
    from workflows.failures import ACTIVITY_FAILURES, failure_message

Progress = Callable[[float, str], None]


async def run_agent(inp: SubtaskInput, run: StepRun, progress: Progress) -> StepOutcome:
    """Let the model work the step with tools until it answers (or its turns run out)."""
    seq, replies, total = 0, list[ToolReply](), Metrics()
    for turn in range(inp.max_turns):
        progress(turn / inp.max_turns, f"model turn {turn + 1}")
        res = await workflow.execute_activity_method(
            AgentActivities.agent_turn,
            AgentTurnInput(run=run, turn=turn, seq=seq, replies=replies, budgets=inp.budgets,
                           max_turns=inp.max_turns),
            task_queue=inp.routing.llm_queue,
            start_to_close_timeout=policies.LLM_STEP_TIMEOUT,
            heartbeat_timeout=policies.LLM_HEARTBEAT,
            retry_policy=policies.LLM_RETRY,
        )
        total.add(res.metrics)
        seq = res.seq
        if res.outcome is not None:
            res.outcome.metrics = total
            return res.outcome
        names = ", ".join(c.name for c in res.tool_calls)
        progress((turn + 0.5) / inp.max_turns, f"turn {turn + 1}: calling {names}")
        replies = list(await asyncio.gather(
            *(call_tool(inp, run, turn, c) for c in res.tool_calls)))
    # The last turn offers no tools, so the model must have answered; this is a guard.
    raise ApplicationError(f"step {run.step.id} used its {inp.max_turns} model turns",
                           type=errors.TURN_CAP_REACHED, non_retryable=True)


async def call_tool(inp: SubtaskInput, run: StepRun, turn: int,
                    call: ToolCallRequest) -> ToolReply:
    """Run one tool call the model asked for; every failure becomes an answer it can read."""
    if call.args_error:
        result = ToolCallResult(ok=False, error=call.args_error,
                                error_type=errors.BAD_TOOL_ARGUMENTS)
        return ToolReply(call_id=call.call_id, name=call.name, result=result)
    tool_input = ToolCallInput(task_id=run.task_id, subtask_id=run.subtask_id,
                               call_id=f"r{run.round}-{turn}-{call.call_id}", name=call.name,
                               args=call.args, return_errors=True)
    try:
        if inp.routing.local_tools:
            result = await workflow.execute_local_activity_method(
                ToolActivities.call_tool, tool_input,
                start_to_close_timeout=policies.TOOL_TIMEOUT, retry_policy=policies.TOOL_RETRY,
            )
        else:
            result = await workflow.execute_activity_method(
                ToolActivities.call_tool, tool_input, task_queue=inp.routing.tool_queue,
                start_to_close_timeout=policies.TOOL_TIMEOUT,
                heartbeat_timeout=policies.TOOL_HEARTBEAT, retry_policy=policies.TOOL_RETRY,
            )
    except ACTIVITY_FAILURES as e:
        result = ToolCallResult(ok=False, error=failure_message(e), error_type=errors.TOOL_FAILED)
    if result.ref:
        # The model turn reads the whole output from the store; history needs no copy.
        result = result.model_copy(update={"preview": None})
    return ToolReply(call_id=call.call_id, name=call.name, result=result)


async def run_code(inp: SubtaskInput, run: StepRun) -> StepOutcome:
    """Run the step's code in the sandbox, waiting until its session is closed."""
    return await workflow.execute_activity_method(
        CodeActivities.run_code_step, run,
        task_queue=inp.routing.sandbox_queue,
        start_to_close_timeout=policies.CODE_TIMEOUT,
        heartbeat_timeout=policies.CODE_HEARTBEAT,
        retry_policy=policies.CODE_RETRY,
        cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    )


async def write_and_run_code(
    inp: SubtaskInput, run: StepRun, progress: Progress
) -> StepOutcome:
    """Have the model write the step's code; feed failures back for a few fix attempts."""
    attempts: list[CodeAttempt] = []
    total = Metrics()
    tries = policies.CODE_FIX_ATTEMPTS + 1
    outcome: StepOutcome | None = None
    for i in range(tries):
        progress(i / tries, "writing code" if i == 0 else f"fixing code (attempt {i + 1})")
        written = await workflow.execute_activity_method(
            AgentActivities.write_code,
            WriteCodeInput(run=run, attempts=attempts, budgets=inp.budgets),
            task_queue=inp.routing.llm_queue,
            start_to_close_timeout=policies.LLM_STEP_TIMEOUT,
            heartbeat_timeout=policies.LLM_HEARTBEAT,
            retry_policy=policies.LLM_RETRY,
        )
        total.add(written.metrics)
        step = run.step.model_copy(update={"code": written.code})
        progress((i + 0.5) / tries, "running code")
        outcome = await run_code(inp, run.model_copy(update={"step": step}))
        total.add(outcome.metrics)
        if outcome.success:
            break
        attempts.append(CodeAttempt(code=written.code,
                                    error=f"{outcome.error}\n{outcome.detail}".strip()))
    if outcome is None:  # only if CODE_FIX_ATTEMPTS were negative
        raise ApplicationError("no code attempt was made", type=errors.NO_CODE, non_retryable=True)
    outcome.metrics = total
    return outcome
