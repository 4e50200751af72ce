"""The object graph the routers use, built once per app."""

from __future__ import annotations

from dataclasses import dataclass

from parley.bus import Hub
from parley.domain.chat import ChatService
from parley.domain.conversations import ConversationService
from parley.domain.events import EventFanout
from parley.domain.goals import GoalService
from parley.domain.handoff import HandoffService
from parley.domain.judge import JudgeService
from parley.domain.keys import KeyService
from parley.domain.live import LiveService
from parley.limiter import Limiter
from parley.llm import LLMGateway
from parley.store import Store


@dataclass(frozen=True, slots=True)
class Services:
    store: Store
    gateway: LLMGateway
    events: EventFanout
    goals: GoalService
    conversations: ConversationService
    chat: ChatService
    keys: KeyService
    limiter: Limiter
    handoffs: HandoffService
    hub: Hub  # this replica's live-stream subscribers
    live: LiveService
    judge: JudgeService  # grades ended conversations, off the request path
