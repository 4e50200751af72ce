"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from parley.api.deps import ServicesDep
from parley.api.errors import error_response

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Database unreachable"}})
async def readyz(request: Request, services: ServicesDep) -> JSONResponse:
    """The database answers; ready for traffic."""
    if await services.store.database.ping():
        return JSONResponse({"status": "ready"})
    return error_response(
        request, 503, "unavailable", "database_unreachable", "the database does not answer"
    )
