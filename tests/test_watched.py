"""
The symbols MARKET_TICK subscribers follow, across two hubs on one real
database: the hub that holds Alpaca's market data learns of a subscriber
connected to another hub, and forgets a dead hub's.
"""

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tradehub.client.asynchronous import connect
from tradehub.protocol.enums import Role, SQLTable

from . import wire
from .hub import start_hub, table_registry
from .support import blocking_query
from .test_leadership import until


class WatchedSymbolsTests(TestCase):
    timeout = 60

    async def setUp(self):
        self.here = await start_hub(self, table_registry, push=True)
        self.there = await start_hub(self, table_registry, dsn=self.here.dsn, push=True)
        # Each hub that runs Alpaca's market data watches (only the leader's stream subscribes).
        self.seen_here, self.seen_there = [], []
        self.here.feed.watch_symbols(SQLTable.MARKET_TICK, self.seen_here.append)
        self.there.feed.watch_symbols(SQLTable.MARKET_TICK, self.seen_there.append)

    async def ml(self, hub):
        client = await connect(reactor, f"tcp:127.0.0.1:{hub.port}", Role.ML, wire.ML_TOKEN)
        self.addCleanup(lambda: client.transport.connected and client.transport.loseConnection())
        return client

    async def test_a_subscriber_on_one_hub_is_followed_by_the_other(self):
        client = await self.ml(self.there)
        await client.subscribe(SQLTable.MARKET_TICK, symbols=["AAPL", "MSFT"])
        # Its own hub knows at once; the other once the NOTIFY reaches it.
        self.assertEqual(self.seen_there[-1], {"AAPL", "MSFT"})
        await until(lambda: self.seen_here[-1:] == [{"AAPL", "MSFT"}])
        other = await self.ml(self.here)
        await other.subscribe(SQLTable.MARKET_TICK, symbols=["TSLA"])
        await until(lambda: self.seen_there[-1:] == [{"AAPL", "MSFT", "TSLA"}])
        client.transport.loseConnection()
        await until(lambda: self.seen_here[-1:] == [{"TSLA"}] and self.seen_there[-1:] == [{"TSLA"}])

    async def test_a_hub_that_stopped_is_forgotten_and_a_dead_one_expires(self):
        client = await self.ml(self.there)
        await client.subscribe(SQLTable.MARKET_TICK, symbols=["AAPL"])
        await until(lambda: self.seen_here[-1:] == [{"AAPL"}])
        # A hub that died long ago left its row behind: it counts no more, and goes.
        await deferToThread(
            blocking_query,
            self.here.dsn,
            "INSERT INTO watched_symbols VALUES (gen_random_uuid(), 'MARKET_TICK', '{GME}', now() - interval '1 hour')",
        )
        await self.here.feed.watched.sync()
        self.assertEqual(self.seen_here[-1], {"AAPL"})
        await self.here.feed.watched.refresh()
        rows = await deferToThread(blocking_query, self.here.dsn, "SELECT symbols FROM watched_symbols ORDER BY 1")
        self.assertNotIn((["GME"],), rows)
        # A hub that stops removes its row at once (the others re-read it within the refresh).
        await self.there.changes.stopService()
        await self.here.feed.watched.sync()
        self.assertEqual(self.seen_here[-1], frozenset())
