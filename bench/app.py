"""The app every variant instruments: about 30 routes, path parameters, one included router."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI
from fastapi.responses import StreamingResponse


def build_app() -> FastAPI:
    app = FastAPI()

    for index in range(10):

        async def plain(index: int = index) -> dict[str, int]:
            return {"route": index}

        app.add_api_route(f"/static/{index}", plain, methods=["GET"])

    for index in range(10):

        async def with_param(item_id: int, index: int = index) -> dict[str, int]:
            return {"route": index, "item": item_id}

        app.add_api_route(f"/things{index}/{{item_id}}", with_param, methods=["GET"])

    router = APIRouter(prefix="/api")
    for index in range(8):

        async def routed(user_id: str, index: int = index) -> dict[str, object]:
            return {"route": index, "user": user_id}

        router.add_api_route(f"/v{index}/users/{{user_id}}", routed, methods=["GET"])
    app.include_router(router)

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item": item_id}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            for index in range(5):
                yield f"data: {index}\n\n".encode()

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/boom")
    async def boom() -> None:
        raise ValueError("benchmark failure")

    return app
