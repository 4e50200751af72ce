"""``parley serve`` and ``parley migrate``; ``python -m parley`` is the same."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence

import uvicorn

from parley.config import Settings, SettingsError, load_settings
from parley.observability import configure_logging, multiprocess
from parley.store import Database, upgrade_to_head


async def _migrate(settings: Settings) -> None:
    database = Database(settings.database_url)
    try:
        await upgrade_to_head(database.engine)
    finally:
        await database.dispose()


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    metrics_dir = os.environ.get(multiprocess.ENV)
    own_metrics_dir = False
    if args.workers > 1:
        # Migrate once here; workers must not race each other over the schema.
        asyncio.run(_migrate(settings))
        os.environ["PARLEY_AUTO_MIGRATE"] = "false"
        if not metrics_dir:
            metrics_dir = tempfile.mkdtemp(prefix="parley-metrics-")
            own_metrics_dir = True
    if metrics_dir:
        # Fresh for every start: counters from an earlier run must not leak in. Set
        # before the workers start, so their prometheus_client writes value files.
        multiprocess.prepare(metrics_dir)
        os.environ[multiprocess.ENV] = metrics_dir
    try:
        return _run_uvicorn(args, settings)
    finally:
        if own_metrics_dir and metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _run_uvicorn(args: argparse.Namespace, settings: Settings) -> int:
    uvicorn.run(
        "parley.app:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers,
        log_config=None,  # Parley configures logging itself (structlog)
        proxy_headers=True,
        ws="websockets-sansio",
        ws_max_size=settings.max_body_bytes,  # a frame is held to what a body is
        # Turns have had their grace already (parley.lifecycle); this bounds the rest.
        timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_grace_seconds)),
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP and WebSocket API")
    serve.add_argument("--host", help="bind address (default PARLEY_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default PARLEY_PORT or 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    commands.add_parser("migrate", help="bring the database schema up to date")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as invalid:
        print(f"parley: invalid settings\n{invalid}", file=sys.stderr)
        return 2
    configure_logging(
        settings.log_level, settings.log_format.value, log_content=settings.log_content
    )
    if args.command == "migrate":
        asyncio.run(_migrate(settings))
        return 0
    return _serve(args, settings)
