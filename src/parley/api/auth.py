"""Who is calling: the API key presented (header, or a WebSocket subprotocol), checked
against the configured keys, and the browser origin a WebSocket comes from."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import HTTPException, WebSocket, WebSocketException, status
from pydantic import SecretStr
from starlette.requests import HTTPConnection

from parley.api.rate_limits import RateLimitedError
from parley.api.state import state_of

# Browsers cannot set headers on a WebSocket, but they can offer subprotocols:
# ``new WebSocket(url, ["parley", "bearer." + key])``. The server answers "parley".
WS_SUBPROTOCOL = "parley"
_WS_BEARER = "bearer."


class ApiKeys:
    """The configured API keys, kept only as SHA-256 digests, compared in constant time."""

    def __init__(self, keys: list[SecretStr]) -> None:
        self._digests = [_digest(key.get_secret_value()) for key in keys]

    def __len__(self) -> int:
        return len(self._digests)

    def match(self, presented: str) -> str | None:
        """The presented key's digest (hex) if it is one of the keys, else ``None``."""
        digest = _digest(presented)
        # Every digest is compared, so the time taken says nothing about which matched.
        matched = [hmac.compare_digest(digest, known) for known in self._digests]
        return digest.hex() if any(matched) else None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


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


async def require_api_key(connection: HTTPConnection) -> None:
    """API keys guard ``/v1`` when ``PARLEY_API_KEYS`` is set; off otherwise. Rate limits
    apply either way (parley.api.rate_limits)."""
    state = state_of(connection.app)
    limits = state.rate_limits
    address = connection.client.host if connection.client else "unknown"
    try:
        limits.check_address(address)
        identity = _identity(connection, state.api_keys, address)
        if identity is not None:
            limits.take(identity)
            # A WebSocket's message frames each take a token too (parley.api.chat_ws).
            connection.state.rate_identity = identity
            return
        limits.failed_key(address)
    except RateLimitedError:
        if connection.scope["type"] == "websocket":
            raise WebSocketException(
                code=status.WS_1008_POLICY_VIOLATION, reason="rate limited"
            ) from None
        raise
    if connection.scope["type"] == "websocket":
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="invalid API key")
    raise HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="missing or invalid API key",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _identity(connection: HTTPConnection, keys: ApiKeys, address: str) -> str | None:
    """Whose budget a request spends: its key's, or its address's with auth off; None for
    a missing or wrong key."""
    if not keys:
        return "address:" + address
    presented = _presented_key(connection)
    digest = keys.match(presented) if presented is not None else None
    return "key:" + digest if digest is not None else None


def rate_identity(connection: HTTPConnection) -> str:
    """The identity ``require_api_key`` admitted this connection as."""
    identity: str = connection.state.rate_identity
    return identity


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
