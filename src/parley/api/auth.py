"""Who is calling and with which role: the API key presented (header, or a WebSocket
subprotocol) as a principal (parley.domain.keys), each route's roles declared once with
``roles(...)``, and the browser origin a WebSocket comes from."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import Depends, HTTPException, WebSocket, WebSocketException, status
from starlette.requests import HTTPConnection

from parley.api.rate_limits import RateLimitedError
from parley.api.state import state_of
from parley.domain.errors import DatabaseUnavailableError, InvalidKeyNameError, KeyRevokedError
from parley.domain.keys import DEVELOPMENT, KeyService, Principal, Role, check_name
from parley.limiter import LimiterUnavailableError
from parley.observability import set_caller

# Browsers cannot set headers on a WebSocket, but they can offer subprotocols:
# ``new WebSocket(url, ["parley", "bearer." + key])``. The server answers "parley".
WS_SUBPROTOCOL = "parley"
_WS_BEARER = "bearer."
# In development mode (no key exists), the agent a request acts as, for agent tools.
DEVELOPMENT_AGENT_HEADER = "x-parley-agent"
# The OpenAPI extension every /v1 operation lists its roles under.
ROLES_EXTENSION = "x-parley-roles"


def _presented_key(connection: HTTPConnection) -> str | None:
    authorization = connection.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    if connection.scope["type"] == "websocket":
        for offered in connection.scope.get("subprotocols", ()):
            if offered.startswith(_WS_BEARER):
                return str(offered).removeprefix(_WS_BEARER)
    return connection.headers.get("x-api-key")


async def authenticate(connection: HTTPConnection) -> None:
    """Every ``/v1`` request: who it is (a key's principal, or anyone in development mode,
    when no key exists), and the rate limits (parley.api.rate_limits)."""
    state = state_of(connection.app)
    limits = state.rate_limits
    address = connection.client.host if connection.client else "unknown"
    websocket = connection.scope["type"] == "websocket"
    try:
        await limits.check_address(address)
        principal = await _principal(connection, state.services.keys)
        if principal is not None:
            identity = "address:" + address if principal.name is None else "key:" + principal.name
            await limits.take(identity, principal.limits.rpm)
            # A WebSocket's message frames each take a token too (parley.api.chat_ws).
            connection.state.rate_identity = identity
            connection.state.principal = principal
            if principal.name is not None:  # the name, never the secret
                structlog.contextvars.bind_contextvars(key_name=principal.name)
                set_caller(principal.name)  # the metrics' key_name label
            return
        await limits.failed_key(address)
    except RateLimitedError:
        if websocket:
            raise WebSocketException(
                code=status.WS_1008_POLICY_VIOLATION, reason="rate limited"
            ) from None
        raise
    except InvalidKeyNameError:  # a development agent's name that no key could have
        if websocket:
            raise WebSocketException(
                code=status.WS_1008_POLICY_VIOLATION, reason="invalid agent name"
            ) from None
        raise
    except DatabaseUnavailableError:
        if websocket:
            raise WebSocketException(
                code=status.WS_1013_TRY_AGAIN_LATER, reason="database unavailable"
            ) from None
        raise
    except LimiterUnavailableError:  # Redis down, and the limits fail closed
        if websocket:
            raise WebSocketException(
                code=status.WS_1013_TRY_AGAIN_LATER, reason="rate limiter unavailable"
            ) from None
        raise
    if websocket:
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="invalid API key")
    raise HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="missing or invalid API key",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def _principal(connection: HTTPConnection, keys: KeyService) -> Principal | None:
    presented = _presented_key(connection)
    if presented is not None:
        principal = await keys.authenticate(presented)
        if principal is not None:
            return principal
    if not await keys.is_open():
        return None
    # Development only (no key exists): an agent tool names its agent in a header.
    agent = connection.headers.get(DEVELOPMENT_AGENT_HEADER)
    return Principal(name=check_name(agent), role=Role.AGENT) if agent else DEVELOPMENT


def principal_of(connection: HTTPConnection) -> Principal:
    """The principal ``authenticate`` admitted this connection as."""
    principal: Principal = connection.state.principal
    return principal


async def readmit(connection: HTTPConnection) -> Principal:
    """For a long-lived connection (a WebSocket's turns, a live stream's events): the
    principal its key stands for now, with its limits as they are now. Raises
    ``KeyRevokedError`` once the key was revoked. Cheap: the replica keeps its keys
    (parley.domain.keys). Development mode and its agents stand as admitted."""
    admitted = principal_of(connection)
    presented = _presented_key(connection)
    if admitted.name is None or presented is None:
        return admitted
    current = await state_of(connection.app).services.keys.authenticate(presented)
    if current is None:
        raise KeyRevokedError()
    return current


def rate_identity(connection: HTTPConnection) -> str:
    """The identity ``authenticate`` admitted this connection as, for the rate limits."""
    identity: str = connection.state.rate_identity
    return identity


def roles(*allowed: Role) -> dict[str, Any]:
    """A route's roles, declared once: ``@router.get(..., **roles(Role.ADMIN))``. The
    dependency refuses any other role with 403 (a WebSocket: close 1008), and the OpenAPI
    operation lists the roles under ``x-parley-roles``."""
    names = frozenset(allowed)

    async def check(connection: HTTPConnection) -> None:
        principal = principal_of(connection)
        if principal.role in names:
            return
        message = f"this needs a key with role {' or '.join(sorted(names))}"
        if connection.scope["type"] == "websocket":
            raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason=message)
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=message)

    return {
        "dependencies": [Depends(check)],
        "openapi_extra": {ROLES_EXTENSION: [role.value for role in Role if role in names]},
    }


async def require_allowed_origin(websocket: WebSocket) -> None:
    """A WebSocket from a browser page is taken from the same origin or an allowed one.

    Browsers send Origin and enforce CORS for fetches, but not for WebSockets: without
    this, any page a user visits could drive a conversation (with auth off, or a key the
    page got hold of). Clients that are not browsers send no Origin and pass.
    """
    origin = websocket.headers.get("origin")
    if origin is None or origin in state_of(websocket.app).settings.allowed_origins:
        return
    host = websocket.headers.get("host", "")
    if origin.partition("://")[2] == host and host:
        return
    raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="origin not allowed")
