"""People: accounts with argon2 password hashes, the agents each acts for, the audit trail."""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from board.errors import Forbidden, Invalid

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_hasher = PasswordHasher()
# Verifying against this keeps an unknown name as slow as a wrong password.
_DUMMY_HASH = _hasher.hash("no such person")


@dataclass(frozen=True)
class Person:
    """A signed-in person and the agents they may act for."""

    name: str
    acts_for: tuple[str, ...]

    def may_act_for(self, agent: str) -> bool:
        return agent in self.acts_for

    def check(self, agent: str) -> None:
        """Raise Forbidden unless this person acts for `agent`."""
        if not self.may_act_for(agent):
            raise Forbidden(f"{self.name} does not act for {agent!r}")


class Accounts:
    """The board_people and board_audit tables."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def add(self, name: str, password: str, acts_for: list[str], *,
                  replace: bool = False) -> None:
        """Create (or with `replace`, update) an account; raise Invalid on a bad name."""
        errors = []
        if not NAME_PATTERN.match(name):
            errors.append(f"bad name {name!r}: letters, digits and . _ @ - (at most 64)")
        if len(password) < 8:
            errors.append("the password needs at least 8 characters")
        if errors:
            raise Invalid(errors)
        digest = await asyncio.to_thread(_hasher.hash, password)
        agents = sorted({a.strip() for a in acts_for if a.strip()})
        row = await self.pool.fetchrow(
            f"""
            INSERT INTO board_people (name, password_hash, acts_for) VALUES ($1, $2, $3)
            ON CONFLICT (name) DO {'UPDATE SET password_hash = EXCLUDED.password_hash,'
                                   ' acts_for = EXCLUDED.acts_for, active = true'
                                   if replace else 'NOTHING'}
            RETURNING name
            """,
            name, digest, agents,
        )
        if row is None:
            raise Invalid([f"{name} already has an account (use --replace to change it)"])

    async def remove(self, name: str) -> bool:
        return await self.pool.fetchval(
            "DELETE FROM board_people WHERE name = $1 RETURNING true", name) is not None

    async def list(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT name, acts_for, active, created_at FROM board_people ORDER BY name")
        return [dict(r) for r in rows]

    async def count(self) -> int:
        return int(await self.pool.fetchval(
            "SELECT count(*) FROM board_people WHERE active"))

    async def get(self, name: str) -> Person | None:
        row = await self.pool.fetchrow(
            "SELECT name, acts_for FROM board_people WHERE name = $1 AND active", name)
        return None if row is None else Person(row["name"], tuple(row["acts_for"]))

    async def verify(self, name: str, password: str) -> Person | None:
        """Return the person when `password` is theirs, else None (in constant-ish time)."""
        row = await self.pool.fetchrow(
            "SELECT name, password_hash, acts_for FROM board_people WHERE name = $1 AND active",
            name)
        digest = row["password_hash"] if row else _DUMMY_HASH
        try:
            await asyncio.to_thread(_hasher.verify, digest, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        return Person(row["name"], tuple(row["acts_for"]))

    async def audit(self, person: Person, *, agent: str | None, action: str,
                    workflow_id: str | None, payload: dict[str, Any], outcome: str) -> None:
        """Record who did (or tried) what, for whom, with what input and result."""
        await self.pool.execute(
            """
            INSERT INTO board_audit (person, agent, action, workflow_id, payload, outcome)
            VALUES ($1, $2, $3, $4, $5, $6)
            """,
            person.name, agent, action, workflow_id, payload, outcome,
        )


class SignInLimiter:
    """At most `attempts` failed sign-ins per key (address, name) within `window_s`."""

    def __init__(self, attempts: int, window_s: float) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, key: str) -> deque[float]:
        q = self._failures[key]
        cutoff = time.monotonic() - self.window_s
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def blocked(self, *keys: str) -> bool:
        return any(len(self._recent(k)) >= self.attempts for k in keys)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        for k in keys:
            self._recent(k).append(now)
        if len(self._failures) > 10_000:  # forget the quiet ones, keep memory bounded
            for k in [k for k, q in self._failures.items() if not q]:
                del self._failures[k]
