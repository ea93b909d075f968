"""
The real daemon with APCA_* pointing at the fake Alpaca: it syncs account,
assets, orders and positions into PostgreSQL, and a frontend client submits
and cancels an order through it.
"""

import signal
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tradehub.client import BlockingClient
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
