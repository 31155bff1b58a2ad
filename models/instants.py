"""Instants in time: every datetime BeesTown reads is a UTC instant.

A deadline written without an offset (``2099-01-01T00:00:00``, as people and models write
them) is read as UTC, the same instant on every machine; one with an offset is converted
to UTC. Workflow code can then compare it with ``workflow.now()`` (always UTC) safely.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator


def as_utc(value: datetime) -> datetime:
    """Return `value` as an aware UTC datetime; a naive one is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


#: A datetime field that always holds an aware UTC instant (naive input is read as UTC).
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
