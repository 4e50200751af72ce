"""The one place WebSocket chat frames are received and sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from parley.api.auth import WS_SUBPROTOCOL


@dataclass(frozen=True, slots=True)
class InvalidFrame:
    """A frame that is not a JSON object: answered with an error frame, not a hang-up."""

    reason: str


# Frames read ahead of the turn being answered. uvicorn reads no more from a socket
# until its last frame is taken, and a frame is at most PARLEY_MAX_BODY_BYTES, so a
# socket holds at most this many frames (120 frames of 1 MB grew a server by 116 MB
# when the queue had no bound); a client sending more waits in TCP.
READ_AHEAD_FRAMES = 4


class ChatChannel:
    """Frames are read ahead, in a task of their own, so that a client leaving is noticed
    while a reply streams (``on_leave``), not only at the next read; a few at most."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._frames: asyncio.Queue[dict[str, Any] | InvalidFrame | WebSocketDisconnect] = (
            asyncio.Queue(maxsize=READ_AHEAD_FRAMES)
        )
        self._reader: asyncio.Task[None] | None = None
        self._sending = asyncio.Lock()  # a turn's frames and pushed events, one at a time
        self.on_leave: Callable[[], None] | None = None

    async def accept(self) -> None:
        offered = self.websocket.scope.get("subprotocols", ())
        await self.websocket.accept(
            subprotocol=WS_SUBPROTOCOL if WS_SUBPROTOCOL in offered else None
        )
        self._reader = asyncio.create_task(self._read_ahead())

    async def _read_ahead(self) -> None:
        try:
            while True:
                await self._frames.put(await self._receive())  # waits while full
        except WebSocketDisconnect as left:
            if self.on_leave is not None:
                self.on_leave()
            await self._frames.put(left)

    def stop_reading(self) -> None:
        if self._reader is not None:
            self._reader.cancel()

    async def receive_frame(self) -> dict[str, Any] | InvalidFrame:
        """The next frame, parsed; raises ``WebSocketDisconnect`` when the client leaves."""
        frame = await self._frames.get()
        if isinstance(frame, WebSocketDisconnect):
            self._frames.put_nowait(frame)  # every later read sees it too
            raise frame
        return frame

    async def _receive(self) -> dict[str, Any] | InvalidFrame:
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
        text = message.get("text")
        if text is None:
            return InvalidFrame("frames must be JSON text, not binary")
        try:
            frame = json.loads(text)
        except json.JSONDecodeError:
            return InvalidFrame("frame is not valid JSON")
        except RecursionError:  # it killed the socket with no word to the client
            return InvalidFrame("frame nests too deeply")
        if not isinstance(frame, dict):
            return InvalidFrame("frame must be a JSON object")
        return frame

    async def send_frame(self, frame: dict[str, Any]) -> None:
        text = json.dumps(frame, default=str)
        async with self._sending:
            await self.websocket.send_text(text)

    async def send_error(self, code: str, message: str, **extra: Any) -> None:
        await self.send_frame({"type": "error", "code": code, "message": message, **extra})

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        await self.websocket.close(code, reason)
