"""Route templates: the full template for every route, wherever it was included or mounted."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from parley.observability import UNMATCHED, HttpMetrics, PrometheusMiddleware, new_registry
from parley.observability.routes import walk_templates
from tests.support.metrics import series


async def _plain(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _app() -> FastAPI:
    app = FastAPI()
    inner = APIRouter(prefix="/inner")

    @inner.get("/{item_id}")
    async def inner_item(item_id: str) -> str:
        return item_id

    @inner.get("/files/{file_path:path}")
    async def inner_file(file_path: str) -> str:
        return file_path

    outer = APIRouter(prefix="/outer")
    outer.include_router(inner, prefix="/mid")

    @outer.post("/things/{thing_id}/parts/{part_id}")
    async def part(thing_id: int, part_id: int) -> int:
        return part_id

    app.include_router(outer, prefix="/v2")
    shared = APIRouter()

    @shared.get("/shared/{x}")
    async def shared_x(x: str) -> str:
        return x

    # One router object under two prefixes: the path must pick the right template.
    app.include_router(shared, prefix="/a")
    app.include_router(shared, prefix="/b")

    @app.get("/top/{z}")
    async def top(z: int) -> int:
        return z

    sub = FastAPI()
    sub_router = APIRouter(prefix="/r")

    @sub_router.get("/{q}")
    async def sub_q(q: str) -> str:
        return q

    sub.include_router(sub_router, prefix="/deep")
    app.mount("/sub", sub)
    app.mount(
        "/st",
        Starlette(
            routes=[Route("/plain/{k}", _plain), Mount("/m", routes=[Route("/{n}", _plain)])]
        ),
    )
    app.mount("/raw", PlainTextResponse("raw app"))
    return app


CASES = [
    ("GET", "/v2/outer/mid/inner/42", "/v2/outer/mid/inner/{item_id}"),
    ("GET", "/v2/outer/mid/inner/files/a/b/c.txt", "/v2/outer/mid/inner/files/{file_path}"),
    ("POST", "/v2/outer/things/1/parts/2", "/v2/outer/things/{thing_id}/parts/{part_id}"),
    ("GET", "/a/shared/1", "/a/shared/{x}"),
    ("GET", "/b/shared/2", "/b/shared/{x}"),
    ("GET", "/top/7", "/top/{z}"),
    ("GET", "/top/not-an-int", "/top/{z}"),
    ("GET", "/sub/deep/r/9", "/sub/deep/r/{q}"),
    ("GET", "/st/plain/5", "/st/plain/{k}"),
    ("GET", "/st/m/6", "/st/m/{n}"),
    ("GET", "/raw/anything/at/all", "/raw/{path}"),
    ("GET", "/nowhere/123", UNMATCHED),
    ("GET", "/sub/nothing-here", UNMATCHED),
]


def test_every_route_is_labelled_with_its_full_template() -> None:
    """Included routers (nested prefixes, included twice) and mounts get full templates."""
    app = _app()
    registry = new_registry()
    app.add_middleware(PrometheusMiddleware, http=HttpMetrics.register(registry))
    with TestClient(app) as client:
        for method, path, _ in CASES:
            client.request(method, path)
    labelled = {(s["method"], s["path"]) for s in series(registry, "http_requests")}
    assert labelled == {(method, template) for method, _, template in CASES}


def test_walk_lists_every_template_once() -> None:
    templates = sorted({template for _, template in walk_templates(_app().routes)})
    for _, _, template in CASES:
        if template != UNMATCHED:
            assert template in templates


def test_routes_added_after_the_first_request_are_found() -> None:
    app = FastAPI()

    @app.get("/early")
    async def early() -> str:
        return "e"

    registry = new_registry()
    app.add_middleware(PrometheusMiddleware, http=HttpMetrics.register(registry))
    with TestClient(app) as client:
        client.get("/early")

        @app.get("/late/{n}")
        async def late(n: int) -> int:
            return n

        client.get("/late/3")
    assert {s["path"] for s in series(registry, "http_requests")} == {"/early", "/late/{n}"}
