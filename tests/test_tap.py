import os
from pathlib import Path

from twisted.internet.testing import MemoryReactor
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

import tap
from tradehub.alpaca.client import AlpacaClient
from tradehub.alpaca.market_data import MarketData
from tradehub.alpaca.sync import AlpacaSync
from tradehub.alpaca.trade_updates import TradeUpdates
from tradehub.config import SETTINGS
from tradehub.db.leadership import Leadership
from tradehub.protocol.enums import SQLCommand, SQLTable
from tradehub.service import (
    ChangeFeedService,
    DataFolderService,
    EmbeddedPostgresService,
    ListenerService,
    MigrationService,
    PoolService,
    SessionsService,
)

TOKENS = {"TRADEHUB_FRONTEND_TOKEN": "f-secret", "TRADEHUB_ML_TOKEN": "m-secret"}


class OptionsTests(SynchronousTestCase):
    def setUp(self):
        self.environ = dict(TOKENS)
        self.patch(os, "environ", self.environ)
        self.reactor = MemoryReactor()

    def test_help_lists_every_option_with_its_default(self):
        help_text = str(tap.Options())
        for setting in SETTINGS:
            if setting.option:
                self.assertIn(f"--{setting.option}=", help_text)
        flat = " ".join(help_text.split())
        self.assertIn("default tcp:7001:interface=127.0.0.1", flat)
        self.assertIn("--migrate-only", help_text)

    def test_given_options_become_overrides(self):
        options = tap.Options(self.reactor)
        options.parseOptions(["--db-pool-max", "12", "--log-format", "json"])
        self.assertEqual(options.overrides(), {"TRADEHUB_DB_POOL_MAX": "12", "TRADEHUB_LOG_FORMAT": "json"})

    def test_parsing_validates_once_into_settings(self):
        options = tap.Options(self.reactor)
        options.parseOptions(["--db-pool-max", "12"])
        self.assertEqual(options.settings.db_pool_max, 12)
        self.assertIs(options.reactor, self.reactor)

    def test_post_options_raises_usage_error_for_a_bad_setting(self):
        options = tap.Options(self.reactor)
        options["frontend-endpoint"] = "tcp:seventy"
        with self.assertRaises(usage.UsageError) as caught:
            options.postOptions()
        self.assertTrue(
            str(caught.exception).startswith("configuration error: TRADEHUB_FRONTEND_ENDPOINT: "), caught.exception
        )

    def test_a_bad_setting_exits_with_one_line(self):
        """Not twistd's usage text and message: the one line, alone, on stderr."""
        with self.assertRaises(SystemExit) as caught:
            tap.Options(self.reactor).parseOptions(["--db-pool-min", "9", "--db-pool-max", "3"])
        self.assertEqual(
            caught.exception.code,
            "tradehub: configuration error: TRADEHUB_DB_POOL_MIN: 9 is above TRADEHUB_DB_POOL_MAX (3)",
        )

    def test_a_setting_from_the_environment_exits_the_same_way(self):
        self.environ["TRADEHUB_ML_TOKEN"] = ""
        with self.assertRaises(SystemExit) as caught:
            tap.Options(self.reactor).parseOptions([])
        self.assertEqual(
            caught.exception.code, "tradehub: configuration error: TRADEHUB_ML_TOKEN: must be set to a non-empty secret"
        )

    def test_a_bad_command_line_is_left_to_twistd(self):
        with self.assertRaises(usage.UsageError) as caught:
            tap.Options(self.reactor).parseOptions(["--no-such-option"])
        self.assertNotIsInstance(caught.exception, tap.BadConfiguration)


