"""The escalation policy: when a conversation goes to a human without being asked to."""

from __future__ import annotations

import re
from functools import lru_cache

from parley.domain.models import NANOS_PER_USD, Conversation, EscalationPolicy, EscalationReason


@lru_cache(maxsize=256)
def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    # Whole words only: "agent" must not fire on "agents of change" or "reagent".
    return re.compile(rf"(?<!\w){re.escape(phrase)}(?!\w)", re.IGNORECASE)


def matched_trigger(policy: EscalationPolicy, content: str) -> str | None:
    for phrase in policy.trigger_phrases:
        if _phrase_pattern(phrase).search(content):
            return phrase
    return None


def reason_before_reply(
    policy: EscalationPolicy, content: str, conversation: Conversation
) -> EscalationReason | None:
    """The reason to escalate instead of replying to the user's message that made
    ``conversation`` what it is (its ``turns``-th), if any."""
    if matched_trigger(policy, content) is not None:
        return EscalationReason.TRIGGER_PHRASE
    if conversation.turns > policy.max_turns:
        return EscalationReason.MAX_TURNS
    if over_budget(policy, conversation):
        return EscalationReason.BUDGET
    return None


def over_budget(policy: EscalationPolicy, conversation: Conversation) -> bool:
    if policy.budget_tokens is not None and conversation.tokens_used >= policy.budget_tokens:
        return True
    return policy.budget_usd is not None and conversation.cost_nanos >= round(
        policy.budget_usd * NANOS_PER_USD
    )
