"""
twistd tradehub: command-line options and the service tree they build.
"""

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.client import Agent, HTTPConnectionPool

from tradehub.alpaca.client import AlpacaClient
from tradehub.alpaca.market_data import MarketData, is_crypto
from tradehub.alpaca.stream import Stream
from tradehub.alpaca.sync import AlpacaSync
from tradehub.alpaca.trade_updates import TradeUpdates, stream_url
from tradehub.changes.feed import Feed, build_feed
from tradehub.config import SETTINGS, ConfigError, Settings, load_settings, redact_url
from tradehub.controllers import build_controllers
from tradehub.data_folder import DataFolderLock
from tradehub.db.embedded import EmbeddedCluster
from tradehub.db.leadership import Leadership
from tradehub.db.pool import Pool
from tradehub.logs import json_observer
from tradehub.ops.http import ops_site
from tradehub.ops.metrics import Metrics
from tradehub.ops.readiness import hub_readiness
from tradehub.schema.model import SQLTable
from tradehub.server.hub import HubFactory
from tradehub.server.routes import build_registry
from tradehub.server.subscribing import Subscriptions
from tradehub.service import (
    ChangeFeedService,
    DataFolderService,
    EmbeddedPostgresService,
    HubService,
    ListenerService,
    MigrationService,
    PoolService,
    SessionsService,
    with_backlog,
)
from tradehub.workers import ParentWatchService, WorkerMetrics, Workers, inherited, is_shared, pool_share

SCHEMA = Path(__file__).resolve().parent / "schema"
log = Logger(namespace="tradehub.tap")


class BadConfiguration(usage.UsageError):
    """A setting is missing or invalid: told apart from a mistyped command line."""


class Options(usage.Options):
    """
    Every setting can come from the environment or .env; an option given here
    wins. Parsing validates them all once, as twistd expects of options, and
    keeps the result in C{settings} for L{makeService}.
    """

    optFlags = [["migrate-only", None, "apply pending schema migrations, then exit"]]
    optParameters = [
        [s.option, None, None, f"{s.help} (env {s.key}, default {s.default or 'empty'})"] for s in SETTINGS if s.option
    ]

    # The installed reactor provides every IReactor* interface the service
    # tree uses (time, TCP, threads, FD sets); no single interface names them all.
    reactor: Any
    settings: Settings

    def __init__(self, reactor: Any = None) -> None:
        """
        @param reactor: the reactor to check endpoints for and build the
            service on; twistd gives none, so parsing takes the one it installed.
        """
        super().__init__()
        self._given_reactor = reactor

    def overrides(self) -> dict[str, str]:
        return {s.key: self[s.option] for s in SETTINGS if s.option and self[s.option] is not None}

    def postOptions(self) -> None:
        self.reactor = self._given_reactor if self._given_reactor is not None else _installed_reactor()
        try:
            self.settings = load_settings(self.reactor, overrides=self.overrides())
        except ConfigError as e:
            raise BadConfiguration(f"configuration error: {e}") from None

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        twistd answers a UsageError by printing its whole usage text, then the
        message behind its own command line, all on stdout. A bad setting
        mostly comes from the environment or .env, where that text only buries
        it; so it ends the process here with the one line on stderr, status 1.
        """
        try:
            super().parseOptions(options)
        except BadConfiguration as e:
            raise SystemExit(f"tradehub: {e}") from None


def _installed_reactor() -> Any:
    """The reactor twistd runs: it handles its --reactor option before this subcommand's options."""
    from twisted.internet import reactor

    return reactor


def market_data(settings: Settings, ticks: Any, feed: Feed, reactor: Any, metrics: Metrics) -> list[MarketData]:
    """Alpaca's market-data streams, stocks and (when on) crypto, following the hub's MARKET_TICK subscribers."""
    streams = []
    for name, on, path, takes in (
        ("stocks", settings.alpaca_market_data, f"/v2/{settings.alpaca_feed}", lambda s: not is_crypto(s)),
        ("crypto", settings.alpaca_crypto, "/v1beta3/crypto/us", is_crypto),
    ):
        if not on:
            continue
        url = settings.apca_api_data_stream_url + path
        stream = MarketData(
            name,
            ticks,
            settings.apca_api_key_id,
            settings.apca_api_secret_key,
            [s for s in settings.alpaca_symbols if takes(s)],
            takes,
            partial(Stream, name, url, reactor=reactor, on_state=metrics.stream_changed),
        )
        feed.watch_symbols(SQLTable.MARKET_TICK, stream.followed)
        streams.append(stream)
    return streams


