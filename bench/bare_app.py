"""The baseline a whole turn's CPU is measured beside: FastAPI on the stack ``parley serve``
runs (uvicorn, uvloop, httptools), answering the same requests with a fixed JSON body
and nothing else (no database, no LLM, no metrics). ``python -m bench.bare_app PORT``.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from bench.fake_llm import KEEP_ALIVE_SECONDS


class Message(BaseModel):
    content: str


def app() -> FastAPI:
    bare = FastAPI()

    @bare.post("/v1/conversations/")
    async def create() -> dict[str, Any]:
        return {"id": str(uuid.uuid4())}

    @bare.post("/v1/conversations/{conversation_id}/messages")
    async def message(conversation_id: uuid.UUID, body: Message) -> dict[str, Any]:
        return {"conversation": {"id": str(conversation_id)}, "reply": {"content": "Hi."}}

    @bare.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ok"}

    return bare


if __name__ == "__main__":
    uvicorn.run(
        app(),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
