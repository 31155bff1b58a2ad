"""What a worker process opens from its settings, and that it closes it when one part fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.org import InvalidOrg
from runtime.deps import Deps, open_deps
from runtime.llm.prices import PriceTableError
from tests.conftest import make_settings


async def _connections(deps: Deps) -> int:
    value = await deps.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
    return int(value)


@pytest.mark.parametrize("bad", ["prices", "org"])
async def test_open_deps_closes_its_pool_when_a_file_is_bad(
    bad: str, deps: Deps, database_url: str, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("- not\n- a mapping\n")
    files = {"price_table_file": broken} if bad == "prices" else {"org_file": broken}
    settings = make_settings(tmp_path, database_url, "http://unused:1", "unused:0",
                             worker_roles="workflows", **files)
    before = await _connections(deps)
    for _ in range(3):  # a leak would grow by a connection each time
        with pytest.raises(PriceTableError if bad == "prices" else InvalidOrg):
            async with open_deps(settings):
                pass
    assert await _connections(deps) == before


async def test_sandbox_settings_reach_the_workers_sandbox(
    database_url: str, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-env" / "bin" / "python"
    settings = make_settings(tmp_path, database_url, "http://unused:1", "unused:0",
                             worker_roles="sandbox", sandbox_python=missing)
    async with open_deps(settings) as deps:
        assert deps.sandbox is None
        assert deps.sandbox_problem is not None
        assert str(missing) in deps.sandbox_problem
