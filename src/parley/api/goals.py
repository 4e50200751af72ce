"""``/v1/goals``: what a conversation must achieve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from parley.api.auth import roles
from parley.api.deps import ConversationsDep, GoalsDep
from parley.api.schemas import (
    ErrorBody,
    GoalCreate,
    GoalList,
    GoalOut,
    GoalOutcomesOut,
    GoalUpdate,
    OutcomeStatsOut,
)
from parley.domain.errors import InvalidInputError
from parley.domain.goals import GoalDraft
from parley.domain.keys import Role
from parley.domain.models import EscalationPolicy, Goal, JudgePolicy

router = APIRouter(prefix="/goals", tags=["goals"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such goal"}
}


def _out(goal: Goal) -> GoalOut:
    return GoalOut.model_validate(goal)


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"model": ErrorBody, "description": "A goal with this id exists"}},
    **roles(Role.ADMIN),
)
async def create_goal(body: GoalCreate, goals: GoalsDep) -> GoalOut:
    """Create a goal; its id is derived from the name when not given."""
    policy = body.escalation
    goal = await goals.create(
        GoalDraft(
            id=body.id,
            name=body.name,
            instructions=body.instructions,
            model=body.model,
            escalation=EscalationPolicy(
                policy.max_turns,
                tuple(policy.trigger_phrases),
                policy.on_llm_failure,
                policy.max_llm_failures,
                policy.budget_tokens,
                policy.budget_usd,
            ),
            idle_timeout_seconds=body.idle_timeout_seconds,
            success_criteria=body.success_criteria,
            judge=JudgePolicy(body.judge.enabled, body.judge.sample_rate),
        )
    )
    return _out(goal)


@router.get("/", **roles(Role.CLIENT, Role.AGENT, Role.ADMIN))
async def list_goals(goals: GoalsDep) -> GoalList:
    """List every goal, ordered by id."""
    return GoalList(items=[_out(goal) for goal in await goals.all()])


@router.get("/{goal_id}", responses=_NOT_FOUND, **roles(Role.CLIENT, Role.AGENT, Role.ADMIN))
async def get_goal(goal_id: str, goals: GoalsDep) -> GoalOut:
    """Get one goal."""
    return _out(await goals.get(goal_id))


@router.patch("/{goal_id}", responses=_NOT_FOUND, **roles(Role.ADMIN))
async def update_goal(goal_id: str, body: GoalUpdate, goals: GoalsDep) -> GoalOut:
    """Change some of a goal's fields; the others stay as they are."""
    changes = body.model_dump(exclude_unset=True, exclude={"escalation", "judge"})
    escalation = body.escalation.model_dump(exclude_unset=True) if body.escalation else {}
    if "trigger_phrases" in escalation:
        escalation["trigger_phrases"] = tuple(escalation["trigger_phrases"])
    judge = body.judge.model_dump(exclude_unset=True) if body.judge else {}
    return _out(await goals.update(goal_id, changes, escalation, judge))


@router.get("/{goal_id}/outcomes", responses=_NOT_FOUND, **roles(Role.AGENT, Role.ADMIN))
async def goal_outcomes(
    goal_id: str,
    conversations: ConversationsDep,
    since: Annotated[
        datetime | None,
        Query(description="From this moment (ISO 8601, with a zone); default: 7 days ago"),
    ] = None,
) -> GoalOutcomesOut:
    """How the goal's conversations ended since a moment, from the database.

    Counts by outcome, success ratio, containment, median turns and duration per outcome."""
    now = datetime.now(UTC)
    start = since or now - timedelta(days=7)
    if start.tzinfo is None:
        raise InvalidInputError("since needs a time zone (2026-12-01T00:00:00Z)")
    results = await conversations.results(goal_id, start)
    return GoalOutcomesOut(
        goal_id=results.goal_id,
        since=results.since,
        ended=results.ended,
        judging=results.judging,
        success_ratio=results.success_ratio,
        containment=results.containment,
        outcomes={
            outcome: OutcomeStatsOut.model_validate(stats)
            for outcome, stats in results.by_outcome.items()
        },
    )


@router.delete(
    "/{goal_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_NOT_FOUND, 409: {"model": ErrorBody, "description": "Goal has conversations"}},
    **roles(Role.ADMIN),
)
async def delete_goal(goal_id: str, goals: GoalsDep) -> Response:
    """Delete a goal that no conversation uses."""
    await goals.delete(goal_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
