"""HTTP and WebSocket routers: thin layers that parse, call a service and shape the reply."""

from fastapi import APIRouter, Depends

from parley.api import chat_ws, conversations, goals, health
from parley.api.auth import require_api_key

v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])
v1.include_router(goals.router)
v1.include_router(conversations.router)
v1.include_router(chat_ws.router)

__all__ = ["health", "v1"]
