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


@router.get(
    "/readyz",
    responses={503: {"description": "Database unreachable or not writable, or shutting down"}},
)
async def readyz(request: Request, services: ServicesDep) -> JSONResponse:
    """The database answers and takes writes; ready for traffic."""
    database = services.store.database
    if services.chat.in_flight.closing:
        reason = ("shutting_down", "the server is shutting down")
    elif not await database.ping():
        reason = ("database_unreachable", "the database does not answer")
    elif not await database.writable():
        reason = ("database_not_writable", "the database cannot take a write now")
    else:
        return JSONResponse({"status": "ready"})
    return error_response(request, 503, "unavailable", *reason)
