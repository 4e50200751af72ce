"""The tables, as SQLAlchemy Core ``Table`` objects: what the repositories' statements are
built from. The Alembic migrations are the schema's source of truth; these describe it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    Uuid,
    false,
)
from sqlalchemy.engine import Dialect


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, also on SQLite, which keeps no zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

GOALS = Table(
    "goals",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("instructions", Text, nullable=False),
    Column("model", String(200)),
    Column("max_turns", Integer, nullable=False),
    Column("trigger_phrases", JSON, nullable=False),
    Column("escalate_on_llm_failure", Boolean, nullable=False),
    Column("max_llm_failures", Integer, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # A conversation's budget: reaching either escalates it (reason "budget").
    Column("budget_tokens", Integer),
    Column("budget_nanos", BigInteger),
    Column("idle_timeout_seconds", Integer, nullable=False, server_default="1800"),
    Column("success_criteria", Text),
    Column("judge_enabled", Boolean, nullable=False, server_default=false()),
    Column("judge_sample_rate", Float, nullable=False, server_default="1.0"),
)

CONVERSATIONS = Table(
    "conversations",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("goal_id", String(64), ForeignKey("goals.id", ondelete="RESTRICT"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("message_count", Integer, nullable=False, default=0),
    Column("turns", Integer, nullable=False, default=0),
    Column("llm_failures", Integer, nullable=False, default=0),  # consecutive failed turns
    Column("escalation_reason", String(32)),
    Column("escalation_note", Text),
    Column("escalated_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("owner", String(64)),  # the name of the key that created it (None: no keys)
    # Its replies' tokens and cost so far, against its goal's budget.
    Column("tokens_used", Integer, nullable=False, server_default="0"),
    Column("cost_nanos", BigInteger, nullable=False, server_default="0"),
    # Its current (or last) handoff to a human agent: None until it first escalates.
    Column("handoff_state", String(16)),
    Column("handoff_agent", String(64)),
    Column("handoff_assigned_at", UTCDateTime()),
    Column("handoff_first_agent_reply_at", UTCDateTime()),
    Column("handoff_resolved_at", UTCDateTime()),
    Column("handoff_note", Text),  # the agent's note when resolving it
    # Its end: when, the outcome and who gave it, and its user messages by then.
    Column("ended_at", UTCDateTime()),
    Column("outcome", String(16)),
    Column("outcome_source", String(16)),
    Column("ended_turns", Integer),
    Index("ix_conversations_listing", "created_at", "id"),
    Index("ix_conversations_owner", "owner", "created_at", "id"),
    Index("ix_conversations_goal", "goal_id", "created_at", "id"),
    Index("ix_conversations_status", "status"),
    Index("ix_conversations_handoff", "handoff_state", "escalated_at", "id"),
    Index("ix_conversations_ended", "goal_id", "ended_at"),
    Index("ix_conversations_idle", "goal_id", "status", "updated_at"),
)

# An escalation opens a new handoff: waiting, held by nobody (the last one's times cleared).
NEW_HANDOFF = {
    "handoff_state": "waiting",
    "handoff_agent": None,
    "handoff_assigned_at": None,
    "handoff_first_agent_reply_at": None,
    "handoff_resolved_at": None,
    "handoff_note": None,
}

MESSAGES = Table(
    "messages",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column(
        "conversation_id",
        Uuid,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("seq", Integer, nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("model", String(200)),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("total_tokens", Integer),
    Column("cached_prompt_tokens", Integer),  # of prompt_tokens, served from the cache
    Column("created_at", UTCDateTime(), nullable=False),
    Column(
        "reply_to", Uuid, ForeignKey("messages.id", ondelete="CASCADE", name="fk_messages_reply_to")
    ),
    Column("status", String(16), nullable=False, default="complete"),
    Column("idempotency_key", String(255)),
    # A keyed user message: until when some replica is answering it (its retries wait).
    Column("answering_until", UTCDateTime()),
    Column("author", String(64)),  # an agent's message: the agent's key name
    Index("ux_messages_seq", "conversation_id", "seq", unique=True),
    Index("ux_messages_reply_to", "reply_to", unique=True),
    Index("ux_messages_idempotency_key", "conversation_id", "idempotency_key", unique=True),
)

# What happened around a conversation's handoff, for the live streams: appended in the
# same transaction as the change (see store.events). ``id`` orders every conversation's
# events as they committed (the queue's stream), ``seq`` one conversation's (its stream).
CONVERSATION_EVENTS = Table(
    "conversation_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column(
        "conversation_id",
        Uuid,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("seq", Integer, nullable=False),
    Column("goal_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("step", String(24)),  # a handoff event's step
    Column("message_id", Uuid, ForeignKey("messages.id", ondelete="CASCADE")),
    Column("state", JSON),  # a handoff event: the conversation's status and handoff after it
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ux_conversation_events_seq", "conversation_id", "seq", unique=True),
)

# Webhook deliveries: one row per event and endpoint, made from the event log (the
# outbox: events commit with their change) by whichever replica takes the endpoint's
# cursor, and claimed by one replica at a time (a lease) until delivered or given up.
WEBHOOK_CURSORS = Table(
    "webhook_cursors",
    metadata,
    Column("endpoint", String(64), primary_key=True),
    Column("last_event_id", BigInteger, nullable=False),  # events up to it are queued
)

WEBHOOK_DELIVERIES = Table(
    "webhook_deliveries",
    metadata,
    Column(
        "event_id",
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("conversation_events.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("endpoint", String(64), primary_key=True),
    Column("conversation_id", Uuid, nullable=False),
    Column("type", String(32), nullable=False),
    Column("state", String(16), nullable=False),  # pending, delivered, failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=False),  # or the lease's end
    Column("created_at", UTCDateTime(), nullable=False),  # retries stop a window after it
    Column("delivered_at", UTCDateTime()),
    Column("last_error", String(200)),
    Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
    Index("ix_webhook_deliveries_order", "endpoint", "conversation_id", "state", "event_id"),
)

# The judge's verdict on an ended conversation, and its queue until then: one row per
# conversation, pending until a replica (holding it by a lease in next_attempt_at) grades
# it, retried with backoff, then done or failed.
EVALUATIONS = Table(
    "evaluations",
    metadata,
    Column(
        "conversation_id",
        Uuid,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("goal_id", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # pending, done, failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=False),  # or the lease's end
    Column("created_at", UTCDateTime(), nullable=False),
    Column("evaluated_at", UTCDateTime()),
    Column("label", String(16)),
    Column("score", Float),
    Column("explanation", Text),
    Column("model", String(200)),
    Column("last_error", String(200)),
    # The W3C traceparent of the request that ended it (tracing on, sampled): the verdict's
    # span links to it.
    Column("origin_trace", String(55)),
    Index("ix_evaluations_due", "state", "next_attempt_at"),
)

API_KEYS = Table(
    "api_keys",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("digest", String(64), nullable=False),  # SHA-256 of the secret, hex
    Column("created_at", UTCDateTime(), nullable=False),
    Column("last_used_at", UTCDateTime()),
    Column("revoked_at", UTCDateTime()),
    Column("budget_nanos", BigInteger),  # None: no budget
    Column("budget_period", String(8), nullable=False, server_default="month"),
    Column("rpm", Integer),
    Column("tpm", Integer),
    Index("ux_api_keys_digest", "digest", unique=True),
)

# How many times a key changed (revoked, its limits changed): one row, moved in the same
# transaction. A replica on SQLite reads it on each request to know whether the keys it
# keeps still hold (on PostgreSQL, NOTIFY tells instead: parley.bus).
KEY_EPOCH = Table(
    "key_epoch",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("epoch", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="ck_key_epoch_one_row"),
)

# What each key spent per UTC day, in nano-dollars: updated in the transaction that stores
# each reply, so it cannot drift from the stored usage.
KEY_SPEND = Table(
    "key_spend",
    metadata,
    Column("key_name", String(64), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("cost_nanos", BigInteger, nullable=False),
)
