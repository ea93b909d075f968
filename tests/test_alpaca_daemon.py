"""
The real daemon with APCA_* pointing at the fake Alpaca: it syncs account,
assets, orders and positions into PostgreSQL, and a frontend client submits
and cancels an order through it.
"""

import signal
import time
from decimal import Decimal

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tradehub.client import BlockingClient
from tradehub.client.asynchronous import connect
from tradehub.ops.readiness import FOLLOWING
from tradehub.protocol.enums import Role, SQLTable

from . import rows
from .daemon import TOKENS, Daemon
from .fake_alpaca import KEY_ID, SECRET, start_fake_alpaca
from .fake_alpaca import trade as stream_trade
from .support import blocking_query, fresh_database
from .test_daemon import _url
from .test_ops import ready_soon


def wait_until(check, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


async def until_subscribed(market, symbols, timeout=30):
    deadline = time.monotonic() + timeout
    while market.subscribed() != symbols:
        if time.monotonic() > deadline:
            raise AssertionError(f"never subscribed to {symbols}")
        await deferLater(reactor, 0.05, lambda: None)


class AlpacaDaemonTests(TestCase):
    timeout = 120

    async def test_daemon_syncs_from_alpaca_and_trades_through_it(self):
        fake = await start_fake_alpaca(self)
        fake.orders.append(
            fake.order_json(
                {
                    "client_order_id": "from-alpaca",
                    "symbol": "AAPL",
                    "qty": "1",
                    "side": "sell",
                    "type": "market",
                    "time_in_force": "day",
                }
            )
        )
        dsn = await fresh_database(self)
        env = {
            "DATABASE_URL": _url(dsn),
            "APCA_API_KEY_ID": KEY_ID,
            "APCA_API_SECRET_KEY": SECRET,
            "APCA_API_BASE_URL": fake.url,
            "APCA_API_DATA_STREAM_URL": fake.data_stream_url,
            "TRADEHUB_ALPACA_SYMBOLS": "AAPL",
            "APCA_API_DATA_URL": fake.url,
            "TRADEHUB_ALPACA_SYNC_SECONDS": "0.5",
        }
        daemon = Daemon(self.mktemp(), env=env).start()
        self.addCleanup(daemon.kill)
        await deferToThread(daemon.wait_for, f"alpaca {fake.url}")

        def synced():
            counts = blocking_query(
                dsn,
                "SELECT (SELECT count(*) FROM account), (SELECT count(*) FROM asset),"
                ' (SELECT count(*) FROM "order"), (SELECT count(*) FROM position)',
            )
            return counts[0] == (1, 2, 1, 1)

        await deferToThread(wait_until, synced)
        alpaca = (await ready_soon(f"http://127.0.0.1:{daemon.ops_port}"))["parts"]["alpaca"]
        self.assertTrue(alpaca["detail"].startswith("the last sync succeeded"), alpaca)

        def trade():
            with BlockingClient(
                "127.0.0.1", daemon.frontend_port, Role.FRONTEND, TOKENS["TRADEHUB_FRONTEND_TOKEN"]
            ) as hub:
                [submitted] = hub.insert(SQLTable.ORDER, [rows.order(client_order_id="via-hub", submit=True)]).rows
                [canceled] = hub.update(SQLTable.ORDER, [dict(submitted, status="canceled")]).rows
                return submitted, canceled

        submitted, canceled = await deferToThread(trade)
        self.assertEqual(submitted["status"], "accepted")
        self.assertEqual(canceled["status"], "canceled")
        self.assertEqual({o["client_order_id"] for o in fake.orders}, {"from-alpaca", "via-hub"})
        self.assertEqual([o["status"] for o in fake.orders if o["client_order_id"] == "via-hub"], ["canceled"])

        # A fill reaches the hub through the trading stream: the sync never reads executions.
        parts = (await ready_soon(f"http://127.0.0.1:{daemon.ops_port}"))["parts"]
        self.assertTrue(parts["alpaca_trade_stream"]["ready"], parts)
        [order] = [o for o in fake.orders if o["client_order_id"] == "from-alpaca"]
        fill = fake.fill(order, "1", "188.5")

        def filled():
            return blocking_query(
                dsn,
                'SELECT t.id::text, o.status FROM trade t JOIN "order" o USING (client_order_id)'
                " WHERE client_order_id = 'from-alpaca'",
            ) == [(fill["execution_id"], "filled")]

        await deferToThread(wait_until, filled)

        # Market data: a trade on the stock stream lands as a MARKET_TICK.
        await until_subscribed(fake.stocks, {"AAPL"})
        fake.stocks.send(stream_trade("AAPL", "2026-11-24T14:30:00.123456789Z", "188.25", i=7))

        def ticked():
            return blocking_query(dsn, "SELECT price::text, seq FROM market_tick") == [("188.250000000", 7)]

        await deferToThread(wait_until, ticked)
        daemon.signal(signal.SIGTERM)
        self.assertEqual(await deferToThread(daemon.wait), 0)
        self.assertNotIn(SECRET, daemon.output() + daemon.errors())


class TwoDaemonsTests(TestCase):
    """Two hubs on one database and one Alpaca key: one holds Alpaca's streams, the survivor takes over."""

    timeout = 180

    async def test_one_hub_holds_the_streams_for_both_and_the_other_takes_over_when_it_dies(self):
        fake = await start_fake_alpaca(self)
        fake.orders.append(
            fake.order_json(
                {"client_order_id": "held", "symbol": "AAPL", "qty": "2", "side": "buy", "type": "market"}
                | {"time_in_force": "day"}
            )
        )
        dsn = await fresh_database(self)
        env = {
            "DATABASE_URL": _url(dsn),
            "APCA_API_KEY_ID": KEY_ID,
            "APCA_API_SECRET_KEY": SECRET,
            "APCA_API_BASE_URL": fake.url,
            "APCA_API_DATA_URL": fake.url,
            "APCA_API_DATA_STREAM_URL": fake.data_stream_url,
            "TRADEHUB_ALPACA_SYMBOLS": "AAPL",
        }
        first = Daemon(self.mktemp(), env=env).start()
        self.addCleanup(first.kill)
        await deferToThread(first.wait_for, "ready:")
        second = Daemon(self.mktemp(), env=env).start()
        self.addCleanup(second.kill)
        await deferToThread(second.wait_for, "ready:")

        # The first to start leads; the other is ready, and says who holds the streams.
        parts = (await ready_soon(f"http://127.0.0.1:{second.ops_port}"))["parts"]
        self.assertEqual(parts["alpaca"]["detail"], FOLLOWING)
        self.assertEqual(parts["alpaca_trade_stream"], {"ready": True, "detail": FOLLOWING})
        await until_subscribed(fake.stocks, {"AAPL"})
        self.assertEqual(len(fake.trade_stream.listening()), 1)

        # A subscriber of the follower is subscribed upstream by the leader.
        ml = await connect(reactor, f"tcp:127.0.0.1:{second.ml_port}", Role.ML, TOKENS["TRADEHUB_ML_TOKEN"])
        self.addCleanup(lambda: ml.transport.connected and ml.transport.loseConnection())
        ticks = await ml.subscribe(SQLTable.MARKET_TICK, symbols=["MSFT"])
        await until_subscribed(fake.stocks, {"AAPL", "MSFT"})

        first.signal(signal.SIGKILL)
        await deferToThread(first.wait)

        async def streaming():
            parts = (await ready_soon(f"http://127.0.0.1:{second.ops_port}"))["parts"]
            return parts["alpaca_trade_stream"]["detail"].startswith("streaming")

        deadline = time.monotonic() + 60
        while not await streaming():
            self.assertLess(time.monotonic(), deadline, "the survivor never took the trading stream")
            await deferLater(reactor, 0.1, lambda: None)
        await until_subscribed(fake.stocks, {"AAPL", "MSFT"})
        self.assertEqual((len(fake.trade_stream.listening()), fake.stocks.over_limit), (1, 0))

        # What the streams carry now reaches the database through the survivor.
        [order] = fake.orders
        fill = fake.fill(order, "2", "188.5")
        fake.stocks.send(stream_trade("MSFT", "2026-11-25T14:30:00.5Z", "411.25", i=3))
        tick = (await ticks.__anext__()).row
        self.assertEqual((tick["symbol"], tick["price"]), ("MSFT", Decimal("411.25")))

        def filled():
            return blocking_query(
                dsn, 'SELECT t.id::text, o.status FROM trade t JOIN "order" o USING (client_order_id)'
            ) == [(fill["execution_id"], "filled")]

        await deferToThread(wait_until, filled)
        second.signal(signal.SIGTERM)
        self.assertEqual(await deferToThread(second.wait), 0)
