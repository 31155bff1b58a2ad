"""Search attributes: what people filter the Temporal Web UI's workflow list by.

    temporal workflow list --query "BeesTownStatus='REVIEWING'"
    temporal workflow list --query "BeesTownAssignee='writer' AND ExecutionStatus='Running'"
    temporal workflow list --query "WorkflowType='TaskWorkflow' AND BeesTownPriority='high'"
    temporal workflow list --query "BeesTownProject='q3-report'"

Every attribute must be registered in the namespace first (the demo's dev server and the
compose stack's setup job do it; a worker tries at start, see `client.ensure_search_attributes`):
upserting an unregistered one fails the workflow task over and over. So the workflows
upsert only when their worker said the attributes exist (`Routing.search_attributes`), and
histories recorded before this change (`workflow.patched`) upsert nothing.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey, SearchAttributeUpdate

STATUS = SearchAttributeKey.for_keyword("BeesTownStatus")
ASSIGNEE = SearchAttributeKey.for_keyword("BeesTownAssignee")
PRIORITY = SearchAttributeKey.for_keyword("BeesTownPriority")
PROJECT = SearchAttributeKey.for_keyword("BeesTownProject")
KEYS = (STATUS, ASSIGNEE, PRIORITY, PROJECT)

PATCH = "search-attributes"


def publish(enabled: bool, *, status: str | None = None, assignee: str | None = None,
            priority: str | None = None, project: str | None = None) -> None:
    """Upsert the given attributes (empty values are left out) when the namespace has them."""
    if not enabled:
        return
    updates: list[SearchAttributeUpdate[Any]] = [
        key.value_set(value)
        for key, value in ((STATUS, status), (ASSIGNEE, assignee), (PRIORITY, priority),
                           (PROJECT, project))
        if value
    ]
    if updates and workflow.patched(PATCH):
        workflow.upsert_search_attributes(updates)