class MakeServiceTests(SynchronousTestCase):
    """The service tree built on a MemoryReactor, looked at without starting it."""

    def setUp(self):
        self.environ = dict(
            TOKENS,
            DATABASE_URL="postgresql://trader:db-password@db.invalid/hub",
            TRADEHUB_ML_ENDPOINT="tcp:7102:interface=10.0.0.5",
        )
        self.patch(os, "environ", self.environ)
        self.reactor = MemoryReactor()

    def build(self, *args):
        options = tap.Options(self.reactor)
        options.parseOptions(["--frontend-endpoint", "tcp:7101:interface=127.0.0.1", *args])
        return tap.makeService(options)

    def steps(self, hub):
        return [(type(step), step.name) for step in hub]

    def test_steps_in_order_with_an_external_database(self):
        hub = self.build("--db-pool-max", "12")
        self.assertEqual(
            self.steps(hub),
            [
                (PoolService, "pool"),
                (MigrationService, "migrations"),
                (ChangeFeedService, "change-feed"),
                (SessionsService, "sessions"),
                (ListenerService, "frontend"),
                (ListenerService, "ml"),
                (ListenerService, "ops"),
            ],
        )
        pool = hub.getServiceNamed("pool").pool
        self.assertEqual((pool.size_min, pool.size_max), (2, 12))
        self.assertIs(hub.getServiceNamed("migrations").pool, pool)
        feed = hub.getServiceNamed("change-feed").feed
        self.assertIs(feed.pool, pool)
        self.assertIs(hub.getServiceNamed("sessions").factory.subscriptions.feed, feed)
        self.assertFalse(any(step.running for step in hub))
        self.assertEqual(self.reactor.tcpServers, [])

    def test_each_alpaca_stream_can_be_left_off_or_crypto_turned_on(self):
        self.environ.update(
            APCA_API_KEY_ID="key-id",
            APCA_API_SECRET_KEY="secret-key",
            TRADEHUB_ALPACA_TRADE_STREAM="off",
            TRADEHUB_ALPACA_MARKET_DATA="off",
            TRADEHUB_ALPACA_CRYPTO="on",
            TRADEHUB_ALPACA_SYMBOLS="aapl, btc/usd",
        )
        leadership = self.build().getServiceNamed("alpaca-leader")
        self.assertEqual([s.name for s in leadership], ["alpaca-sync", "alpaca-crypto"])
        crypto = leadership.getServiceNamed("alpaca-crypto")
        self.assertEqual(crypto.stream.url, "wss://stream.data.alpaca.markets/v1beta3/crypto/us")
        self.assertEqual(crypto.wanted, {"BTC/USD"})

    def test_alpaca_sync_after_migrations_only_when_keys_are_given(self):
        self.environ.update(APCA_API_KEY_ID="key-id", APCA_API_SECRET_KEY="secret-key")
        hub = self.build()
        self.assertEqual(
            self.steps(hub),
            [
                (PoolService, "pool"),
                (MigrationService, "migrations"),
                (ChangeFeedService, "change-feed"),
                (Leadership, "alpaca-leader"),
                (SessionsService, "sessions"),
                (ListenerService, "frontend"),
                (ListenerService, "ml"),
                (ListenerService, "ops"),
            ],
        )
        # What one hub per Alpaca key runs: only while it leads, in this order.
        leadership = hub.getServiceNamed("alpaca-leader")
        self.assertEqual(
            [(type(s), s.name) for s in leadership],
            [(AlpacaSync, "alpaca-sync"), (TradeUpdates, "alpaca-trade-updates"), (MarketData, "alpaca-stocks")],
        )
        sync = leadership.getServiceNamed("alpaca-sync")
        self.assertIsInstance(sync.alpaca, AlpacaClient)
        stream = leadership.getServiceNamed("alpaca-trade-updates").stream
        self.assertEqual(stream.url, "wss://paper-api.alpaca.markets/stream")
        stocks = leadership.getServiceNamed("alpaca-stocks").stream
        self.assertEqual(stocks.url, "wss://stream.data.alpaca.markets/v2/iex")
        self.assertIs(sync.clock, self.reactor)
        self.assertIn("alpaca https://paper-api.alpaca.markets", hub.ready_message)
        # The sync and the wire share one controller per table; the ORDER one submits through Alpaca.
        registry = hub.getServiceNamed("sessions").factory.registry
        insert_order = registry.route(SQLCommand.INSERT, SQLTable.ORDER).handle
        self.assertIs(insert_order.__self__.controller, sync.orders)
        self.assertIs(sync.orders.broker, sync.alpaca)

    def test_migrate_only_stops_after_the_migrations(self):
        self.environ.update(APCA_API_KEY_ID="key-id", APCA_API_SECRET_KEY="secret-key")
        hub = self.build("--migrate-only")
        self.assertEqual(self.steps(hub), [(PoolService, "pool"), (MigrationService, "migrations")])
        self.assertTrue(hub.migrate_only)

    def test_embedded_cluster_first_without_a_database_url(self):
        del self.environ["DATABASE_URL"]
        data_dir = Path(self.mktemp()).resolve()
        hub = self.build("--data-dir", str(data_dir))
        self.assertEqual(
            self.steps(hub)[:3],
            [(DataFolderService, "data-folder"), (EmbeddedPostgresService, "embedded-postgres"), (PoolService, "pool")],
        )
        self.assertEqual(hub.getServiceNamed("data-folder").lock.folder, data_dir)
        self.assertEqual(hub.getServiceNamed("embedded-postgres").cluster.pgdata, data_dir / "pgdata")
        self.assertFalse(data_dir.exists(), "building the tree must not touch the data directory")

    def test_starting_the_listeners_listens_on_the_configured_endpoints(self):
        hub = self.build("--ops-endpoint", "tcp:7103:interface=127.0.0.1")
        factory = hub.getServiceNamed("sessions").factory
        for name in ("frontend", "ml", "ops"):
            self.successResultOf(hub.getServiceNamed(name).startService())
        ops_site = hub.getServiceNamed("ops").factory
        self.assertEqual(
            self.reactor.tcpServers,
            [(7101, factory, 1024, "127.0.0.1"), (7102, factory, 1024, "10.0.0.5"), (7103, ops_site, 50, "127.0.0.1")],
        )
        self.assertEqual(sorted(ops_site.resource.children), [b"healthz", b"metrics", b"readyz"])

    def test_listen_backlog_applies_unless_the_endpoint_sets_its_own(self):
        self.environ["TRADEHUB_ML_ENDPOINT"] = "tcp:7102:backlog=9:interface=10.0.0.5"
        hub = self.build("--listen-backlog", "300", "--ops-endpoint", "")
        for role in ("frontend", "ml"):
            self.successResultOf(hub.getServiceNamed(role).startService())
        self.assertEqual([backlog for _, _, backlog, _ in self.reactor.tcpServers], [300, 9])

    def test_an_empty_ops_endpoint_leaves_the_operations_endpoint_out(self):
        hub = self.build("--ops-endpoint", "")
        self.assertEqual(self.steps(hub)[-1], (ListenerService, "ml"))
        self.assertIn("ops off", hub.ready_message)

    def test_ready_line_names_the_endpoints_and_hides_the_database_password(self):
        hub = self.build()
        self.assertEqual(
            hub.ready_message,
            "frontend on tcp:7101:interface=127.0.0.1, ml on tcp:7102:interface=10.0.0.5, "
            "ops on tcp:7003:interface=127.0.0.1, database postgresql://trader:***@db.invalid/hub, alpaca off",
        )

    def test_builds_from_the_settings_parsing_loaded(self):
        options = tap.Options(self.reactor)
        options.parseOptions([])
        self.patch(tap, "load_settings", lambda *args, **kwargs: self.fail("settings loaded a second time"))
        self.assertEqual(self.steps(tap.makeService(options))[0], (PoolService, "pool"))
