"""``parley serve``, ``parley migrate``, ``parley keys`` and ``parley demo``; ``python -m
parley`` is the same."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from parley import __version__
from parley.config import Settings, SettingsError, environment_variable, load_settings

if TYPE_CHECKING:
    from datetime import datetime

    import uvicorn

    from parley.domain.keys import ApiKey, Spend
    from parley.store import Database

# The rest is imported where it is used. A `--workers` worker is spawned: it imports
# this module again (the `parley` script's) before it can answer uvicorn's health check,
# and importing the store, observability, uvicorn and the demo client here took ~1 s of
# CPU, which a saturated machine stretched past the check's deadline.


_T = TypeVar("_T")


@contextlib.asynccontextmanager
async def _database(settings: Settings, *, migrated: bool = True) -> AsyncIterator[Database]:
    """The configured database for one command, its schema brought up to date first
    (``migrated``), closed after."""
    from parley.app import engine_options
    from parley.store import Database
    from parley.store.startup import migrate

    database = Database(settings.database_url, engine_options(settings))
    try:
        if migrated:
            await migrate(database)
        yield database
    finally:
        await database.dispose()


def _on_database(settings: Settings, work: Callable[[Database], Awaitable[_T]]) -> _T | str:
    """``work`` on the migrated database; what is wrong with the database, in one line,
    if it cannot be used."""
    from parley.store.startup import DatabaseStartupError

    async def run() -> _T:
        async with _database(settings) as database:
            return await work(database)

    try:
        return asyncio.run(run())
    except DatabaseStartupError as unusable:
        return f"{environment_variable('database_url')}: {unusable}"


def _migrate(settings: Settings) -> str | None:
    """Bring the database's schema up to date: what is wrong with the database, in one
    line, or None."""

    async def nothing_more(_: Database) -> None:
        return None

    return _on_database(settings, nothing_more)


def _keys_exist_where_required(settings: Settings) -> bool:
    """In production, some API key must exist: no open development mode there."""
    from parley.config import Environment

    if settings.env is not Environment.PRODUCTION or settings.api_keys:
        return True
    from parley.domain.errors import DatabaseUnavailableError
    from parley.store import KeyRepository

    async def any_key() -> bool:
        async with _database(settings, migrated=False) as database:
            return await KeyRepository(database).any_exist()

    try:
        return asyncio.run(any_key())
    except DatabaseUnavailableError:  # cannot tell now; production never opens up anyway
        return True


def _unusable(problem: str) -> int:
    print(f"parley: {problem}", file=sys.stderr)
    return 2


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    """``parley keys create|list|revoke|update`` on the configured database (migrated
    first)."""
    from datetime import UTC, datetime

    from parley.domain.errors import DomainError
    from parley.domain.keys import BudgetPeriod, KeyLimits, KeyService, Role
    from parley.store import KeyRepository

    async def run(database: Database) -> list[str]:
        keys = KeyService(KeyRepository(database), lambda: datetime.now(UTC))
        if args.keys_command == "create":
            limits = KeyLimits(
                args.budget_usd, BudgetPeriod(args.budget_period), args.rpm, args.tpm
            )
            key, secret = await keys.create(args.name, Role(args.role), limits)
            return [f"created {key.role} key {key.name!r}; its secret, shown this once:", secret]
        if args.keys_command == "revoke":
            key = await keys.revoke(args.name)
            return [f"revoked {key.name!r} (at {key.revoked_at:%Y-%m-%d %H:%M:%S} UTC)"]
        if args.keys_command == "update":
            key = await keys.update_limits(args.name, _limit_changes(args))
            return _key_table([key], await keys.spends([key]))
        every = await keys.all()
        return _key_table(every, await keys.spends(every))

    try:
        lines = _on_database(settings, run)
    except DomainError as refused:
        print(f"parley keys: {refused.message}", file=sys.stderr)
        return 1
    if isinstance(lines, str):
        return _unusable(lines)
    print("\n".join(lines))
    return 0


def _webhooks(args: argparse.Namespace, settings: Settings) -> int:
    """``parley webhooks failed|redeliver`` on the configured database (migrated first)."""
    from datetime import UTC, datetime

    from parley.store import OutboxRepository

    async def run(database: Database) -> tuple[int, list[str]]:
        outbox = OutboxRepository(database)
        if args.webhooks_command == "redeliver":
            now = datetime.now(UTC)
            queued = await outbox.redeliver(args.event_id, args.endpoint, now)
            if not queued:
                return 1, [f"parley webhooks: no failed delivery of event {args.event_id}"]
            return 0, [f"queued {queued} delivery of event {args.event_id} again"]
        rows = [
            f"{d.event.id:>10}  {d.endpoint:<20} {d.type:<24} {d.attempts:>8}  "
            f"{d.event.conversation_id}  {d.last_error or ''}"
            for d in await outbox.failed()
        ]
        header = f"{'event':>10}  {'endpoint':<20} {'type':<24} {'attempts':>8}  conversation"
        return 0, [header, *rows] if rows else ["no failed webhook delivery"]

    answer = _on_database(settings, run)
    if isinstance(answer, str):
        return _unusable(answer)
    status, lines = answer
    print("\n".join(lines), file=sys.stderr if status else sys.stdout)
    return status


_N = TypeVar("_N", int, float)


def _positive(kind: Callable[[str], _N]) -> Callable[[str], _N]:
    def parse(text: str) -> _N:
        value = kind(text)
        if not value > 0 or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
        return value

    return parse


def _limit_changes(args: argparse.Namespace) -> dict[str, object]:
    """The limits ``parley keys update`` was given: a value sets one, --no-X removes it."""
    changes: dict[str, object] = {}
    for limit in ("budget_usd", "rpm", "tpm"):
        if getattr(args, f"no_{limit}"):
            changes[limit] = None
        elif getattr(args, limit) is not None:
            changes[limit] = getattr(args, limit)
    if args.budget_period is not None:
        from parley.domain.keys import BudgetPeriod

        changes["budget_period"] = BudgetPeriod(args.budget_period)
    return changes


def _key_table(keys: Sequence[ApiKey], spends: Mapping[str, Spend]) -> list[str]:
    def when(moment: datetime | None) -> str:
        return f"{moment:%Y-%m-%d %H:%M}" if moment is not None else "never"

    def budget(key: ApiKey) -> str:
        limit = key.limits.budget_usd
        return "-" if limit is None else f"${limit:.2f}/{key.limits.budget_period.value}"

    rows = [("NAME", "ROLE", "CREATED", "LAST USED", "SPEND", "BUDGET", "STATUS")]
    rows += [
        (
            key.name,
            key.role.value,
            when(key.created_at),
            when(key.last_used_at),
            f"${spends[key.name].usd:.4f}",
            budget(key),
            "revoked" if key.revoked_at is not None else "active",
        )
        for key in keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from parley.observability import multiprocess

    config = _uvicorn_config(args, settings)
    try:
        sockets = _bind(config, settings)
    except ListenError as refused:
        print(f"parley: {refused}", file=sys.stderr)
        return 2
    if settings.auto_migrate:
        # Here, not in each app's start-up: a database that cannot be used is one line,
        # and workers never race each other over the schema.
        unusable = _migrate(settings)
        if unusable:
            for sock in sockets:
                sock.close()
            print(f"parley: {unusable}", file=sys.stderr)
            return 2
        os.environ[environment_variable("auto_migrate")] = "false"
    if not _keys_exist_where_required(settings):
        from parley.app import OpenInProductionError

        for sock in sockets:
            sock.close()
        print(f"parley: {OpenInProductionError()}", file=sys.stderr)
        return 2
    metrics_dir = os.environ.get(multiprocess.ENV)
    own_metrics_dir = False
    if args.workers > 1 and not metrics_dir:
        metrics_dir = tempfile.mkdtemp(prefix="parley-metrics-")
        own_metrics_dir = True
    if metrics_dir:
        # Fresh for every start: counters from an earlier run must not leak in. Set
        # before the workers start, so their prometheus_client writes value files.
        multiprocess.prepare(metrics_dir)
        os.environ[multiprocess.ENV] = metrics_dir
    try:
        return _run_uvicorn(config, sockets, settings)
    finally:
        if own_metrics_dir and metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


# uvicorn's exit status when the application could not start.
STARTUP_FAILURE = 3
WORKER_HEALTHCHECK_SECONDS = 60


def _uvicorn_config(args: argparse.Namespace, settings: Settings) -> uvicorn.Config:
    import uvicorn

    return uvicorn.Config(
        "parley.app:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        # A worker still importing on a loaded machine answers the supervisor's ping
        # late; uvicorn's 5 s killed it ("Child process died") and started it again.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
        log_config=None,  # Parley configures logging itself (structlog)
        # X-Forwarded-For / -Proto only from the proxies named; uvicorn's own default
        # trusted 127.0.0.1, so a local client chose its address (and its rate limit).
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies,
        ws="websockets-sansio",
        ws_max_size=settings.max_body_bytes,  # a frame is held to what a body is
        # No permessage-deflate: a 1 MB frame of one letter crossed the wire in a few
        # bytes, so TCP could not hold a flood back, and each was inflated to 1 MB here.
        ws_per_message_deflate=False,
        timeout_keep_alive=settings.keep_alive_seconds,
        # Turns have had their grace already (parley.lifecycle); this bounds the rest.
        timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_grace_seconds)),
    )


def _run_uvicorn(config: uvicorn.Config, sockets: list[socket.socket], settings: Settings) -> int:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    _log_listening(config, settings)
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=sockets).run()  # the workers accept on these
            return 0
        server = uvicorn.Server(config)
        server.run(sockets=sockets)
        return 0 if server.started else STARTUP_FAILURE
    except KeyboardInterrupt:
        return 0


def _log_listening(config: uvicorn.Config, settings: Settings) -> None:
    import structlog

    base = f"http://{config.host}"
    structlog.get_logger("parley").info(
        "parley_listening",
        url=f"{base}:{config.port}",
        metrics_url=f"{base}:{settings.metrics_port or config.port}/metrics",
        workers=config.workers,
    )


class ListenError(Exception):
    """A port Parley cannot listen on, said in one line (the variable, the address, why)."""


def _listen(host: str, port: int, variable: str) -> socket.socket:
    """A bound socket, before the app starts: a port in use is found before migrations run,
    and said in one line instead of uvicorn's log record after them."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as refused:
        sock.close()
        raise ListenError(
            f"{variable}: cannot listen on {host}:{port}: {refused.strerror or refused}"
        ) from None
    # Linux passes a listening socket's TCP_NODELAY on to each connection it accepts;
    # without it, Nagle's algorithm and delayed ACKs hold every small reply ~40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.set_inheritable(True)  # spawned workers accept on it
    return sock


