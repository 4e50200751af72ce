"""HTTP and WebSocket routers: thin layers that parse, call a service and shape the reply."""

from fastapi import APIRouter, Depends

from parley.api import chat_ws, conversations, events, goals, handoffs, health, keys
from parley.api.auth import authenticate

v1 = APIRouter(prefix="/v1", dependencies=[Depends(authenticate)])
v1.include_router(goals.router)
v1.include_router(conversations.router)
v1.include_router(chat_ws.router)
v1.include_router(keys.router)
v1.include_router(keys.me)
v1.include_router(events.queue_events)  # before the queue's /{...} routes, if any come
v1.include_router(handoffs.queue)
v1.include_router(events.conversation_events)
v1.include_router(handoffs.steps)

__all__ = ["health", "v1"]
