"""The one place WebSocket chat frames are received and sent."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect


@dataclass(frozen=True, slots=True)
class InvalidFrame:
    """A frame that is not a JSON object: answered with an error frame, not a hang-up."""

    reason: str


class ChatChannel:
    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    async def accept(self) -> None:
        await self.websocket.accept()

    async def receive_frame(self) -> dict[str, Any] | InvalidFrame:
        """The next frame, parsed; raises ``WebSocketDisconnect`` when the client leaves."""
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
        if not isinstance(frame, dict):
            return InvalidFrame("frame must be a JSON object")
        return frame

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.websocket.send_text(json.dumps(frame, default=str))

    async def send_error(self, code: str, message: str, **extra: Any) -> None:
        await self.send_frame({"type": "error", "code": code, "message": message, **extra})

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        await self.websocket.close(code, reason)
