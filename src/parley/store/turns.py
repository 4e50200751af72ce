"""A turn's writes: opening it (the user's message) and storing its reply.

The hot path of every turn, so it is written in SQLAlchemy Core on one connection per
transaction: no unit of work, no identity map, and the fewest round trips. The functions
are synchronous: ``Database.run_transaction`` runs each whole in one transaction (on
SQLite in a worker thread, on PostgreSQL through the async driver). Opening an
unkeyed turn is BEGIN, UPDATE ... RETURNING (status check, lock, counters and time in
one statement), INSERT, the history, COMMIT (the goal comes from the GoalCache, or one
SELECT more); storing its reply is BEGIN,
UPDATE ... RETURNING, INSERT, COMMIT.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Integer,
    Row,
    bindparam,
    case,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from parley.domain.errors import (
    ConversationClosedError,
    ConversationEscalatedError,
    ConversationNotFoundError,
    IdempotencyKeyReusedError,
)
from parley.domain.models import (
    OPEN_HANDOFF,
    Conversation,
    ConversationStatus,
    Escalation,
    EscalationReason,
    Goal,
    Handoff,
    HandoffState,
    HandoffStep,
    Message,
)
from parley.domain.ports import (
    EscalationRule,
    OpenedTurn,
    ReplyDraft,
    SpendCap,
    escalated_by,
    held_for_agent,
)
from parley.llm.types import ChatMessage, Role
from parley.store.events import append_handoff, append_message
from parley.store.goals import GoalCache
from parley.store.keys import SPENT_SINCE
from parley.store.rows import CONVERSATION_COLUMNS as _CONVERSATION
from parley.store.rows import to_conversation, to_goal, to_message
from parley.store.tables import (
    CONVERSATIONS,
    GOALS,
    KEY_SPEND,
    MESSAGES,
    NEW_HANDOFF,
    UTCDateTime,
)

ACTIVE = ConversationStatus.ACTIVE.value
# A dict lookup, not an Enum call per row; an agent's messages reach the LLM as the
# assistant's side of the conversation.
_ROLES = {role.value: role for role in Role} | {Role.AGENT.value: Role.ASSISTANT}


class Repeated(Exception):  # noqa: N818 -- control flow, not an error
    """Leaves a transaction (rolling it back) with the turn an idempotency key names."""

    def __init__(self, turn: OpenedTurn) -> None:
        self.turn = turn


def now() -> datetime:
    return datetime.now(UTC)


def _not_before(column: Any) -> ColumnElement[datetime]:
    """The later of the column and the ``now`` parameter: times follow ``seq`` even if
    the clock steps back."""
    moment = bindparam("now", type_=UTCDateTime())
    return case((column > moment, column), else_=moment)


# Built once: building a statement costs more CPU than running it (cache keys are
# memoized on the statement object); the values travel as parameters.
_C, _M = CONVERSATIONS.c, MESSAGES.c
_OPEN = (
    update(CONVERSATIONS)
    .where(_C.id == bindparam("conversation_id"), _C.status == ACTIVE)
    .values(
        message_count=_C.message_count + 1,
        turns=_C.turns + 1,
        updated_at=_not_before(_C.updated_at),
    )
    .returning(*_CONVERSATION)
)
# The same, for a key with a budget: what the key spent since its period's first day
# comes back with the row, not in a read of its own.
_OPEN_WITH_SPEND = _OPEN.returning(SPENT_SINCE.scalar_subquery().label("spent_nanos"))
_NEXT_SEQ = (
    update(CONVERSATIONS)
    .where(_C.id == bindparam("conversation_id"))
    .values(
        message_count=_C.message_count + 1,
        llm_failures=0,
        updated_at=_not_before(_C.updated_at),
        tokens_used=_C.tokens_used + bindparam("tokens", type_=Integer),
        cost_nanos=_C.cost_nanos + bindparam("cost", type_=BigInteger),
    )
    .returning(*_CONVERSATION)
)
# The key's spend of the day: one row per key and UTC day, added to (both dialects spell
# the upsert the same way; the row lock is held only until the reply commits).
_S = KEY_SPEND.c
_SPEND = {
    name: dialect_insert(KEY_SPEND).on_conflict_do_update(
        index_elements=[_S.key_name, _S.day],
        set_={"cost_nanos": _S.cost_nanos + dialect_insert(KEY_SPEND).excluded.cost_nanos},
    )
    for name, dialect_insert in (("sqlite", sqlite_insert), ("postgresql", postgresql_insert))
}
# A message while a human agent has the conversation (its handoff open): stored, counted,
# never sent to the LLM (``turns`` counts the bot's turns only).
_HOLD = (
    update(CONVERSATIONS)
    .where(
        _C.id == bindparam("conversation_id"),
        _C.status == ConversationStatus.ESCALATED.value,
        _C.handoff_state.in_([state.value for state in OPEN_HANDOFF]),
    )
    .values(message_count=_C.message_count + 1, updated_at=_not_before(_C.updated_at))
    .returning(*_CONVERSATION)
)
_FAILED = (
    update(CONVERSATIONS)
    .where(_C.id == bindparam("conversation_id"))
    .values(llm_failures=_C.llm_failures + 1)
    .returning(*_CONVERSATION)
)
_ESCALATE = (
    update(CONVERSATIONS)
    .where(_C.id == bindparam("conversation_id"))
    .values(
        status=ConversationStatus.ESCALATED.value,
        escalation_reason=bindparam("reason"),
        escalation_note=None,
        escalated_at=bindparam("at", type_=UTCDateTime()),
        updated_at=bindparam("at", type_=UTCDateTime()),
        **NEW_HANDOFF,
    )
)
_INSERT_MESSAGE = insert(MESSAGES)
_RELEASE = update(MESSAGES).where(_M.id == bindparam("question_id")).values(answering_until=None)
_RENEW = (
    update(MESSAGES)
    .where(_M.id == bindparam("question_id"), _M.answering_until.is_not(None))
    .values(answering_until=bindparam("until", type_=UTCDateTime()))
)
_CONVERSATION_BY_ID = select(*_CONVERSATION).where(_C.id == bindparam("conversation_id"))
_STATUS = select(_C.status, _C.owner).where(_C.id == bindparam("conversation_id"))
_GOAL = select(GOALS).where(GOALS.c.id == bindparam("goal_id"))
# Only what the LLM is sent: building whole messages (three UUIDs, a time and two enums
# each) for 40 rows was 15 % of a turn's fixed CPU.
_HISTORY = (
    select(_M.role, _M.content)
    .where(_M.conversation_id == bindparam("conversation_id"), _M.seq <= bindparam("up_to"))
    .order_by(_M.seq.desc())
    .limit(bindparam("limit", type_=Integer))
)
_REPLY_TO = select(MESSAGES).where(_M.reply_to == bindparam("question_id"))
_KEYED = select(MESSAGES).where(
    _M.conversation_id == bindparam("conversation_id"),
    _M.idempotency_key == bindparam("idempotency_key"),
)


def open_turn(
    conn: Connection,
    conversation_id: uuid.UUID,
    content: str,
    *,
    escalate_when: EscalationRule,
    history_limit: int,
    idempotency_key: str | None,
    owner: str | None,
    goals: GoalCache,
    answer_lease: timedelta,
    spend_cap: SpendCap | None = None,
) -> OpenedTurn:
    """Inside the caller's transaction; raises ``Repeated`` to roll it back. With an
    ``owner``, another owner's conversation is not found (and nothing is stored); with a
    ``spend_cap`` that is reached, the budget's error is raised (and nothing is stored)."""
    if idempotency_key is not None:
        repeated = _repeated_turn(
            conn, conversation_id, content, idempotency_key, history_limit, owner
        )
        if repeated is not None:
            return repeated
    # The conditional UPDATE is the status check and the lock in one step: a concurrent
    # turn on the same conversation waits here until this one commits, then sees its
    # outcome (PostgreSQL row lock; SQLite's write lock).
    parameters: dict[str, Any] = {"conversation_id": conversation_id, "now": now()}
    if spend_cap is None:
        row = conn.execute(_OPEN, parameters).one_or_none()
    else:
        parameters.update(key_name=spend_cap.key_name, since=spend_cap.since)
        row = conn.execute(_OPEN_WITH_SPEND, parameters).one_or_none()
    if row is None:
        held = _hold_for_agent(conn, conversation_id, content, idempotency_key, owner)
        if held is not None:
            return held
        _raise_not_open(conn, conversation_id, owner)
    assert row is not None
    if owner is not None and row.owner != owner:  # raised: the UPDATE is rolled back
        raise ConversationNotFoundError(conversation_id)
    if idempotency_key is not None:
        # Checked again under the lock: a concurrent request with the same key may have
        # committed while this one waited.
        repeated = _repeated_turn(
            conn, conversation_id, content, idempotency_key, history_limit, owner
        )
        if repeated is not None:
            raise Repeated(repeated)
    if spend_cap is not None:  # raised: the UPDATE is rolled back
        spend_cap.check(int(row.spent_nanos), parameters["now"])
    goal = goals.get(row.goal_id) or goals.put(_goal(conn, row.goal_id))
    conversation = to_conversation(row)
    reason = escalate_when(goal, conversation)
    if reason is not None:  # at the time the UPDATE above set
        conversation = _escalate(conn, conversation, reason, conversation.updated_at)
    question = Message(
        id=uuid.uuid4(),
        conversation_id=conversation_id,
        seq=row.message_count,
        role=Role.USER,
        content=content,
        created_at=row.updated_at,
    )
    # A lease only for a message the LLM will answer: one that escalated gets no reply.
    keyed = idempotency_key is not None and reason is None
    answering_until = row.updated_at + answer_lease if keyed else None
    insert_message(conn, question, idempotency_key, answering_until)
    return OpenedTurn(
        conversation=conversation,
        goal=goal,
        question=question,
        history=_history(conn, conversation_id, question.seq, history_limit),
        escalation=reason,
        answering_until=answering_until,
    )


