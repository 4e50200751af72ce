"""Goals: what a conversation must achieve, its instructions and its escalation policy."""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from parley import defaults
from parley.domain.errors import GoalNotFoundError, InvalidGoalIdError, InvalidInputError
from parley.domain.models import EscalationPolicy, Goal, JudgePolicy
from parley.domain.ports import GoalStore

GOAL_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_GOAL_ID = re.compile(GOAL_ID_PATTERN)


def slugify(name: str) -> str:
    """A goal id from a name: "Customer Support!" -> "customer-support"."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug[:64].rstrip("-_")


@dataclass(frozen=True, slots=True)
class GoalDraft:
    name: str
    instructions: str
    id: str | None = None
    model: str | None = None
    escalation: EscalationPolicy = field(default_factory=EscalationPolicy)
    idle_timeout_seconds: int = defaults.IDLE_TIMEOUT_SECONDS
    success_criteria: str | None = None
    judge: JudgePolicy = field(default_factory=JudgePolicy)


class GoalService:
    def __init__(self, goals: GoalStore) -> None:
        self._goals = goals

    async def create(self, draft: GoalDraft) -> Goal:
        goal_id = draft.id if draft.id is not None else slugify(draft.name)
        if not _GOAL_ID.match(goal_id):
            if draft.id is None:
                raise InvalidGoalIdError(
                    "cannot derive an id from this name; give an id matching " + GOAL_ID_PATTERN
                )
            raise InvalidGoalIdError(f"goal id must match {GOAL_ID_PATTERN}")
        now = datetime.now(UTC)
        goal = Goal(
            id=goal_id,
            name=draft.name,
            instructions=draft.instructions,
            model=draft.model,
            escalation=draft.escalation,
            created_at=now,
            updated_at=now,
            idle_timeout_seconds=draft.idle_timeout_seconds,
            success_criteria=draft.success_criteria,
            judge=draft.judge,
        )
        _check_judge(goal)
        return await self._goals.add(goal)

    async def get(self, goal_id: str) -> Goal:
        if not _GOAL_ID.match(goal_id):  # no such id can exist: no need to ask the store
            raise GoalNotFoundError(goal_id)
        goal = await self._goals.get(goal_id)
        if goal is None:
            raise GoalNotFoundError(goal_id)
        return goal

    async def all(self) -> list[Goal]:
        return await self._goals.all()

    async def oldest_ids(self, limit: int) -> list[str]:
        return await self._goals.oldest_ids(limit)

    async def update(
        self,
        goal_id: str,
        changes: dict[str, Any],
        escalation_changes: dict[str, Any],
        judge_changes: dict[str, Any] | None = None,
    ) -> Goal:
        """Apply a partial update: only the fields given change."""
        goal = await self.get(goal_id)
        escalation = dataclasses.replace(goal.escalation, **escalation_changes)
        judge = dataclasses.replace(goal.judge, **(judge_changes or {}))
        updated = dataclasses.replace(
            goal, **changes, escalation=escalation, judge=judge, updated_at=datetime.now(UTC)
        )
        _check_judge(updated)
        stored = await self._goals.replace(updated)
        if stored is None:
            raise GoalNotFoundError(goal_id)
        return stored

    async def delete(self, goal_id: str) -> None:
        if not await self._goals.delete(goal_id):
            raise GoalNotFoundError(goal_id)


def _check_judge(goal: Goal) -> None:
    if goal.judge.enabled and not goal.success_criteria:
        raise InvalidInputError("a goal that judges needs success_criteria to judge against")
