"""The ``/metrics`` endpoint: text or OpenMetrics by Accept, gzip, optional bearer token.

Under several worker processes (``PROMETHEUS_MULTIPROC_DIR`` set) each scrape merges
the workers' files, so it shows the sum across workers.
"""

from __future__ import annotations

import asyncio
import gzip
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Sequence

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted
from starlette.requests import Request
from starlette.responses import Response

from parley.observability import multiprocess
from parley.observability.errors import mark_error

ScrapeHook = Callable[[], Awaitable[None]]

logger = structlog.get_logger("parley.observability")


class MetricsEndpoint:
    """Serves one registry; ``handle`` is the Starlette endpoint (``Request -> Response``)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        token: str | None = None,
        hooks: Sequence[ScrapeHook] = (),
        cache_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.token = token
        self.hooks = list(hooks)
        # A scrape within this many seconds of the last rendering of its format is served
        # that rendering: a storm of scrapes costs one render and one run of the hooks (a
        # database COUNT) per interval. Prometheus scrapes every 15 s or so.
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._rendered: dict[tuple[str, bool], tuple[float, bytes]] = {}
        self._rendering = asyncio.Lock()

    def add_hook(self, hook: ScrapeHook) -> None:
        """Run ``hook`` before each scrape, e.g. to refresh a gauge read from a database."""
        self.hooks.append(hook)

    async def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            # Answered here, in the error shape: an anonymous POST must not be a 5xx.
            return _error(
                request,
                405,
                "method_not_allowed",
                "method_not_allowed",
                f"{request.method} is not allowed on {request.url.path}; use GET",
                {"Allow": "GET, HEAD"},
            )
        if self.token is not None and not self._authorized(request):
            return _error(
                request,
                401,
                "unauthorized",
                "invalid_metrics_token",
                "missing or invalid bearer token for /metrics",
                {"WWW-Authenticate": "Bearer"},
            )
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        compress = gzip_accepted(request.headers.get("accept-encoding", ""))
        output = self._fresh(content_type, compress)
        if output is None:
            async with self._rendering:  # concurrent scrapes wait for one rendering
                output = self._fresh(content_type, compress)
                if output is None:
                    output = await self._scrape(encoder, compress)
                    self._rendered[content_type, compress] = (self._clock(), output)
        headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
        if compress:
            headers["Content-Encoding"] = "gzip"
        return Response(output, headers=headers)

    def _fresh(self, content_type: str, compress: bool) -> bytes | None:
        rendered = self._rendered.get((content_type, compress))
        if rendered is None or self._clock() - rendered[0] >= self.cache_seconds:
            return None
        return rendered[1]

    async def _scrape(self, encoder: Callable[[CollectorRegistry], bytes], compress: bool) -> bytes:
        for hook in self.hooks:
            try:
                await hook()
            except Exception:  # a stale gauge beats a failed scrape
                logger.exception("scrape_hook_failed", hook=getattr(hook, "__name__", "?"))
        # Rendering a large registry takes milliseconds of pure Python: in a thread, the
        # event loop keeps serving requests in between.
        return await asyncio.to_thread(self._render, encoder, compress)

    def _render(self, encoder: Callable[[CollectorRegistry], bytes], compress: bool) -> bytes:
        directory = multiprocess.directory()
        registry = multiprocess.registry(directory) if directory else self.registry
        output = encoder(registry)
        return gzip.compress(output, compresslevel=6) if compress else output

    def _authorized(self, request: Request) -> bool:
        assert self.token is not None
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode(), self.token.encode()
        )


def _error(
    request: Request, status: int, error_type: str, code: str, message: str, headers: dict[str, str]
) -> Response:
    mark_error(request.scope, error_type, code)
    body = {"error": {"type": error_type, "code": code, "message": message}}
    return Response(
        json.dumps(body), status_code=status, media_type="application/json", headers=headers
    )
