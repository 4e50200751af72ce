"""Typed domain errors. The API maps each class to a status code in one place."""

from __future__ import annotations

import math
from datetime import datetime

from parley.llm.errors import LLMErrorKind


class DomainError(Exception):
    """Base class: ``code`` is a stable, machine-readable identifier."""

    code = "domain_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(DomainError):
    code = "not_found"


class KeyRevokedError(DomainError):
    """A long-lived connection's key was revoked after it was admitted (a WebSocket, a
    live stream): it ends, as a new request with that key would be refused (401)."""

    code = "unauthorized"

    def __init__(self) -> None:
        super().__init__("this API key was revoked")


class GoalNotFoundError(NotFoundError):
    code = "goal_not_found"

    def __init__(self, goal_id: str) -> None:
        super().__init__(f"goal {goal_id!r} does not exist")


class ConversationNotFoundError(NotFoundError):
    code = "conversation_not_found"

    def __init__(self, conversation_id: object) -> None:
        super().__init__(f"conversation {conversation_id} does not exist")


class KeyNotFoundError(NotFoundError):
    code = "key_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"API key {name!r} does not exist")


class ConflictError(DomainError):
    code = "conflict"


class KeyExistsError(ConflictError):
    code = "key_exists"

    def __init__(self, name: str) -> None:
        super().__init__(f"an API key named {name!r} exists (or existed: names are not reused)")


class GoalExistsError(ConflictError):
    code = "goal_exists"

    def __init__(self, goal_id: str) -> None:
        super().__init__(f"goal {goal_id!r} already exists")


class GoalInUseError(ConflictError):
    code = "goal_in_use"

    def __init__(self, goal_id: str) -> None:
        super().__init__(f"goal {goal_id!r} has conversations and cannot be deleted")


class ConversationEscalatedError(ConflictError):
    code = "conversation_escalated"

    def __init__(self) -> None:
        super().__init__("conversation was escalated to a human; the assistant no longer replies")


class ConversationClosedError(ConflictError):
    code = "conversation_closed"

    def __init__(self, message: str = "conversation is completed and takes no more messages"):
        super().__init__(message)


class ConversationOpenError(ConflictError):
    code = "conversation_open"

    def __init__(self) -> None:
        super().__init__("only an ended conversation can be deleted: close it first")


class NotInHandoffError(ConflictError):
    code = "not_in_handoff"

    def __init__(self) -> None:
        super().__init__("conversation is not waiting for or held by a human agent")


class AlreadyAssignedError(ConflictError):
    code = "already_assigned"

    def __init__(self, agent: str | None) -> None:
        holder = f" (to {agent})" if agent else ""
        super().__init__(f"conversation is already assigned{holder}")


class NotAssignedError(ConflictError):
    code = "not_assigned"

    def __init__(self) -> None:
        super().__init__("conversation is not assigned to this agent")


class IdempotencyKeyReusedError(ConflictError):
    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was used for a different message")


class RetryLaterError(DomainError):
    """Refused for now (answered 429): the caller may try again in ``retry_after_seconds``."""

    code = "retry_later"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after_seconds = max(1, math.ceil(retry_after))


class BudgetExceededError(RetryLaterError):
    """The key spent its budget for this period; it may call again when the period resets."""

    code = "budget_exceeded"

    def __init__(self, budget_usd: float, resets_at: datetime, now: datetime) -> None:
        super().__init__(
            f"this key's budget of ${budget_usd:g} is spent until {resets_at.isoformat()}",
            (resets_at - now).total_seconds(),
        )
        self.resets_at = resets_at


class TooManyTokensError(RetryLaterError):
    """The key used its LLM tokens a minute (its ``tpm``)."""

    code = "too_many_tokens"

    def __init__(self, tpm: int, retry_after: float) -> None:
        super().__init__(f"this key's limit of {tpm} LLM tokens a minute is reached", retry_after)


class ShuttingDownError(DomainError):
    code = "shutting_down"

    def __init__(self) -> None:
        super().__init__("the server is shutting down and takes no new turns; retry shortly")


class TooManyStreamsError(DomainError):
    """This replica serves as many live streams as it may (PARLEY_LIVE_MAX_STREAMS)."""

    code = "too_many_streams"

    def __init__(self, limit: int) -> None:
        super().__init__(f"this server already serves {limit} live streams; retry shortly")


class DatabaseUnavailableError(DomainError):
    """The database cannot be reached, or cannot take the write, now: retry shortly.

    ``kind`` is one of DATABASE_ERROR_KINDS (a closed set: a metric label)."""

    code = "database_unavailable"

    def __init__(self, kind: str, *, message_stored: bool = False) -> None:
        outcome = "; the message is stored, its reply is not" if message_stored else ""
        super().__init__(f"the database is unavailable ({kind}){outcome}; retry shortly")
        self.kind = kind
        self.message_stored = message_stored

    def after_message_stored(self) -> DatabaseUnavailableError:
        return DatabaseUnavailableError(self.kind, message_stored=True)


# Why the database was unavailable: refused (nothing listens), reset (a connection broke),
# timeout (no answer in time, or no free connection), disk_full, read_only, other.
DATABASE_ERROR_KINDS = ("refused", "reset", "timeout", "disk_full", "read_only", "other")


class TurnInterruptedError(DomainError):
    """Shutdown stopped the reply; the user message is stored, and so is any partial reply."""

    code = "turn_interrupted"

    def __init__(self) -> None:
        super().__init__(
            "the server stopped before the reply was finished; the message is stored"
            " (and what was produced, as an interrupted reply)"
        )


class TurnCrashedError(DomainError):
    code = "internal_error"

    def __init__(self) -> None:
        super().__init__("the turn failed unexpectedly; the user message is stored")


class InvalidInputError(DomainError):
    code = "invalid_input"


class InvalidGoalIdError(InvalidInputError):
    code = "invalid_goal_id"


class InvalidKeyNameError(InvalidInputError):
    code = "invalid_key_name"


class InvalidCursorError(InvalidInputError):
    code = "invalid_cursor"

    def __init__(self) -> None:
        super().__init__("cursor is not one this API returned")


class ContentTooLargeError(DomainError):
    code = "content_too_large"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"content has {size} characters; the limit is {limit}")


class ReplyFailedError(DomainError):
    """The LLM could not produce a reply; the user's message is stored regardless."""

    code = "llm_error"

    def __init__(self, kind: LLMErrorKind, message: str, *, escalated: bool) -> None:
        super().__init__(message)
        self.kind = kind
        self.escalated = escalated
        self.code = f"llm_{kind.value}"
