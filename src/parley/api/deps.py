"""``Annotated`` dependency aliases for the routers, all read from the typed ``AppState``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from parley.api.auth import principal_of
from parley.api.state import AppState, state_of
from parley.config import Settings
from parley.domain.chat import ChatService
from parley.domain.conversations import ConversationService
from parley.domain.goals import GoalService
from parley.domain.handoff import HandoffService
from parley.domain.keys import KeyService, Principal
from parley.domain.live import LiveService
from parley.services import Services
from parley.telemetry import TurnTelemetry

# Dependencies are ``async def``: FastAPI runs a plain ``def`` one in a worker thread,
# a thread hop per dependency per request for what is an attribute lookup.


async def get_state(connection: HTTPConnection) -> AppState:
    return state_of(connection.app)


StateDep = Annotated[AppState, Depends(get_state)]


async def get_services(state: StateDep) -> Services:
    return state.services


async def get_settings(state: StateDep) -> Settings:
    return state.settings


async def get_goals(state: StateDep) -> GoalService:
    return state.services.goals


async def get_conversations(state: StateDep) -> ConversationService:
    return state.services.conversations


async def get_chat(state: StateDep) -> ChatService:
    return state.services.chat


async def get_keys(state: StateDep) -> KeyService:
    return state.services.keys


async def get_handoffs(state: StateDep) -> HandoffService:
    return state.services.handoffs


async def get_live(state: StateDep) -> LiveService:
    return state.services.live


async def get_principal(connection: HTTPConnection) -> Principal:
    return principal_of(connection)


async def get_turn_telemetry(state: StateDep) -> TurnTelemetry:
    return state.turn_telemetry


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
GoalsDep = Annotated[GoalService, Depends(get_goals)]
ConversationsDep = Annotated[ConversationService, Depends(get_conversations)]
ChatDep = Annotated[ChatService, Depends(get_chat)]
KeysDep = Annotated[KeyService, Depends(get_keys)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
HandoffsDep = Annotated[HandoffService, Depends(get_handoffs)]
LiveDep = Annotated[LiveService, Depends(get_live)]
TurnTelemetryDep = Annotated[TurnTelemetry, Depends(get_turn_telemetry)]
