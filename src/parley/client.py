"""``parley.client``: the typed, async Python client of Parley's API.

Goals, conversations, and turns on each channel: whole (``send_message``), streamed over
SSE (``stream_message``) and over the conversation's WebSocket (``chat``). Answers come
back as the API's own models (``parley.api.schemas``); every error answer, HTTP or in a
stream, is a ``ParleyError`` carrying the one error shape (type, code, message).

    async with ParleyClient("http://127.0.0.1:8000", api_key=key) as parley:
        goal = await parley.create_goal("Support", "Help customers with orders.")
        conversation = await parley.create_conversation(goal.id)
        turn = await parley.send_message(conversation.id, "Where is my order?")
        async for event in parley.stream_message(conversation.id, "And my refund?"):
            if isinstance(event, Token):
                print(event.content, end="")
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from parley.api.schemas import (
    AgentMessageOut,
    ConversationDetail,
    ConversationOut,
    ConversationPage,
    GoalList,
    GoalOut,
    GoalOutcomesOut,
    HandoffOut,
    HandoffPage,
    LiveEventOut,
    MessageOut,
    TurnOut,
)
from parley.domain.models import ConversationStatus, EscalationReason, HandoffState, Outcome

__all__ = [
    "Accepted",
    "ChatSocket",
    "Done",
    "Escalated",
    "HeldForAgent",
    "ParleyClient",
    "ParleyError",
    "StreamEvent",
    "Token",
    "TurnFailed",
]

DEFAULT_URL = "http://127.0.0.1:8000"


class ParleyError(Exception):
    """An error answer in Parley's one shape. ``status`` is the HTTP status (for an error
    inside a stream, the status the same error gets as a whole reply; None on a WebSocket,
    which has none); ``retry_after`` is the Retry-After header's seconds, if any."""

    def __init__(
        self,
        status: int | None,
        error_type: str,
        code: str,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status or 'error'} {code}: {message}")
        self.status = status
        self.type = error_type
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after

    @classmethod
    def from_body(
        cls, status: int | None, body: Mapping[str, Any], retry_after: float | None = None
    ) -> ParleyError:
        error = body.get("error", body)
        return cls(
            status,
            str(error.get("type", "error")),
            str(error.get("code", "unknown")),
            str(error.get("message", "")),
            details=error.get("details"),
            retry_after=retry_after,
        )

    @classmethod
    def from_response(cls, response: httpx.Response) -> ParleyError:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        body.setdefault("error", {"type": "http_error", "code": str(response.status_code)})
        retry_after = response.headers.get("retry-after")
        seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
        return cls.from_body(response.status_code, body, seconds)


# A streamed turn's events, as the server sends them on SSE and WebSocket alike.
@dataclass(frozen=True, slots=True)
class Accepted:
    """The user message is stored (always first)."""

    message: MessageOut


@dataclass(frozen=True, slots=True)
class Token:
    content: str


@dataclass(frozen=True, slots=True)
class Done:
    """The reply is stored."""

    message: MessageOut


@dataclass(frozen=True, slots=True)
class Escalated:
    reason: EscalationReason


@dataclass(frozen=True, slots=True)
class HeldForAgent:
    """The conversation is with a human agent: the message is stored for them, and the
    assistant does not reply (the turn ends here)."""

    handoff: HandoffOut


@dataclass(frozen=True, slots=True)
class TurnFailed:
    """No reply; the user message is stored. May be followed by ``Escalated``."""

    error: ParleyError


StreamEvent = Accepted | Token | Done | Escalated | HeldForAgent | TurnFailed


def _event(kind: str, data: Mapping[str, Any], status: int | None = None) -> StreamEvent | None:
    """One event, from an SSE event's name and data or a WebSocket frame."""
    match kind:
        case "accepted":
            return Accepted(MessageOut.model_validate(data.get("message", data)))
        case "token":
            return Token(str(data["content"]))
        case "done":
            return Done(MessageOut.model_validate(data.get("message", data)))
        case "escalated":
            return Escalated(EscalationReason(data["reason"]))
        case "handoff":  # SSE: the handoff itself; WebSocket: under "handoff"
            return HeldForAgent(HandoffOut.model_validate(data.get("handoff", data)))
        case "error":
            error = ParleyError.from_body(data.get("status", status), data)
            if error.details is None and "escalated" in data:  # a WebSocket error frame
                error.details = [{"escalated": data["escalated"]}]
            return TurnFailed(error)
    return None  # a kind this client does not know yet: skipped


