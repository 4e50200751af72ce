"""structlog set-up: JSON in production, readable in a terminal, one pipeline for stdlib too."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog
from structlog.typing import Processor

LogFormat = Literal["auto", "json", "console"]


# Libraries whose DEBUG records carry request bodies: the users' messages and replies.
CONTENT_LOGGERS = ("groq", "openai", "httpcore", "httpx", "aiosqlite")


def configure_logging(
    level: str = "INFO",
    fmt: LogFormat = "auto",
    *,
    log_content: bool = False,
    trace_ids: Processor | None = None,
) -> None:
    """Route structlog and stdlib logging (uvicorn, alembic) through one renderer.

    Without ``log_content`` no library logs below INFO where its records would carry
    message contents (the SQL parameters are hidden by the engine, see parley.store)."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if trace_ids is not None:  # tracing on: each line names its trace and span
        shared.append(trace_ids)
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: configure_logging may run again (CLI, then each app), and a cached
        # logger would keep the processors of the first run.
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ScrubQueryStrings())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic"):
        # Let these propagate to the root handler instead of printing on their own.
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # The Groq SDK's HTTP client would log every call at INFO; the gateway logs them already.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for name in CONTENT_LOGGERS:
        if log_content:
            logging.getLogger(name).setLevel(logging.NOTSET)
        elif logging.getLogger(name).getEffectiveLevel() < logging.INFO:
            logging.getLogger(name).setLevel(logging.INFO)
    # SQLAlchemy holds its own loggers at WARNING; with contents allowed, its statements
    # and their parameters (hidden by the engine otherwise) log at the level asked for.
    logging.getLogger("sqlalchemy.engine").setLevel(level if log_content else logging.WARNING)
    # Parley logs each request itself, with its id; uvicorn's access line would repeat it.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # Seven lines on every start (Alembic registering its plugins), telling nobody anything.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


class ScrubQueryStrings(logging.Filter):
    """Cuts the query string off every path in a stdlib record's arguments (uvicorn logs
    each WebSocket handshake with its full path): a secret sent there never lands in a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(_has_query(arg) for arg in record.args):
            record.args = tuple(
                str(arg).partition("?")[0] + "?…" if _has_query(arg) else arg for arg in record.args
            )
        return True


def _has_query(arg: object) -> bool:
    return isinstance(arg, str) and arg.startswith("/") and "?" in arg