def insert_reply(
    conn: Connection, question: Message, reply: ReplyDraft
) -> tuple[Message, Conversation]:
    """Takes the next ``seq`` and resets the failure streak; a second reply to the same
    question breaks the unique index on ``reply_to`` (IntegrityError)."""
    usage = reply.usage
    parameters = {
        "conversation_id": question.conversation_id,
        "now": now(),
        "tokens": usage.total_tokens if usage is not None else 0,
        "cost": reply.cost_nanos,
    }
    row = conn.execute(_NEXT_SEQ, parameters).one_or_none()
    if row is None:
        raise ConversationNotFoundError(question.conversation_id)
    message = Message(
        id=uuid.uuid4(),
        conversation_id=question.conversation_id,
        seq=row.message_count,
        role=Role.ASSISTANT,
        content=reply.content,
        created_at=row.updated_at,
        model=reply.model,
        usage=reply.usage,
        reply_to=question.id,
        status=reply.status,
    )
    insert_message(conn, message)
    if reply.payer is not None and reply.cost_nanos:
        conn.execute(
            _SPEND[conn.dialect.name],
            {"key_name": reply.payer, "day": row.updated_at.date(), "cost_nanos": reply.cost_nanos},
        )
    return message, to_conversation(row)


def insert_message(
    conn: Connection,
    message: Message,
    idempotency_key: str | None = None,
    answering_until: datetime | None = None,
) -> None:
    usage = message.usage
    conn.execute(
        _INSERT_MESSAGE,
        {
            "id": message.id,
            "conversation_id": message.conversation_id,
            "seq": message.seq,
            "role": message.role.value,
            "content": message.content,
            "model": message.model,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "total_tokens": usage.total_tokens if usage else None,
            "cached_prompt_tokens": usage.cached_prompt_tokens if usage else None,
            "created_at": message.created_at,
            "reply_to": message.reply_to,
            "status": message.status.value,
            "idempotency_key": idempotency_key,
            "answering_until": answering_until,
            "author": message.author,
        },
    )


