"""
The Alpaca sync and trading through the hub, against the fake Alpaca on
loopback and real PostgreSQL, with a frontend client over the wire.
"""

from decimal import Decimal

from twisted.internet.defer import gatherResults
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import TestCase

from tradehub.alpaca.sync import AlpacaSync
from tradehub.client import BlockingClient
from tradehub.client.errors import HubError
from tradehub.controllers import build_controllers
from tradehub.protocol.enums import ErrorCode, Role, SQLTable

from . import rows, wire
from .fake_alpaca import ACCOUNT, start_fake_alpaca
from .hub import start_hub, table_registry
from .support import blocking_query
from .test_alpaca_client import alpaca_for


class SyncTests(TestCase):
    timeout = 60

    async def setUp(self):
        self.fake = await start_fake_alpaca(self)
        self.hub = await start_hub(self, table_registry)
        self.clock = Clock()
        self.sync = AlpacaSync(
            alpaca_for(self.fake), build_controllers(self.hub.pool), self.clock, every=15, assets_every=86400
        )

    def query(self, statement):
        return deferToThread(blocking_query, self.hub.dsn, statement)

    async def test_sync_fills_the_alpaca_tables_and_a_second_sync_changes_nothing(self):
        self.fake.orders.append(
            self.fake.order_json(
                {
                    "client_order_id": "open-1",
                    "symbol": "AAPL",
                    "qty": "2",
                    "side": "buy",
                    "type": "limit",
                    "limit_price": "189.12",
                    "time_in_force": "gtc",
                }
            )
        )
        first = await self.sync.sync_trading()
        self.assertEqual(
            first, ["account: 1 new, 0 changed", "positions: 1 new, 0 changed", "orders: 1 new, 0 changed"]
        )
        self.assertEqual(await self.sync.sync_assets(), ["assets: 2 new, 0 changed"])
        self.assertEqual(
            await self.query("SELECT cash::text, multiplier::text FROM account"), [("-23140.200000001", "4.000000000")]
        )
        self.assertEqual(
            await self.query("SELECT symbol, avg_entry_price::text FROM position"), [("AAPL", "100.123456789")]
        )
        self.assertEqual(
            await self.query('SELECT client_order_id, status, limit_price::text FROM "order"'),
            [("open-1", "accepted", "189.120000000")],
        )
        self.assertEqual(await self.query("SELECT count(*) FROM asset"), [(2,)])
        self.assertEqual(await self.sync.sync_trading(), [])
        self.assertEqual(await self.sync.sync_assets(), [])
        self.assertEqual(await self.query('SELECT count(*) FROM "order"'), [(1,)])

    async def test_odd_bodies_are_skipped_one_by_one_and_counted_and_crypto_is_stored(self):
        aapl, crypto = self.fake.assets
        for flag in ("marginable", "shortable", "easy_to_borrow"):
            del crypto[flag]
        no_flag = dict(aapl, id="1f1b1b1b-0000-4000-8000-000000000001", symbol="NOFLAG")
        del no_flag["fractionable"]
        nameless = dict(aapl, id="1f1b1b1b-0000-4000-8000-000000000002")
        del nameless["symbol"]
        no_tick = dict(aapl, id="1f1b1b1b-0000-4000-8000-000000000003", symbol="ZERO", price_increment="0")
        self.fake.assets = [nameless, no_flag, no_tick, aapl, crypto]
        odd = self.fake.order_json(
            {
                "client_order_id": "odd",
                "symbol": "AAPL",
                "qty": "1",
                "side": "buy",
                "type": "market",
                "time_in_force": "day",
            }
        )
        del odd["side"]
        self.fake.orders.append(odd)
        self.fake.positions.append({"symbol": "MSFT", "side": "long"})
        with capturedLogs() as logs:
            self.assertEqual(await self.sync.sync_assets(), ["assets: 3 new, 0 changed", "assets: 2 skipped"])
            trading = await self.sync.sync_trading()
        self.assertIn("positions: 1 skipped", trading)
        self.assertIn("orders: 1 skipped", trading)
        self.assertEqual(
            await self.query(
                "SELECT symbol, class, fractionable, marginable, min_order_size::text, price_increment::text"
                " FROM asset ORDER BY symbol"
            ),
            [
                ("AAPL", "us_equity", True, True, "0.000000001", "0.010000000"),
                ("BTC/USD", "crypto", True, False, "0.000100000", "1.000000000"),
                ("NOFLAG", "us_equity", False, True, "0.000000001", "0.010000000"),
            ],
        )
        text = " ".join(formatEvent(e) for e in logs)
        self.assertIn("alpaca asset 1f1b1b1b-0000-4000-8000-000000000002 skipped: no symbol", text)
        self.assertIn("alpaca assets 1f1b1b1b-0000-4000-8000-000000000003 skipped:", text)
        self.assertIn("price_increment must be above 0", text)
        self.assertIn("alpaca position MSFT skipped: no qty", text)
        self.assertIn(f"alpaca order {odd['id']} skipped: no side", text)

    async def test_sync_follows_changes_and_closed_positions(self):
        self.fake.orders.append(
            self.fake.order_json(
                {
                    "client_order_id": "o-1",
                    "symbol": "AAPL",
                    "qty": "2",
                    "side": "buy",
                    "type": "market",
                    "time_in_force": "day",
                }
            )
        )
        await self.sync.sync_trading()
        self.fake.account["cash"] = "100.5"
        self.fake.orders[0].update(
            status="filled", filled_qty="2", filled_avg_price="189.5", filled_at="2026-11-24T15:00:00.000000001Z"
        )
        self.fake.positions = []
        changes = await self.sync.sync_trading()
        self.assertEqual(changes, ["account: 0 new, 1 changed", "positions: 1 closed", "orders: 0 new, 1 changed"])
        self.assertEqual(await self.query("SELECT cash::text FROM account"), [("100.500000000",)])
        self.assertEqual(await self.query("SELECT count(*) FROM position"), [(0,)])
        self.assertEqual(
            await self.query('SELECT status, filled_qty::text, filled_at_ns FROM "order"'),
            [("filled", "2.000000000", 1)],
        )

    async def test_failing_sync_is_recorded_and_the_next_one_recovers(self):
        self.fake.fail_next(500, times=4)
        await self.sync._run(self.sync.sync_trading)
        self.assertIn("HTTP 500", self.sync.last_error["sync_trading"][1])
        self.assertNotIn("sync_trading", self.sync.last_success)
        await self.sync._run(self.sync.sync_trading)
        self.assertIn("sync_trading", self.sync.last_success)
        self.assertEqual(await self.query("SELECT id::text FROM account"), [(ACCOUNT["id"],)])

    async def test_the_service_syncs_at_start_and_every_interval(self):
        self.sync.startService()
        await gatherResults(list(self.sync._running))
        self.assertEqual(self._calls("/v2/account"), 1)
        self.assertEqual(self._calls("/v2/assets"), 1)
        self.clock.advance(15)
        await gatherResults(list(self.sync._running))
        self.assertEqual((self._calls("/v2/account"), self._calls("/v2/assets")), (2, 1))
        await self.sync.stopService()
        self.clock.advance(86400)
        self.assertEqual(self._calls("/v2/account"), 2, "a stopped sync stays stopped")

    def _calls(self, path):
        return len([r for r in self.fake.received if r.path == path])


