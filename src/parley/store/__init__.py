"""Persistence: SQLAlchemy Core behind small repositories, one transaction at a time
(``Database.run_transaction``); Alembic migrations."""

from parley.store.conversations import ConversationRepository
from parley.store.database import Database
from parley.store.evaluations import EvaluationRepository
from parley.store.events import EventLogRepository
from parley.store.goals import GoalCache, GoalRepository
from parley.store.handoffs import HandoffRepository
from parley.store.keys import KeyRepository
from parley.store.migrate import upgrade_to_head
from parley.store.outbox import OutboxRepository

__all__ = [
    "ConversationRepository",
    "Database",
    "EvaluationRepository",
    "GoalRepository",
    "KeyRepository",
    "OutboxRepository",
    "Store",
    "upgrade_to_head",
]


class Store:
    """The repositories over one database."""

    def __init__(self, database: Database, *, goal_cache_seconds: float = 0) -> None:
        self.database = database
        goals = GoalCache(goal_cache_seconds)
        self.goals = GoalRepository(database, goals)
        self.conversations = ConversationRepository(database, goals)
        self.keys = KeyRepository(database)
        self.handoffs = HandoffRepository(database)
        self.events = EventLogRepository(database)
        self.outbox = OutboxRepository(database)
        self.evaluations = EvaluationRepository(database)
