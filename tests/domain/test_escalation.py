import uuid
from datetime import UTC, datetime

from parley.domain.escalation import matched_trigger, reason_before_reply
from parley.domain.models import (
    Conversation,
    ConversationStatus,
    EscalationPolicy,
    EscalationReason,
)

POLICY = EscalationPolicy(max_turns=3, trigger_phrases=("human", "talk to an agent"))


def conversation(turns: int = 1, *, tokens_used: int = 0, cost_nanos: int = 0) -> Conversation:
    now = datetime.now(UTC)
    return Conversation(
        uuid.uuid4(),
        "support",
        ConversationStatus.ACTIVE,
        {},
        turns,
        now,
        now,
        tokens_used=tokens_used,
        cost_nanos=cost_nanos,
    )


def test_trigger_phrase_matches_whole_words_in_any_case() -> None:
    """A trigger fires on the phrase as words, whatever the case."""
    assert matched_trigger(POLICY, "Can I speak to a HUMAN, please?") == "human"
    assert matched_trigger(POLICY, "I want to talk to an agent") == "talk to an agent"


def test_trigger_phrase_ignores_longer_words() -> None:
    """'humane' and 'humans' are not a request for a human."""
    assert matched_trigger(POLICY, "Is this humane?") is None
    assert matched_trigger(POLICY, "humans are welcome") is None


def test_reason_before_reply_prefers_trigger_then_max_turns() -> None:
    """A trigger phrase escalates at once; otherwise turns past max_turns escalate."""
    trigger = reason_before_reply(POLICY, "get me a human", conversation(1))
    assert trigger is EscalationReason.TRIGGER_PHRASE
    assert reason_before_reply(POLICY, "hello", conversation(3)) is None
    assert reason_before_reply(POLICY, "hello", conversation(4)) is EscalationReason.MAX_TURNS


def test_a_conversation_that_reached_its_token_budget_escalates_with_reason_budget() -> None:
    """The goal's budget counts what the replies used so far: reaching it escalates."""
    policy = EscalationPolicy(budget_tokens=1000)
    below = conversation(tokens_used=999)
    assert reason_before_reply(policy, "hello", below) is None
    reached = conversation(tokens_used=1000)
    assert reason_before_reply(policy, "hello", reached) is EscalationReason.BUDGET


def test_a_conversation_that_reached_its_dollar_budget_escalates_with_reason_budget() -> None:
    policy = EscalationPolicy(budget_usd=0.01)
    below = conversation(cost_nanos=9_999_999)
    assert reason_before_reply(policy, "hello", below) is None
    reached = conversation(cost_nanos=10_000_000)
    assert reason_before_reply(policy, "hello", reached) is EscalationReason.BUDGET
    assert reason_before_reply(EscalationPolicy(), "hello", reached) is None
