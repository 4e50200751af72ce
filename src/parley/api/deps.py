"""``Annotated`` dependency aliases for the routers."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, WebSocketException, status
from starlette.requests import HTTPConnection

from parley.config import Settings
from parley.domain.conversations import ConversationService
from parley.domain.goals import GoalService
from parley.services import Services


def get_services(connection: HTTPConnection) -> Services:
    services: Services = connection.app.state.services
    return services


def get_settings(connection: HTTPConnection) -> Settings:
    settings: Settings = connection.app.state.settings
    return settings


def get_goals(connection: HTTPConnection) -> GoalService:
    return get_services(connection).goals


def get_conversations(connection: HTTPConnection) -> ConversationService:
    return get_services(connection).conversations


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
GoalsDep = Annotated[GoalService, Depends(get_goals)]
ConversationsDep = Annotated[ConversationService, Depends(get_conversations)]


def _presented_key(connection: HTTPConnection) -> str | None:
    authorization = connection.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return connection.headers.get("x-api-key")


def require_api_key(connection: HTTPConnection, settings: SettingsDep) -> None:
    """API keys guard ``/v1`` when ``PARLEY_API_KEYS`` is set; off otherwise."""
    if not settings.api_keys:
        return
    presented = _presented_key(connection)
    if presented is not None and any(
        hmac.compare_digest(presented.encode(), key.get_secret_value().encode())
        for key in settings.api_keys
    ):
        return
    if connection.scope["type"] == "websocket":
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="invalid API key")
    raise HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="missing or invalid API key",
        headers={"WWW-Authenticate": "Bearer"},
    )
