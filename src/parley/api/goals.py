"""``/v1/goals``: what a conversation must achieve."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from parley.api.auth import roles
from parley.api.deps import GoalsDep
from parley.api.schemas import ErrorBody, GoalCreate, GoalList, GoalOut, GoalUpdate
from parley.domain.goals import GoalDraft
from parley.domain.keys import Role
from parley.domain.models import EscalationPolicy, Goal

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
    changes = body.model_dump(exclude_unset=True, exclude={"escalation"})
    escalation = body.escalation.model_dump(exclude_unset=True) if body.escalation else {}
    if "trigger_phrases" in escalation:
        escalation["trigger_phrases"] = tuple(escalation["trigger_phrases"])
    return _out(await goals.update(goal_id, changes, escalation))


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
