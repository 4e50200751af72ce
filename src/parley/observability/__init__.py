"""Observability for FastAPI/Starlette apps. Imports nothing from the rest of Parley."""

from parley.observability.logging import configure_logging
from parley.observability.request_id import RequestIdMiddleware, request_id_of

__all__ = ["RequestIdMiddleware", "configure_logging", "request_id_of"]
