"""Wake-ups for the live streams: in-process (``Hub``), and across replicas through
PostgreSQL's LISTEN/NOTIFY (``PostgresListener``)."""

from parley.bus.hub import Hub, HubClosedError
from parley.bus.postgres import PostgresListener

__all__ = ["Hub", "HubClosedError", "PostgresListener"]
