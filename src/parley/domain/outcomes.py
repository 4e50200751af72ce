"""How a conversation's end gets its outcome: given by whoever ended it, or left to the
LLM judge when its goal asks for one; and each goal's results, read from the store."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from parley.domain.models import Closing, Goal, Outcome, OutcomeSource

# What a client or an agent may report; the judge gives achieved or not_achieved.
REPORTABLE = tuple(Outcome)


def closing_for(
    goal: Goal, conversation_id: uuid.UUID, source: OutcomeSource, given: Outcome | None
) -> Closing:
    """The end to record. An outcome a client or an agent reports stands; otherwise (none
    reported, or the timeout's abandoned) the goal's judge grades it, if the goal judges
    and this conversation falls in its sample."""
    reported = given is not None and source is not OutcomeSource.TIMEOUT
    judged = not reported and judges(goal, conversation_id)
    return Closing(outcome=given, source=source, judged=judged)


def judges(goal: Goal, conversation_id: uuid.UUID) -> bool:
    """Whether the judge grades this conversation of the goal: the same answer on every
    replica and at every retry (a hash of its id against the sample rate)."""
    if not goal.judge.enabled or not goal.success_criteria:
        return False
    digest = hashlib.sha256(conversation_id.bytes).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < goal.judge.sample_rate


@dataclass(frozen=True, slots=True)
class OutcomeStats:
    """One outcome's share of a goal's ended conversations."""

    count: int
    median_turns: float | None
    median_duration_seconds: float | None


@dataclass(frozen=True, slots=True)
class GoalResults:
    """A goal's conversations that ended since a moment, from the store."""

    goal_id: str
    since: datetime
    ended: int
    contained: int  # ended without ever being handed to a human
    judging: int  # ended, their outcome awaiting the judge (not in by_outcome yet)
    by_outcome: dict[Outcome, OutcomeStats]

    @property
    def success_ratio(self) -> float | None:
        """Achieved, of those with a verdict (achieved or not): None before any."""
        achieved = self.by_outcome[Outcome.ACHIEVED].count
        verdicts = achieved + self.by_outcome[Outcome.NOT_ACHIEVED].count
        return achieved / verdicts if verdicts else None

    @property
    def containment(self) -> float | None:
        return self.contained / self.ended if self.ended else None
