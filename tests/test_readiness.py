"""
What /readyz reports: the checks run together and bounded by a timeout on a
task.Clock, one run of a check at a time; and each part's real check against
a real PostgreSQL, real listeners on 127.0.0.1 and the Alpaca sync's record.
"""

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tradehub.alpaca.stream import Stream
from tradehub.alpaca.sync import AlpacaSync
from tradehub.alpaca.trade_updates import TradeUpdates
from tradehub.db.leadership import Leadership
from tradehub.db.migrations import discover
from tradehub.ops.readiness import (
    FOLLOWING,
    NO_LEADER,
    NotReady,
    Readiness,
    alpaca,
    database,
    listening,
    migrations,
    trade_stream,
)
from tradehub.schema import SQLTable
from tradehub.service import ListenerService

from .support import SCHEMA, blocking_query, free_port, fresh_database, make_pool


def ready(detail):
    async def check():
        return detail

    return check


class ReadinessTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()

    def report(self, readiness):
        return ensureDeferred(readiness.report())

    def test_every_part_is_reported_with_what_its_check_saw(self):
        readiness = Readiness(self.clock, 1, {"database": ready("answers"), "listeners": ready("up")})
        self.assertEqual(
            self.successResultOf(self.report(readiness)),
            {"database": {"ready": True, "detail": "answers"}, "listeners": {"ready": True, "detail": "up"}},
        )

    def test_a_part_not_ready_says_why(self):
        async def pending():
            raise NotReady("not applied: 0012")

        async def broken():
            raise ConnectionRefusedError("connection\n refused")

        readiness = Readiness(self.clock, 1, {"migrations": pending, "database": broken, "listeners": ready("up")})
        self.assertEqual(
            self.successResultOf(self.report(readiness)),
            {
                "migrations": {"ready": False, "detail": "not applied: 0012"},
                "database": {"ready": False, "detail": "connection refused"},
                "listeners": {"ready": True, "detail": "up"},
            },
        )

    def test_a_check_that_never_answers_is_not_ready_once_its_time_is_up(self):
        silence = Deferred()

        async def hangs():
            return await silence

        readiness = Readiness(self.clock, 1.5, {"database": hangs, "listeners": ready("up")})
        report = self.report(readiness)
        self.clock.advance(1.4)
        self.assertNoResult(report)
        self.clock.advance(0.1)
        self.assertEqual(
            self.successResultOf(report),
            {
                "database": {"ready": False, "detail": "no answer within 1.5s"},
                "listeners": {"ready": True, "detail": "up"},
            },
        )

    def test_probes_while_a_check_runs_wait_for_that_run_which_is_never_cancelled(self):
        runs = []

        async def slow():
            answer = Deferred(lambda _: runs.append("cancelled"))
            runs.append(answer)
            return await answer

        readiness = Readiness(self.clock, 1, {"database": slow})
        first = self.report(readiness)
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(first)["database"]["ready"], False)
        second = self.report(readiness)
        self.assertEqual(len(runs), 1, "a second probe started a second run")
        runs[0].callback("answers at last")
        self.assertEqual(self.successResultOf(second), {"database": {"ready": True, "detail": "answers at last"}})
        self.assertNotIn("cancelled", runs)
        self.report(readiness)
        self.assertEqual(len(runs), 2, "a probe after the run ended starts a new one")


class PartTests(TestCase):
    async def check(self, check):
        """The part as the report shows it."""
        return (await Readiness(reactor, 30, {"part": check}).report())["part"]

    async def started_pool(self, dsn, **settings):
        pool = make_pool(dsn, **settings)
        await pool.start()
        self.addCleanup(pool.close)
        return pool

    async def test_database_answers_through_the_pool(self):
        pool = await self.started_pool(await fresh_database(self))
        self.assertEqual(await self.check(database(pool)), {"ready": True, "detail": "answers SELECT 1"})

    async def test_database_that_cannot_be_reached_is_not_ready(self):
        pool = make_pool(f"host=127.0.0.1 port={free_port()} dbname=tradehub", retry_budget=0.001)
        part = await self.check(database(pool))
        self.assertFalse(part["ready"])
        # libpq's own words (which depend on the locale), not a timeout.
        self.assertTrue(part["detail"])
        self.assertNotIn("no answer within", part["detail"])

    async def test_migrations_current_pending_or_unknown(self):
        dsn = await fresh_database(self)
        pool = await self.started_pool(dsn)
        versions = [migration.version for migration in discover(SCHEMA)]
        self.assertEqual(
            await self.check(migrations(pool, SCHEMA)), {"ready": True, "detail": f"all {len(versions)} applied"}
        )
        await deferToThread(blocking_query, dsn, "DELETE FROM schema_migrations WHERE version = %s", versions[-1])
        self.assertEqual(
            await self.check(migrations(pool, SCHEMA)), {"ready": False, "detail": f"not applied: {versions[-1]:04d}"}
        )
        await deferToThread(
            blocking_query,
            dsn,
            "INSERT INTO schema_migrations (version, name, sha256) VALUES (%s, 'tail', ''), (9999, 'newer', '')",
            versions[-1],
        )
        self.assertEqual(
            await self.check(migrations(pool, SCHEMA)),
            {"ready": False, "detail": "the database has 9999, which this tradehub does not"},
        )

    async def test_a_database_never_migrated_is_not_ready(self):
        pool = await self.started_pool(await fresh_database(self, migrated=False))
        part = await self.check(migrations(pool, SCHEMA))
        self.assertFalse(part["ready"])
        self.assertIn("schema_migrations", part["detail"])

    async def test_listeners_up_or_not(self):
        factory = Factory.forProtocol(Protocol)
        frontend = ListenerService("frontend", reactor, "tcp:0:interface=127.0.0.1", factory)
        ml = ListenerService("ml", reactor, "tcp:0:interface=127.0.0.1", factory)
        await frontend.startService()
        self.addCleanup(frontend.stopService)
        self.assertEqual(await self.check(listening([frontend, ml])), {"ready": False, "detail": "not listening: ml"})
        await ml.startService()
        self.assertEqual(
            await self.check(listening([frontend, ml])),
            {
                "ready": True,
                "detail": f"frontend on 127.0.0.1:{frontend.port.getHost().port}, "
                f"ml on 127.0.0.1:{ml.port.getHost().port}",
            },
        )
        await ml.stopService()
        self.assertEqual(await self.check(listening([frontend, ml])), {"ready": False, "detail": "not listening: ml"})


