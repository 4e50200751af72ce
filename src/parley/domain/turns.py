"""A turn as one typed event stream, run in a task of its own.

Every channel (a whole HTTP reply, SSE, WebSocket) reads the same events and only encodes
them. The turn runs in its own task so that a client leaving, or a request being
cancelled, never cuts a store write in half: the client can only *abandon* a turn, which
stops the LLM call, never the writes around it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import structlog

from parley.domain.errors import (
    DomainError,
    ShuttingDownError,
    TurnCrashedError,
    TurnInterruptedError,
)
from parley.domain.models import Conversation, EscalationReason, Message


@dataclass(frozen=True, slots=True)
class Accepted:
    """The user message is stored (always the first event)."""

    conversation: Conversation
    message: Message


@dataclass(frozen=True, slots=True)
class Token:
    content: str


@dataclass(frozen=True, slots=True)
class Done:
    """The reply is stored."""

    conversation: Conversation
    message: Message


@dataclass(frozen=True, slots=True)
class Escalated:
    conversation: Conversation
    reason: EscalationReason


@dataclass(frozen=True, slots=True)
class Failed:
    """No reply: the LLM failed, the turn was cut by shutdown, a domain error ended it, or a
    bug crashed it (``TurnCrashedError``). May be followed by ``Escalated`` when the
    failure escalated the conversation."""

    error: DomainError


@dataclass(frozen=True, slots=True)
class HeldForAgent:
    """The conversation is with a human agent: the message is stored for them, and the
    LLM is not asked."""

    conversation: Conversation


TurnEvent = Accepted | Token | Done | Escalated | HeldForAgent | Failed

_log = structlog.get_logger("parley.turns")

Emit = Callable[[TurnEvent], None]


class Abandoned(Exception):  # noqa: N818 -- a reason, raised into the LLM call to stop it
    """Why a turn's LLM call was stopped before it finished."""

    def __init__(self, error: DomainError | None) -> None:
        super().__init__(error.message if error else "client went away")
        self.error = error  # told to a client still listening; None when it left


T = TypeVar("T")


@dataclass(slots=True)
class TurnTimings:
    """Where a turn's time went: the database (opening the turn, storing its reply) and
    the LLM call; the rest is Parley's own (Server-Timing, the overhead metric)."""

    started: float = field(default_factory=time.perf_counter)
    db: float = 0.0
    llm: float = 0.0

    async def measure(self, part: Literal["db", "llm"], work: Awaitable[T]) -> T:
        began = time.perf_counter()
        try:
            return await work
        finally:
            spent = time.perf_counter() - began
            if part == "db":
                self.db += spent
            else:
                self.llm += spent

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def overhead(self) -> float:
        """The turn's time so far minus the LLM's."""
        return max(0.0, self.elapsed() - self.llm)


class RunningTurn:
    """One turn in flight: its events in order, and a way for the client to leave it."""

    def __init__(
        self,
        play: Callable[[Emit, RunningTurn], Coroutine[Any, Any, None]],
        timings: TurnTimings | None = None,
    ) -> None:
        self._events: asyncio.Queue[TurnEvent | None] = asyncio.Queue()
        self._stoppable = False
        self.abandoned: Abandoned | None = None
        self.timings = timings or TurnTimings()
        self._task = asyncio.create_task(self._run(play))

    async def _run(self, play: Callable[[Emit, RunningTurn], Coroutine[Any, Any, None]]) -> None:
        try:
            await play(self._events.put_nowait, self)
        except DomainError as error:  # the turn's answer, as if refused: not a crash
            self._events.put_nowait(Failed(error))
        except Exception:
            # The client still gets a last event; the traceback goes to the log only.
            _log.exception("turn_crashed")
            self._events.put_nowait(Failed(TurnCrashedError()))
        finally:
            self._events.put_nowait(None)

    async def events(self) -> AsyncIterator[TurnEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    def abandon(self, error: DomainError | None = None) -> None:
        """Stop the turn's LLM call if it is still running; stored writes always complete.

        ``error`` goes to a client still listening (shutdown); without one the client left.
        """
        if self._task.done() or self.abandoned is not None:
            return
        self.abandoned = Abandoned(error)
        if self._stoppable:
            self._task.cancel()

    async def stoppable(self, call: Coroutine[Any, Any, Any]) -> Any:
        """Await ``call`` (the LLM), which ``abandon`` may stop with ``Abandoned``."""
        if self.abandoned is not None:
            call.close()
            raise self.abandoned
        self._stoppable = True
        try:
            return await call
        except asyncio.CancelledError:
            if self.abandoned is None:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # the cancel was ours, and it is handled here
            raise self.abandoned from None
        finally:
            self._stoppable = False

    async def wait(self) -> None:
        await asyncio.shield(self._task)

    def when_done(self, callback: Callable[[], None]) -> None:
        self._task.add_done_callback(lambda _: callback())

    @property
    def done(self) -> bool:
        return self._task.done()


class InFlightTurns:
    """The turns running in this process, so shutdown can let them finish, then cut them."""

    def __init__(self) -> None:
        self._turns: set[RunningTurn] = set()
        self.closing = False
        self._opening = 0  # turns storing their user message, not yet started
        self._none_opening = asyncio.Event()
        self._none_opening.set()

    @asynccontextmanager
    async def admission(self) -> AsyncIterator[None]:
        """Around storing a turn's user message: refused once closing, and waited for by
        the drain, so no stored message is left without its turn."""
        if self.closing:
            raise ShuttingDownError()
        self._opening += 1
        self._none_opening.clear()
        try:
            yield
        finally:
            self._opening -= 1
            if not self._opening:
                self._none_opening.set()

    def start(
        self,
        play: Callable[[Emit, RunningTurn], Coroutine[Any, Any, None]],
        timings: TurnTimings | None = None,
    ) -> RunningTurn:
        """Run a turn whose user message is stored: even while closing, it is answered (or
        cut by the drain), never refused after the fact."""
        turn = RunningTurn(play, timings)
        self._turns.add(turn)
        turn.when_done(lambda: self._turns.discard(turn))
        return turn

    def __len__(self) -> int:
        return len(self._turns)

    async def drain(self, grace_seconds: float) -> None:
        """Take no new turns; give those in flight ``grace_seconds`` to finish, then stop their
        LLM calls (what they produced is stored) and wait for their writes."""
        self.closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_seconds
        await self._none_opening.wait()  # store writes: short, and never cut
        while self._turns and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait([turn._task for turn in self._turns], timeout=remaining)
        while self._turns:
            for turn in list(self._turns):
                turn.abandon(TurnInterruptedError())
            await asyncio.wait([turn._task for turn in self._turns])