class TradingTests(TestCase):
    timeout = 60

    async def setUp(self):
        self.fake = await start_fake_alpaca(self)
        self.alpaca = alpaca_for(self.fake, timeout=0.5, retries=1)
        self.hub = await start_hub(self, table_registry, broker=self.alpaca)

    def frontend(self):
        return BlockingClient("127.0.0.1", self.hub.port, Role.FRONTEND, wire.FRONTEND_TOKEN)

    def stored(self, client_order_id):
        return deferToThread(
            blocking_query,
            self.hub.dsn,
            'SELECT status, id::text, status_message FROM "order" WHERE client_order_id = %s',
            client_order_id,
        )

    async def test_frontend_submits_and_cancels_an_order_through_the_hub(self):
        order = rows.order(client_order_id="trade-1", submit=True, status="new", qty=Decimal("3"))

        def submit_then_cancel():
            with self.frontend() as hub:
                [submitted] = hub.insert(SQLTable.ORDER, [order]).rows
                [canceled] = hub.update(SQLTable.ORDER, [dict(submitted, status="canceled")]).rows
                return submitted, canceled

        submitted, canceled = await deferToThread(submit_then_cancel)
        [at_alpaca] = self.fake.orders
        self.assertEqual((submitted["status"], submitted["id"]), ("accepted", at_alpaca["id"]))
        self.assertEqual(self.fake.received[0].body["client_order_id"], "trade-1")
        self.assertEqual(self.fake.received[0].body["qty"], "3")
        self.assertEqual((canceled["status"], at_alpaca["status"]), ("canceled", "canceled"))
        self.assertIn(("DELETE", f"/v2/orders/{at_alpaca['id']}"), [(r.method, r.path) for r in self.fake.received])
        self.assertEqual(await self.stored("trade-1"), [("canceled", at_alpaca["id"], None)])

    async def test_alpaca_rejection_answers_with_its_message_and_marks_the_row(self):
        def submit(symbol):
            with self.frontend() as hub:
                with self.assertRaises(HubError) as refused:
                    hub.insert(
                        SQLTable.ORDER, [rows.order(client_order_id=f"rej-{symbol}", symbol=symbol, submit=True)]
                    )
                return refused.exception

        invalid = await deferToThread(submit, "NOPE")
        poor = await deferToThread(submit, "POOR")
        self.assertEqual(invalid.code, ErrorCode.VALIDATION_FAILED)
        self.assertIn("asset NOPE not found", invalid.message)
        self.assertEqual(poor.code, ErrorCode.CONFLICT)
        self.assertIn("insufficient buying power", poor.message)
        self.assertEqual(await self.stored("rej-NOPE"), [("rejected", None, "asset NOPE not found")])

    async def test_a_retried_submission_never_makes_a_second_alpaca_order(self):
        order = rows.order(client_order_id="retry-1", submit=True)
        self.fake.act_then_stay_silent_next()
        self.fake.act_then_stay_silent_next()

        def first_try():
            with self.frontend() as hub:
                with self.assertRaises(HubError) as busy:
                    hub.insert(SQLTable.ORDER, [order])
                return busy.exception

        busy = await deferToThread(first_try)
        self.assertEqual(busy.code, ErrorCode.BUSY)
        self.assertEqual(await self.stored("retry-1"), [("pending_new", None, None)])

        def second_try():
            with self.frontend() as hub:
                return hub.insert(SQLTable.ORDER, [order]).rows[0]

        resumed = await deferToThread(second_try)
        self.assertEqual(len(self.fake.orders), 1, "one Alpaca order whatever the retries")
        self.assertEqual((resumed["status"], resumed["id"]), ("accepted", self.fake.orders[0]["id"]))
        posts = [r for r in self.fake.received if r.method == "POST"]
        self.assertEqual([p.body["client_order_id"] for p in posts], ["retry-1"] * len(posts))
        self.assertGreaterEqual(len(posts), 2)

    async def test_submitting_needs_alpaca_keys(self):
        plain = await start_hub(self, table_registry)

        def submit():
            with BlockingClient("127.0.0.1", plain.port, Role.FRONTEND, wire.FRONTEND_TOKEN) as hub:
                with self.assertRaises(HubError) as refused:
                    hub.insert(SQLTable.ORDER, [rows.order(submit=True)])
                return refused.exception

        refused = await deferToThread(submit)
        self.assertEqual(refused.code, ErrorCode.VALIDATION_FAILED)
        self.assertIn("APCA_API_KEY_ID", refused.message)