def release_answer(conn: Connection, question: Message) -> None:
    conn.execute(_RELEASE, {"question_id": question.id})


def renew_answer(conn: Connection, question: Message, lease: timedelta) -> None:
    """Extend a lease still held (one released stays released)."""
    conn.execute(_RENEW, {"question_id": question.id, "until": now() + lease})


def stored_reply(conn: Connection, question: Message) -> tuple[Message, Conversation]:
    existing = _reply_to(conn, question.id)
    row = _conversation(conn, question.conversation_id)
    assert existing is not None
    assert row is not None
    return existing, to_conversation(row)


def record_llm_failure(
    conn: Connection, conversation_id: uuid.UUID, *, escalate_at: int | None
) -> Conversation | None:
    """One more failed turn in a row; the conversation escalated if that reaches
    ``escalate_at`` (while it is active), else ``None``."""
    row = conn.execute(_FAILED, {"conversation_id": conversation_id}).one_or_none()
    if row is None:
        raise ConversationNotFoundError(conversation_id)
    if escalate_at is None or row.llm_failures < escalate_at or row.status != ACTIVE:
        return None
    at = max(now(), row.updated_at)  # never before the last change, as seq orders them
    return _escalate(conn, to_conversation(row), EscalationReason.LLM_FAILURE, at)