def makeService(options: Options) -> HubService:
    """The service tree, from the settings and reactor the parsed options hold."""
    settings = options.settings
    reactor = options.reactor
    steps: list[Service] = []
    # A worker of a first process (TRADEHUB_WORKERS): it gets the database and the listening sockets from it.
    worker = inherited()
    if worker is not None:
        steps.append(ParentWatchService(reactor))
    database_url = settings.database_url
    if not database_url:
        # Only the embedded cluster and its log use the data folder, so only then is it locked.
        cluster = EmbeddedCluster(settings.pgdata, log_file=settings.data_dir / "logs" / "postgresql.log")
        steps += [DataFolderService(DataFolderLock(settings.data_dir)), EmbeddedPostgresService(cluster, reactor)]
        database_url = cluster.url()
    metrics = Metrics()
    pool_min, pool_max = pool_share(settings.db_pool_min, settings.db_pool_max, settings.workers)
    pool = Pool(
        database_url,
        reactor=reactor,
        clock=reactor,
        size_min=pool_min,
        size_max=pool_max,
        per_client=settings.db_pool_per_client,
        idle_timeout=settings.db_idle_timeout,
        retry_budget=settings.db_retry_budget,
        retry_backoff=settings.db_retry_backoff,
        connect_timeout=settings.db_connect_timeout,
        statement_timeout=settings.db_statement_timeout,
        metrics=metrics,
    )
    steps.append(PoolService(pool))
    # Where the step that waits for workers goes: it stops after all that follows, so the database outlives them.
    join_at = len(steps)
    steps.append(MigrationService(pool, SCHEMA))
    broker = http_pool = None
    if settings.alpaca_enabled and not options["migrate-only"]:
        http_pool = HTTPConnectionPool(reactor)
        broker = AlpacaClient(
            HTTPClient(Agent(reactor, pool=http_pool)),
            reactor,
            key_id=settings.apca_api_key_id,
            secret_key=settings.apca_api_secret_key,
            base_url=settings.apca_api_base_url,
            data_url=settings.apca_api_data_url,
            timeout=settings.alpaca_timeout,
            retries=settings.alpaca_retry_attempts,
        )
    elif not options["migrate-only"]:
        log.info("Alpaca keys are not configured: the Alpaca sync and order submission are off")
    controllers = build_controllers(pool, broker)
    sync = trade_updates = leadership = workers = None
    if not options["migrate-only"]:
        feed, listener = build_feed(
            pool,
            controllers,
            database_url,
            reactor,
            sweep=settings.change_sweep_seconds,
            retention=settings.change_retention,
            connect_timeout=settings.db_connect_timeout,
        )
        steps.append(ChangeFeedService(feed, listener, pool))
        if broker is not None:
            # One hub per Alpaca key syncs and holds the streams; the others take over when it dies.
            leadership = Leadership(
                "alpaca-leader",
                database_url,
                settings.apca_api_key_id,
                reactor=reactor,
                clock=reactor,
                timeout=settings.db_connect_timeout,
                on_change=metrics.leading,
            )
            sync = AlpacaSync(
                broker, controllers, reactor, settings.alpaca_sync_seconds, settings.alpaca_assets_seconds, http_pool
            )
            sync.setServiceParent(leadership)
            if settings.alpaca_trade_stream:
                trade_updates = TradeUpdates(
                    sync,
                    settings.apca_api_key_id,
                    settings.apca_api_secret_key,
                    lambda handler: Stream(
                        "trading",
                        stream_url(settings.apca_api_base_url),
                        handler,
                        reactor=reactor,
                        on_state=metrics.stream_changed,
                    ),
                )
                trade_updates.setServiceParent(leadership)
            for stream in market_data(settings, controllers[SQLTable.MARKET_TICK], feed, reactor, metrics):
                stream.setServiceParent(leadership)
            steps.append(leadership)
        factory = HubFactory(
            build_registry(controllers),
            settings.tokens,
            reactor,
            handshake_timeout=settings.handshake_timeout,
            heartbeat_ms=settings.heartbeat_ms,
            max_frame=settings.max_frame,
            max_request=settings.max_request,
            max_in_flight=settings.max_in_flight,
            send_buffer=settings.send_buffer,
            metrics=metrics,
            subscriptions=Subscriptions(feed),
        )
        metrics.watch(factory.sessions, pool, feed)
        listeners = [
            ListenerService(
                role,
                reactor,
                with_backlog(description, settings.listen_backlog),
                factory,
                inherited=worker.sockets[role] if worker is not None else None,
            )
            for role, description in (("frontend", settings.frontend_endpoint), ("ml", settings.ml_endpoint))
            if worker is None or role in worker.sockets
        ]
        steps += [SessionsService(factory, settings.shutdown_deadline), *listeners]
        registry = metrics.registry
        if settings.workers > 1 and worker is None:
            workers = Workers(
                reactor,
                settings.workers,
                [listener for listener in listeners if is_shared(listener.description)],
                os.environ | options.overrides(),
                database_url=database_url,
                ops=bool(settings.ops_endpoint),
                stop_deadline=settings.shutdown_deadline,
            )
            steps.insert(join_at, workers.joined)
            # After the listeners, whose sockets the workers inherit; asked to stop first.
            steps.append(workers)
            registry = CollectorRegistry()
            registry.register(WorkerMetrics(metrics.registry, workers))
        if settings.ops_endpoint:
            # After the client listeners, whose being up it reports; stopped first.
            readiness = hub_readiness(reactor, pool, SCHEMA, listeners, leadership, sync, trade_updates, workers)
            site = ops_site(reactor, readiness, registry)
            steps.append(ListenerService("ops", reactor, settings.ops_endpoint, site))

    database = redact_url(settings.database_url) if settings.database_url else f"embedded ({settings.pgdata})"
    alpaca = settings.apca_api_base_url if broker is not None else "off"
    ops = f"on {settings.ops_endpoint}" if settings.ops_endpoint else "off"
    parent = getattr(options, "parent", None) or {}
    return HubService(
        reactor,
        steps,
        ready_message=(
            f"frontend on {settings.frontend_endpoint}, ml on {settings.ml_endpoint}, ops {ops}, "
            f"database {database}, alpaca {alpaca}"
        ),
        migrate_only=options["migrate-only"],
        log_observer=json_observer(parent.get("logfile")) if settings.log_format == "json" else None,
    )