def _bind(config: uvicorn.Config, settings: Settings) -> list[socket.socket]:
    """The API's socket, and the metrics port's when it has one (the app tells them apart
    by the port a request came in on)."""
    sockets = [_listen(config.host, config.port, environment_variable("port"))]
    if settings.metrics_port is not None:
        try:
            sockets.append(
                _listen(config.host, settings.metrics_port, environment_variable("metrics_port"))
            )
        except ListenError:
            sockets[0].close()
            raise
    return sockets


def _port(text: str) -> int:
    port = _int(text, "port")
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: use 1 to 65535")
    return port


def _workers(text: str) -> int:
    workers = _int(text, "worker count")
    if workers < 1:
        raise argparse.ArgumentTypeError(f"invalid worker count {text!r}: use 1 or more")
    return workers


def _share(text: str) -> float:
    try:
        share = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid share {text!r}: not a number") from None
    if not 0 <= share <= 1:
        raise argparse.ArgumentTypeError(f"invalid share {text!r}: use 0 to 1")
    return share


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: not a number") from None


def _environment_help() -> str:
    """Every setting's environment variable, from Settings itself (so it cannot drift)."""
    lines = ["environment variables (see the README for their meaning):"]
    for name, field in Settings.model_fields.items():
        secret = " (secret)" if "SecretStr" in str(field.annotation) else ""
        lines.append(f"  {environment_variable(name)}{secret}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parley",
        description="Parley: goal-driven LLM conversations over HTTP, SSE and WebSocket.",
        epilog=_environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"parley {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the HTTP and WebSocket API",
        description="Run the HTTP and WebSocket API under uvicorn.",
        epilog=_environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", help="bind address (default PARLEY_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port (default PARLEY_PORT or 8000)")
    serve.add_argument("--workers", type=_workers, default=1, help="worker processes (default 1)")
    demo = commands.add_parser(
        "demo",
        help="drive realistic traffic at a running Parley (fills the dashboards)",
        description="Create demo goals, then run clients that mix whole, SSE and WebSocket "
        "turns and now and then escalate, for a bounded time or number of turns, with a "
        "live line of turns/s, p95 and errors. --fail makes that share of turns fail in "
        "the simulated LLM, so the LLM alerts can be made to fire on purpose.",
    )
    demo.add_argument(
        "--url",
        # the address `make run` serves, wherever PARLEY_PORT moved it
        default=f"http://127.0.0.1:{os.environ.get('PARLEY_PORT') or 8000}",
        help="Parley's address (default http://127.0.0.1:PARLEY_PORT, 8000)",
    )
    demo.add_argument("--clients", type=_workers, default=5, help="concurrent clients (5)")
    demo.add_argument("--seconds", type=float, default=60.0, help="how long (60)")
    demo.add_argument("--turns", type=_workers, help="stop after this many turns")
    demo.add_argument(
        "--fail", type=_share, default=0.0, help="share of turns the simulated LLM fails (0-1)"
    )
    demo.add_argument(
        "--dashboard",
        default=os.environ.get("PARLEY_DEMO_DASHBOARD_URL"),
        help="the dashboard's address, printed to watch the traffic (default"
        " PARLEY_DEMO_DASHBOARD_URL; make stack passes its own)",
    )
    demo.add_argument(
        "--api-key",
        default=os.environ.get("PARLEY_DEMO_API_KEY"),
        help="an API key, when Parley has PARLEY_API_KEYS set (default PARLEY_DEMO_API_KEY,"
        " which keeps it out of `ps`)",
    )
    demo.add_argument(
        "--agent-key",
        default=os.environ.get("PARLEY_DEMO_AGENT_KEY"),
        help="with keys on, an agent key the demo's agent answers handoffs with (default"
        " PARLEY_DEMO_AGENT_KEY); with no key at all, two agents play without one",
    )
    keys = commands.add_parser(
        "keys",
        help="make, list and revoke API keys",
        description="Named API keys with a role, in the database at PARLEY_DATABASE_URL."
        " A secret is printed once, when its key is made; only its digest is stored.",
    )
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="make a key and print its secret once")
    create.add_argument("--name", required=True, help="a-z, 0-9, '.', '_', '-'; never reused")
    create.add_argument(
        "--role",
        required=True,
        choices=["client", "agent", "admin"],
        help="client: its own conversations; agent: reads every conversation;"
        " admin: everything, goals and keys included",
    )
    create.add_argument(
        "--budget-usd",
        type=_positive(float),
        help="US dollars the key may spend per budget period; past it, 429 budget_exceeded",
    )
    create.add_argument(
        "--budget-period",
        choices=["day", "week", "month"],
        default="month",
        help="the period (UTC) the budget and the spend shown are counted over",
    )
    create.add_argument("--rpm", type=_positive(int), help="requests a minute, on all replicas")
    create.add_argument("--tpm", type=_positive(int), help="LLM tokens a minute, on all replicas")
    key_commands.add_parser(
        "list",
        help="every key: name, role, created, last used, spend this period, budget, status",
    )
    revoke = key_commands.add_parser("revoke", help="stop a key at once, on every replica")
    revoke.add_argument("name")
    update = key_commands.add_parser(
        "update", help="change a key's budget or rate limits, on its next request"
    )
    update.add_argument("name")
    update.add_argument("--budget-usd", type=_positive(float), help="a new budget per period")
    update.add_argument("--budget-period", choices=["day", "week", "month"])
    update.add_argument("--rpm", type=_positive(int), help="requests a minute")
    update.add_argument("--tpm", type=_positive(int), help="LLM tokens a minute")
    for limit, name in (("budget-usd", "budget"), ("rpm", "rpm"), ("tpm", "tpm")):
        update.add_argument(f"--no-{limit}", action="store_true", help=f"remove the {name}")
    webhooks = commands.add_parser(
        "webhooks",
        help="webhook deliveries given up on, and sending them again",
        description="Webhook deliveries that failed for PARLEY_WEBHOOK_RETRY_HOURS (24) are"
        " kept as failed: list them, and queue one again once its receiver is back.",
    )
    webhook_commands = webhooks.add_subparsers(dest="webhooks_command", required=True)
    webhook_commands.add_parser(
        "failed", help="failed deliveries, newest first: event id, endpoint, type, error"
    )
    redeliver = webhook_commands.add_parser(
        "redeliver", help="queue a failed delivery again (its retries start afresh)"
    )
    redeliver.add_argument("event_id", type=_positive(int), help="the event id `failed` shows")
    redeliver.add_argument("--endpoint", help="only to this endpoint (default: every one)")
    commands.add_parser(
        "migrate",
        help="bring the database schema up to date",
        description="Bring the database schema up to date (PARLEY_DATABASE_URL).",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":  # a client of a running Parley: its settings do not apply
        import httpx

        from parley import demo
        from parley.client import ParleyError

        plan = demo.Plan(
            args.url,
            args.clients,
            args.seconds,
            args.turns,
            args.fail,
            args.api_key,
            args.dashboard,
            args.agent_key,
        )
        try:
            progress = asyncio.run(demo.run(plan))
        except (ParleyError, httpx.HTTPError, OSError) as failed:
            print(f"parley demo: {args.url}: {failed}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        return 0 if progress.turns else 1
    try:
        settings = load_settings()
    except SettingsError as invalid:
        print(f"parley: invalid settings\n{invalid}", file=sys.stderr)
        return 2
    from parley.observability import configure_logging

    configure_logging(
        settings.log_level, settings.log_format.value, log_content=settings.log_content
    )
    if args.command == "keys":
        return _keys(args, settings)
    if args.command == "webhooks":
        return _webhooks(args, settings)
    if args.command == "migrate":
        unusable = _migrate(settings)
        if unusable:
            print(f"parley: {unusable}", file=sys.stderr)
            return 2
        return 0
    return _serve(args, settings)