def _escalate(
    conn: Connection, conversation: Conversation, reason: EscalationReason, at: datetime
) -> Conversation:
    conn.execute(_ESCALATE, {"conversation_id": conversation.id, "reason": reason.value, "at": at})
    escalated = replace(
        conversation,
        status=ConversationStatus.ESCALATED,
        escalation=Escalation(reason, None, at),
        handoff=Handoff(HandoffState.WAITING, reason, at),
        updated_at=at,
    )
    append_handoff(conn, escalated, HandoffStep.ESCALATED)
    return escalated


def _conversation(conn: Connection, conversation_id: uuid.UUID) -> Row[Any] | None:
    return conn.execute(_CONVERSATION_BY_ID, {"conversation_id": conversation_id}).one_or_none()


def _goal(conn: Connection, goal_id: str) -> Goal:
    row = conn.execute(_GOAL, {"goal_id": goal_id}).one()
    return to_goal(row)  # a goal with conversations cannot be deleted


def _hold_for_agent(
    conn: Connection,
    conversation_id: uuid.UUID,
    content: str,
    idempotency_key: str | None,
    owner: str | None,
) -> OpenedTurn | None:
    """A message to a conversation in a handoff: stored for the human agent (never the
    LLM), in the same conditional-update-then-insert as any message; None if it is not in
    one."""
    row = conn.execute(_HOLD, {"conversation_id": conversation_id, "now": now()}).one_or_none()
    if row is None:
        return None
    if owner is not None and row.owner != owner:  # raised: the UPDATE is rolled back
        raise ConversationNotFoundError(conversation_id)
    question = Message(
        id=uuid.uuid4(),
        conversation_id=conversation_id,
        seq=row.message_count,
        role=Role.USER,
        content=content,
        created_at=row.updated_at,
    )
    insert_message(conn, question, idempotency_key)
    append_message(conn, row.goal_id, question)
    conversation = to_conversation(row)
    goal = to_goal(conn.execute(_GOAL, {"goal_id": row.goal_id}).one())
    return OpenedTurn(
        conversation=conversation, goal=goal, question=question, history=(), held=True
    )


def _raise_not_open(conn: Connection, conversation_id: uuid.UUID, owner: str | None) -> None:
    row = conn.execute(_STATUS, {"conversation_id": conversation_id}).one_or_none()
    if row is None or (owner is not None and row.owner != owner):
        raise ConversationNotFoundError(conversation_id)
    if row.status == ConversationStatus.ESCALATED.value:
        raise ConversationEscalatedError()
    raise ConversationClosedError()


def _history(
    conn: Connection, conversation_id: uuid.UUID, up_to_seq: int, limit: int
) -> tuple[ChatMessage, ...]:
    parameters = {"conversation_id": conversation_id, "up_to": up_to_seq, "limit": limit}
    rows = conn.execute(_HISTORY, parameters).all()
    return tuple(ChatMessage(_ROLES[role], content) for role, content in reversed(rows))


def _reply_to(conn: Connection, question_id: uuid.UUID) -> Message | None:
    row = conn.execute(_REPLY_TO, {"question_id": question_id}).one_or_none()
    return to_message(row) if row is not None else None


def _repeated_turn(
    conn: Connection,
    conversation_id: uuid.UUID,
    content: str,
    idempotency_key: str,
    history_limit: int,
    owner: str | None,
) -> OpenedTurn | None:
    parameters = {"conversation_id": conversation_id, "idempotency_key": idempotency_key}
    question = conn.execute(_KEYED, parameters).one_or_none()
    if question is None:
        return None
    row = _conversation(conn, conversation_id)
    assert row is not None
    if owner is not None and row.owner != owner:  # says nothing of the key's use
        raise ConversationNotFoundError(conversation_id)
    if question.content != content:
        raise IdempotencyKeyReusedError()
    conversation = to_conversation(row)
    reply = _reply_to(conn, question.id)
    lease = question.answering_until
    if reply is None and held_for_agent(conversation, question.created_at):
        return OpenedTurn(
            conversation=conversation,
            goal=_goal(conn, row.goal_id),
            question=to_message(question),
            history=(),
            repeated=True,
            held=True,
        )
    return OpenedTurn(
        conversation=conversation,
        goal=_goal(conn, row.goal_id),
        question=to_message(question),
        history=_history(conn, conversation_id, question.seq, history_limit),
        escalation=escalated_by(conversation, question.created_at),
        reply=reply,
        repeated=True,
        answering_until=lease if reply is None and lease is not None and lease > now() else None,
    )