def _ends(event: StreamEvent) -> bool:
    return isinstance(event, Done | Escalated | HeldForAgent) or (
        isinstance(event, TurnFailed) and not _may_escalate(event)
    )


def _may_escalate(failed: TurnFailed) -> bool:
    """A failed LLM turn that escalated the conversation is followed by ``Escalated``."""
    return any(detail.get("escalated") for detail in failed.error.details or ())


class ParleyClient:
    """One client per base URL; use it as an async context manager (or ``aclose`` it)."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        http: httpx.AsyncClient | None = None,
        agent: str | None = None,
    ) -> None:
        """``http``: an httpx client of the caller's to send through (its base URL, headers
        and pool), which ``aclose`` leaves open. ``agent``: in development mode (no key
        exists), the human agent this client acts as (``X-Parley-Agent``)."""
        self._owns_http = http is None
        if http is not None:
            base_url = str(http.base_url)
            authorization = http.headers.get("authorization")
            api_key = authorization.removeprefix("Bearer ") if authorization else api_key
        self.base_url = base_url.rstrip("/")
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        if agent is not None:
            self._headers["x-parley-agent"] = agent
        self._http = http or httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> ParleyClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        response = await self._http.request(
            method, path, json=json_body, params=query, headers=headers
        )
        if response.is_error:
            raise ParleyError.from_response(response)
        return response.json() if response.content else None

    # -- goals -------------------------------------------------------------------------

    async def create_goal(
        self,
        name: str,
        instructions: str,
        *,
        goal_id: str | None = None,
        model: str | None = None,
        escalation: Mapping[str, Any] | None = None,
        idle_timeout_seconds: int | None = None,
        success_criteria: str | None = None,
        judge: Mapping[str, Any] | None = None,
    ) -> GoalOut:
        """``judge``: ``{"enabled": True, "sample_rate": 0.5}`` (needs success criteria)."""
        body: dict[str, Any] = {"name": name, "instructions": instructions, "model": model}
        if idle_timeout_seconds is not None:
            body["idle_timeout_seconds"] = idle_timeout_seconds
        if success_criteria is not None:
            body["success_criteria"] = success_criteria
        if judge is not None:
            body["judge"] = dict(judge)
        if goal_id is not None:
            body["id"] = goal_id
        if escalation is not None:
            body["escalation"] = dict(escalation)
        return GoalOut.model_validate(await self._call("POST", "/v1/goals/", json_body=body))

    async def get_goal(self, goal_id: str) -> GoalOut:
        return GoalOut.model_validate(await self._call("GET", f"/v1/goals/{goal_id}"))

    async def list_goals(self) -> list[GoalOut]:
        return GoalList.model_validate(await self._call("GET", "/v1/goals/")).items

    async def update_goal(self, goal_id: str, **changes: Any) -> GoalOut:
        answer = await self._call("PATCH", f"/v1/goals/{goal_id}", json_body=changes)
        return GoalOut.model_validate(answer)

    async def delete_goal(self, goal_id: str) -> None:
        await self._call("DELETE", f"/v1/goals/{goal_id}")

    async def goal_outcomes(
        self, goal_id: str, *, since: datetime | None = None
    ) -> GoalOutcomesOut:
        """How the goal's conversations ended since ``since`` (agent or admin key)."""
        params = {"since": since.isoformat() if since else None}
        answer = await self._call("GET", f"/v1/goals/{goal_id}/outcomes", params=params)
        return GoalOutcomesOut.model_validate(answer)

    # -- conversations -----------------------------------------------------------------

    async def create_conversation(
        self, goal_id: str, metadata: Mapping[str, Any] | None = None
    ) -> ConversationOut:
        body = {"goal_id": goal_id, "metadata": dict(metadata or {})}
        answer = await self._call("POST", "/v1/conversations/", json_body=body)
        return ConversationOut.model_validate(answer)

    async def get_conversation(
        self,
        conversation_id: uuid.UUID | str,
        *,
        messages_limit: int | None = None,
        messages_before: int | None = None,
    ) -> ConversationDetail:
        params = {"messages_limit": messages_limit, "messages_before": messages_before}
        answer = await self._call("GET", f"/v1/conversations/{conversation_id}", params=params)
        return ConversationDetail.model_validate(answer)

    async def list_conversations(
        self,
        *,
        goal_id: str | None = None,
        status: ConversationStatus | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> ConversationPage:
        params = {"goal_id": goal_id, "status": status, "limit": limit, "cursor": cursor}
        answer = await self._call("GET", "/v1/conversations/", params=params)
        return ConversationPage.model_validate(answer)

    async def close_conversation(
        self, conversation_id: uuid.UUID | str, *, outcome: Outcome | None = None
    ) -> ConversationOut:
        """End it, with the outcome the caller knows (none: unknown, or the judge's)."""
        body = {"outcome": outcome.value} if outcome is not None else None
        path = f"/v1/conversations/{conversation_id}/close"
        return ConversationOut.model_validate(await self._call("POST", path, json_body=body))

    async def delete_conversation(self, conversation_id: uuid.UUID | str) -> None:
        """Delete an ended conversation with everything it holds."""
        await self._call("DELETE", f"/v1/conversations/{conversation_id}")

    async def escalate_conversation(
        self,
        conversation_id: uuid.UUID | str,
        reason: EscalationReason = EscalationReason.MANUAL,
        note: str | None = None,
    ) -> ConversationOut:
        body = {"reason": reason.value, "note": note}
        path = f"/v1/conversations/{conversation_id}/escalate"
        return ConversationOut.model_validate(await self._call("POST", path, json_body=body))

    # -- turns -------------------------------------------------------------------------

    async def send_message(
        self,
        conversation_id: uuid.UUID | str,
        content: str,
        *,
        idempotency_key: str | None = None,
    ) -> TurnOut:
        """A whole turn: the stored user message and the reply (or the escalation)."""
        answer = await self._call(
            "POST",
            f"/v1/conversations/{conversation_id}/messages",
            json_body={"content": content},
            headers=_key_header(idempotency_key),
        )
        return TurnOut.model_validate(answer)

    async def stream_message(
        self,
        conversation_id: uuid.UUID | str,
        content: str,
        *,
        idempotency_key: str | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """A turn streamed over SSE, event by event. A refusal before the turn starts
        (404, 409, 413, 429, 503) is raised as ``ParleyError``."""
        async with self._http.stream(
            "POST",
            f"/v1/conversations/{conversation_id}/messages",
            json={"content": content, "stream": True},
            headers={"accept": "text/event-stream", **_key_header(idempotency_key)},
        ) as response:
            if response.is_error:
                await response.aread()
                raise ParleyError.from_response(response)
            async for name, data in _sse(response.aiter_lines()):
                event = _event(name, json.loads(data) if data else {})
                if event is not None:
                    yield event

    # -- the human handoff --------------------------------------------------------------

    async def list_handoffs(
        self,
        *,
        state: HandoffState = HandoffState.WAITING,
        goal_id: str | None = None,
        agent: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> HandoffPage:
        params = {"state": state, "goal_id": goal_id, "agent": agent, "limit": limit}
        answer = await self._call("GET", "/v1/handoffs/", params={**params, "cursor": cursor})
        return HandoffPage.model_validate(answer)

    async def assign(
        self, conversation_id: uuid.UUID | str, *, to: str | None = None
    ) -> ConversationOut:
        """Claim it for the calling agent, or (``to``) hand it to another agent."""
        body = {"agent": to} if to is not None else None
        path = f"/v1/conversations/{conversation_id}/assign"
        return ConversationOut.model_validate(await self._call("POST", path, json_body=body))

    async def unassign(self, conversation_id: uuid.UUID | str) -> ConversationOut:
        path = f"/v1/conversations/{conversation_id}/unassign"
        return ConversationOut.model_validate(await self._call("POST", path))

    async def resolve(
        self,
        conversation_id: uuid.UUID | str,
        *,
        return_to_bot: bool,
        note: str | None = None,
        outcome: Outcome | None = None,
    ) -> ConversationOut:
        body: dict[str, Any] = {"return_to_bot": return_to_bot, "note": note}
        if outcome is not None:
            body["outcome"] = outcome.value
        path = f"/v1/conversations/{conversation_id}/resolve"
        return ConversationOut.model_validate(await self._call("POST", path, json_body=body))

    async def send_as_agent(
        self, conversation_id: uuid.UUID | str, content: str
    ) -> AgentMessageOut:
        """With an agent key: a message written as the agent holding the conversation."""
        path = f"/v1/conversations/{conversation_id}/messages"
        answer = await self._call("POST", path, json_body={"content": content})
        return AgentMessageOut.model_validate(answer)

    # -- live streams ------------------------------------------------------------------

    def follow_conversation(
        self, conversation_id: uuid.UUID | str, *, last_event_id: int | None = None
    ) -> AsyncGenerator[LiveEventOut, None]:
        """A conversation's live events (its handoff, the messages written during it),
        after ``last_event_id`` (its ``seq``) or from now on; endless until closed."""
        return self._follow(f"/v1/conversations/{conversation_id}/events", last_event_id)

    def follow_handoffs(
        self, *, last_event_id: int | None = None
    ) -> AsyncGenerator[LiveEventOut, None]:
        """The handoff queue's live events, after ``last_event_id`` (an event's ``id``)."""
        return self._follow("/v1/handoffs/events", last_event_id)

    async def _follow(
        self, path: str, last_event_id: int | None
    ) -> AsyncGenerator[LiveEventOut, None]:
        headers = {"accept": "text/event-stream"}
        if last_event_id is not None:
            headers["last-event-id"] = str(last_event_id)
        async with self._http.stream("GET", path, headers=headers, timeout=None) as response:
            if response.is_error:
                await response.aread()
                raise ParleyError.from_response(response)
            async for name, data in _sse(response.aiter_lines()):
                payload = json.loads(data)
                if name == "error":
                    raise ParleyError.from_body(payload.get("status", 503), payload)
                yield LiveEventOut.model_validate(payload)

    @asynccontextmanager
    async def chat(self, conversation_id: uuid.UUID | str) -> AsyncIterator[ChatSocket]:
        """The conversation's WebSocket, for turn after turn on one connection."""
        url = f"{self.base_url.replace('http', 'ws', 1)}/v1/conversations/{conversation_id}/ws"
        async with connect(url, additional_headers=self._headers) as socket:
            yield ChatSocket(socket)


class ChatSocket:
    """A conversation's WebSocket: ``send`` one message, read its turn's events."""

    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket

    async def send(
        self, content: str, *, message_id: str | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """The turn's events, up to its end. A message refused before its turn (an error
        frame, the socket left open) is one ``TurnFailed``."""
        frame: dict[str, Any] = {"type": "message", "content": content}
        if message_id is not None:
            frame["id"] = message_id
        await self._socket.send(json.dumps(frame))
        while True:
            data = json.loads(await self._socket.recv())
            event = _event(str(data.get("type")), data)
            if event is None:
                continue
            yield event
            if _ends(event):
                return

    async def ping(self) -> None:
        await self._socket.send(json.dumps({"type": "ping"}))
        while json.loads(await self._socket.recv()).get("type") != "pong":
            pass


def _key_header(idempotency_key: str | None) -> dict[str, str]:
    return {"idempotency-key": idempotency_key} if idempotency_key else {}


async def _sse(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream, as the HTML standard parses them."""
    name, data = "message", list[str]()
    async for line in lines:
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[len("event:") :].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:") :].removeprefix(" "))
    if data:
        yield name, "\n".join(data)
