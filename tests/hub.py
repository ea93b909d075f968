"""A hub listening on a real loopback port in the test process, on a real database."""

import attrs
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString

from tradehub.changes.feed import build_feed
from tradehub.controllers import build_controllers
from tradehub.errors import Invalid
from tradehub.ops.metrics import Metrics
from tradehub.protocol.enums import SQLCommand, SQLTable
from tradehub.protocol.wire import Field, Layout, list_of, string, u32
from tradehub.server.hub import HubFactory
from tradehub.server.routes import Registry, Route
from tradehub.server.routes import build_registry as build_routes
from tradehub.server.subscribing import Subscriptions
from tradehub.service import ChangeFeedService

from . import wire
from .support import fresh_database, make_pool


@attrs.frozen
class LiveHub:
    port: int
    factory: object
    pool: object
    dsn: str
    listener: object
    feed: object = None
    changes: object = None
    controllers: object = None


def table_registry(pool, broker=None):
    """The daemon's routes: every table's controller on this pool."""
    return build_routes(build_controllers(pool, broker))


async def start_hub(test, build_registry, dsn=None, push=False, sweep=1.0, retention=86400.0, broker=None, **settings):
    """
    Listen on 127.0.0.1:0 with C{build_registry(pool)}'s routes, on a fresh
    database or C{dsn}'s; with C{push}, subscriptions too, over the change
    feed of every table. L{table_registry}: the daemon's controllers (with
    C{broker}), the same ones the feed keeps fresh, as the daemon wires them.
    Clean-up stops listening, drains the sessions, stops the feed, then
    closes the pool.
    """
    dsn = dsn or await fresh_database(test)
    pool = make_pool(dsn, size_min=2, size_max=8)
    await pool.start()
    test.addCleanup(pool.close)
    feed = changes = subscriptions = None
    controllers = build_controllers(pool, broker)
    if push:
        feed, listener = build_feed(
            pool, controllers, dsn, reactor, sweep=sweep, retention=retention, connect_timeout=5
        )
        changes = ChangeFeedService(feed, listener, pool)
        await changes.startService()
        test.addCleanup(lambda: changes.running and changes.stopService())
        subscriptions = Subscriptions(feed)
    options = dict(handshake_timeout=5, heartbeat_ms=5000, max_frame=1 << 20, max_in_flight=256)
    options.update(settings)
    registry = build_routes(controllers) if build_registry is table_registry else build_registry(pool)
    factory = HubFactory(registry, wire.TOKENS, reactor, metrics=Metrics(), subscriptions=subscriptions, **options)
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
    test.addCleanup(factory.drain, 2)
    test.addCleanup(port.stopListening)
    return LiveHub(port.getHost().port, factory, pool, dsn, port, feed, changes, controllers)


# A stand-in table for protocol tests: an atomic multi-row insert whose rows
# the database itself may refuse, so a partial write would be visible.
NOTES_TABLE = (
    "CREATE TABLE fuzz_notes (batch text, idx int, size int, note text NOT NULL CHECK (note <> ''),"
    " PRIMARY KEY (batch, idx))"
)

BATCH = Layout("fuzz batch", [Field("batch", string), Field("notes", list_of(string))])
COUNT = Layout("fuzz count", [Field("rows", u32)])


def notes_registry(pool):
    """An atomic multi-row insert whose rows the database may refuse one by one."""

    def refuse_nul(value):
        """Like every text the hub stores, a NUL is refused before it reaches the driver."""
        if any("\x00" in text for text in (value["batch"], *value["notes"])):
            raise Invalid("batch and notes must not contain NUL characters")

    async def insert(value):
        refuse_nul(value)

        async def write(cursor):
            for index, note in enumerate(value["notes"]):
                await cursor.execute(
                    "INSERT INTO fuzz_notes (batch, idx, size, note) VALUES (%s, %s, %s, %s)",
                    (value["batch"], index, len(value["notes"]), note),
                )

        await pool.transaction(write)
        return COUNT.encode({"rows": len(value["notes"])})

    async def count(value):
        refuse_nul(value)
        rows = await pool.query("SELECT count(*) FROM fuzz_notes WHERE batch = %s", (value["batch"],))
        return COUNT.encode({"rows": rows[0][0]})

    return Registry(
        [
            Route(SQLCommand.INSERT, SQLTable.MARKET_TICK, BATCH, insert),
            Route(SQLCommand.SELECT, SQLTable.MARKET_TICK, BATCH, count),
        ]
    )