class AlpacaPartTests(SynchronousTestCase):
    """Alpaca is reachable as the last sync of account, positions and orders found it."""

    def setUp(self):
        self.clock = Clock()
        self.sync = AlpacaSync(None, dict.fromkeys(SQLTable), self.clock, 15, 86400)

    def part(self):
        return self.successResultOf(ensureDeferred(Readiness(self.clock, 1, {"alpaca": alpaca(self.sync)}).report()))[
            "alpaca"
        ]

    def test_not_ready_before_a_sync_finished(self):
        self.assertEqual(self.part(), {"ready": False, "detail": "no sync has finished yet"})

    def test_as_the_last_sync_went(self):
        self.clock.advance(100)
        self.sync.last_success["sync_trading"] = 90
        self.assertEqual(self.part(), {"ready": True, "detail": "the last sync succeeded 10s ago"})
        self.sync.last_error["sync_trading"] = (95, "Alpaca did not answer GET /v2/account")
        self.assertEqual(
            self.part(), {"ready": False, "detail": "the last sync failed: Alpaca did not answer GET /v2/account"}
        )
        self.sync.last_success["sync_trading"] = 99
        self.assertEqual(self.part(), {"ready": True, "detail": "the last sync succeeded 1s ago"})

    def test_a_hub_that_does_not_lead_is_ready_and_says_who_syncs(self):
        leadership = Leadership("alpaca-leader", "", "key", reactor=self.clock, clock=self.clock, timeout=1)
        leadership.following = True
        readiness = Readiness(self.clock, 1, {"alpaca": alpaca(self.sync, leadership)})
        self.assertEqual(
            self.successResultOf(ensureDeferred(readiness.report()))["alpaca"], {"ready": True, "detail": FOLLOWING}
        )
        leadership.leading = True
        self.assertEqual(
            self.successResultOf(ensureDeferred(readiness.report()))["alpaca"],
            {"ready": False, "detail": "no sync has finished yet"},
        )

    def test_the_asset_sync_does_not_count(self):
        self.sync.last_success["sync_trading"] = 0
        self.sync.last_error["sync_assets"] = (1, "a bad asset row")
        self.assertTrue(self.part()["ready"])


class TradeStreamPartTests(SynchronousTestCase):
    """The trading stream down leaves the hub ready (it still takes orders) and says so: degraded."""

    def setUp(self):
        self.clock = Clock()
        self.stream = Stream("trading", "ws://127.0.0.1:1/stream", None, reactor=self.clock, endpoint=object())
        self.updates = TradeUpdates(
            AlpacaSync(None, dict.fromkeys(SQLTable), self.clock, 15, 86400), "k", "s", lambda h: self.stream
        )

    def part(self):
        readiness = Readiness(self.clock, 1, {"alpaca_trade_stream": trade_stream(self.updates)})
        return self.successResultOf(ensureDeferred(readiness.report()))["alpaca_trade_stream"]

    def test_down_is_degraded_and_still_ready(self):
        self.stream.attempts = 3
        self.assertEqual(
            self.part(),
            {
                "ready": True,
                "degraded": True,
                "detail": "the trading stream is down (attempt 3): "
                "fills reach the hub through the REST sync until it is back",
            },
        )

    def test_a_hub_that_does_not_lead_holds_no_stream_and_is_not_degraded(self):
        leadership = Leadership("alpaca-leader", "", "key", reactor=self.clock, clock=self.clock, timeout=1)
        leadership.following = True
        readiness = Readiness(self.clock, 1, {"alpaca_trade_stream": trade_stream(self.updates, leadership)})
        part = self.successResultOf(ensureDeferred(readiness.report()))["alpaca_trade_stream"]
        self.assertEqual(part, {"ready": True, "detail": FOLLOWING})

    def test_a_hub_that_cannot_tell_who_leads_is_degraded(self):
        """Its lock connection is down: it neither leads nor knows that another hub does."""
        leadership = Leadership("alpaca-leader", "", "key", reactor=self.clock, clock=self.clock, timeout=1)
        readiness = Readiness(self.clock, 1, {"alpaca_trade_stream": trade_stream(self.updates, leadership)})
        part = self.successResultOf(ensureDeferred(readiness.report()))["alpaca_trade_stream"]
        self.assertEqual(part, {"ready": True, "degraded": True, "detail": NO_LEADER})

    def test_streaming_once_reconciled(self):
        self.updates.trusted = True
        self.assertEqual(self.part(), {"ready": True, "detail": "streaming; 0 events stored, the last at -"})
