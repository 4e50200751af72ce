from parley.domain.escalation import matched_trigger, reason_before_reply
from parley.domain.models import EscalationPolicy, EscalationReason

POLICY = EscalationPolicy(max_turns=3, trigger_phrases=("human", "talk to an agent"))


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
    assert reason_before_reply(POLICY, "get me a human", 1) is EscalationReason.TRIGGER_PHRASE
    assert reason_before_reply(POLICY, "hello", 3) is None
    assert reason_before_reply(POLICY, "hello", 4) is EscalationReason.MAX_TURNS
