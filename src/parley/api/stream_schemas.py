"""The wire format of a streamed turn: each SSE event and each WebSocket frame, as models.

turn_encoding writes these shapes as plain dicts (a token is encoded on the hot path, a
model per token would cost CPU); the models are the documentation, in the OpenAPI
schema, and the contract the tests hold every event the server sends to.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from parley.api.schemas import ErrorDetail, HandoffOut, LiveEventOut, MessageOut, UsageOut
from parley.domain.models import EscalationReason

MAX_FRAME_ID_LENGTH = 255


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- SSE: `event: <name>` and `data: <JSON>`, in this order: accepted, token*, then one of
# done, escalated, handoff or error.


class TokenData(_Strict):
    content: str


class EscalatedData(_Strict):
    reason: EscalationReason


class ErrorEventData(_Strict):
    error: ErrorDetail
    status: int = Field(description="The HTTP status the same failure answers as a whole turn")


class SseAccepted(_Strict):
    event: Literal["accepted"]
    data: MessageOut = Field(description="The user's message, stored")


class SseToken(_Strict):
    event: Literal["token"]
    data: TokenData


class SseDone(_Strict):
    event: Literal["done"]
    data: MessageOut = Field(description="The assistant's reply, stored")


class SseEscalated(_Strict):
    event: Literal["escalated"]
    data: EscalatedData


class SseHandoff(_Strict):
    event: Literal["handoff"]
    data: HandoffOut = Field(
        description="The conversation is with a human agent: the message waits for them"
    )


class SseError(_Strict):
    event: Literal["error"]
    data: ErrorEventData


SseEvent = Annotated[
    SseAccepted | SseToken | SseDone | SseEscalated | SseHandoff | SseError,
    Field(discriminator="event"),
]

# --- WebSocket: JSON text frames.


class WsMessage(_Strict):
    type: Literal["message"]
    content: str = Field(min_length=1)
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_FRAME_ID_LENGTH,
        description="Idempotency key: a retry with the same id returns the same turn",
    )


class WsPing(_Strict):
    type: Literal["ping"]


WsClientFrame = Annotated[WsMessage | WsPing, Field(discriminator="type")]


class WsAccepted(_Strict):
    type: Literal["accepted"]
    message: MessageOut


class WsToken(_Strict):
    type: Literal["token"]
    content: str


class WsDone(_Strict):
    type: Literal["done"]
    message: MessageOut
    usage: UsageOut | None


class WsEscalated(_Strict):
    type: Literal["escalated"]
    reason: EscalationReason


class WsHandoff(_Strict):
    type: Literal["handoff"]
    handoff: HandoffOut


class WsError(_Strict):
    type: Literal["error"]
    code: str
    message: str
    escalated: bool | None = Field(
        default=None, description="For a failed reply: whether it escalated the conversation"
    )
    retry_after: float | None = Field(
        default=None, description="For too_many_requests: seconds until a frame is taken"
    )


class WsPong(_Strict):
    type: Literal["pong"]


class WsEvent(LiveEventOut):
    """A live event of the conversation, pushed between the turns' frames."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["event"]


class WsEventsStopped(_Strict):
    """No more live events on this socket (too many streams, the server draining, the
    database away); its turns go on. Reconnect with ``?last_event_id=`` to resume."""

    type: Literal["events_stopped"]
    code: str
    message: str


WsServerFrame = Annotated[
    WsAccepted
    | WsToken
    | WsDone
    | WsEscalated
    | WsHandoff
    | WsError
    | WsPong
    | WsEvent
    | WsEventsStopped,
    Field(discriminator="type"),
]

# Name in components/schemas -> the union it documents.
STREAM_SCHEMAS: dict[str, TypeAdapter[Any]] = {
    "SseEvent": TypeAdapter(SseEvent),
    "WsClientFrame": TypeAdapter(WsClientFrame),
    "WsServerFrame": TypeAdapter(WsServerFrame),
    "LiveEvent": TypeAdapter(LiveEventOut),
}
