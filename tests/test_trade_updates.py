"""
Alpaca's trading stream in the hub (tradehub/alpaca/trade_updates.py and
ledger.py): against the fake Alpaca's REST API and trading stream on
loopback and real PostgreSQL, every event kind moves the stored order; a
fill stores its trade, the order's fill and the position together, once; a
fill made while the stream was down is found by the reconciliation; a
silent stream is left and reconnected; a frontend's ORDER subscription
sees the fill. On a hand-driven stream: the order of work, refused keys,
and what a failure to store does.
"""

import inspect
import time
from decimal import Decimal

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tradehub.alpaca.ledger import Recorded
from tradehub.alpaca.stream import Stream, StreamState
from tradehub.alpaca.sync import AlpacaSync
from tradehub.alpaca.trade_updates import LISTEN, REFUSED_KEYS_WAIT, TradeUpdates, stream_url
from tradehub.client.asynchronous import connect
from tradehub.controllers import build_controllers
from tradehub.errors import Invalid
from tradehub.protocol.enums import Role, SQLCommand, SQLTable
from tradehub.schema.timestamp import Timestamp

from . import rows, wire
from .fake_alpaca import KEY_ID, SECRET, advance, start_fake_alpaca
from .hub import start_hub, table_registry
from .support import blocking_query
from .test_alpaca_client import alpaca_for

ORDER = {"symbol": "AAPL", "qty": "10", "side": "buy", "type": "market", "time_in_force": "day"}


async def until(check, timeout=20.0):
    """Poll C{check()} (which may return an awaitable) until it is true."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await deferLater(reactor, 0.02, lambda: None)


class TradeStreamTests(TestCase):
    timeout = 60

    async def setUp(self):
        self.fake = await start_fake_alpaca(self)
        broker = alpaca_for(self.fake)
        self.hub = await start_hub(self, table_registry, push=True, broker=broker)
        self.sync = AlpacaSync(
            alpaca_for(self.fake), build_controllers(self.hub.pool), reactor, every=15, assets_every=86400
        )
        self.updates = TradeUpdates(self.sync, KEY_ID, SECRET, self.stream_for)
        self.updates.startService()
        self.addCleanup(self.updates.stopService)
        await until(lambda: self.updates.trusted)

    def stream_for(self, handler):
        return Stream(
            "trading",
            stream_url(self.fake.url),
            handler,
            reactor=reactor,
            ping_interval=0.2,
            ping_timeout=0.3,
            backoff=(0.05, 0.2),
        )

    def query(self, statement, *params):
        return deferToThread(blocking_query, self.hub.dsn, statement, *params)

    def order_at_alpaca(self, client_order_id, **changes):
        order = self.fake.order_json(dict(ORDER, client_order_id=client_order_id, **changes), status="new")
        self.fake.orders.append(order)
        return order

    def auths(self):
        return sum(1 for m in self.fake.trade_stream.heard if m.get("action") == "auth")

    async def stored(self, client_order_id):
        found = await self.query(
            'SELECT status, filled_qty::text, filled_avg_price::text FROM "order" WHERE client_order_id = %s',
            client_order_id,
        )
        return found[0] if found else None

    async def test_it_authenticates_listens_and_reconciles_before_it_is_trusted(self):
        self.assertEqual(
            self.fake.trade_stream.heard[:2], [{"action": "auth", "key": KEY_ID, "secret": SECRET}, LISTEN]
        )
        paths = [r.path for r in self.fake.received]
        self.assertIn("/v2/account", paths)
        self.assertIn("/v2/orders", paths)
        self.assertEqual(self.updates.stream.state, StreamState.STREAMING)
        self.assertIn("streaming", self.updates.describe())

    async def test_each_event_kind_moves_the_stored_order(self):
        kinds = [
            ("pending_new", {}),
            ("new", {}),
            ("pending_cancel", {}),
            ("order_cancel_rejected", {"status": "new"}),
            ("pending_replace", {}),
            ("order_replace_rejected", {"status": "new"}),
            ("calculated", {}),
            ("stopped", {}),
            ("suspended", {}),
            ("done_for_day", {}),
            ("canceled", {"canceled_at": "2026-11-24T15:00:00.000000001Z"}),
            ("expired", {"expired_at": "2026-11-24T15:00:00.000000002Z"}),
            ("rejected", {"failed_at": "2026-11-24T15:00:00.000000003Z"}),
            ("replaced", {"replaced_by": "5cc5b0b5-2e4f-4a3c-a4c5-6a5ba8a7e5d1"}),
        ]
        for event, changes in kinds:
            order = self.order_at_alpaca(f"kind-{event}")
            self.fake.move(order, event, **changes)
        for event, changes in kinds:
            status = changes.get("status", event)
            await until(lambda: self.stored(f"kind-{event}"))  # noqa: B023  # awaited here, in the loop
            self.assertEqual((await self.stored(f"kind-{event}"))[0], status, event)
        [(canceled_at, replaced_by)] = await self.query(
            'SELECT (SELECT canceled_at FROM "order" WHERE client_order_id = %s) IS NOT NULL,'
            ' (SELECT replaced_by::text FROM "order" WHERE client_order_id = %s)',
            "kind-canceled",
            "kind-replaced",
        )
        self.assertEqual((canceled_at, replaced_by), (True, "5cc5b0b5-2e4f-4a3c-a4c5-6a5ba8a7e5d1"))

    async def test_a_fill_stores_its_trade_the_orders_fill_and_the_position_together(self):
        order = self.order_at_alpaca("filled-1")
        first = self.fake.fill(order, "4", "189.10")
        second = self.fake.fill(order, "6", "189.20")
        await until(lambda: self._trades("filled-1", 2))
        self.assertEqual(await self.stored("filled-1"), ("filled", "10.000000000", "189.160000000"))
        self.assertEqual(
            await self.query("SELECT id::text, qty::text, price::text FROM trade ORDER BY executed_at"),
            [
                (first["execution_id"], "4.000000000", "189.100000000"),
                (second["execution_id"], "6.000000000", "189.200000000"),
            ],
        )
        # The fake's position held 5 AAPL at 100.123456789; 10 more at 189.10 and 189.20.
        self.assertEqual(
            await self.query("SELECT qty::text, side FROM position WHERE symbol = 'AAPL'"), [("15.000000000", "long")]
        )

    async def _trades(self, client_order_id, count):
        [(found,)] = await self.query("SELECT count(*) FROM trade WHERE client_order_id = %s", client_order_id)
        return found == count

    async def test_a_repeated_event_stores_nothing_twice(self):
        order = self.order_at_alpaca("twice")
        fill = self.fake.fill(order, "10", "189.10")
        await until(lambda: self._trades("twice", 1))
        [(changes,)] = await self.query("SELECT count(*) FROM change_log")
        with capturedLogs() as logs:
            self.fake.trade_stream.repeat(fill)
            self.fake.trade_stream.repeat(fill)
            self.fake.move(self.order_at_alpaca("after"), "new")
            await until(lambda: self.stored("after"))
        self.assertEqual([formatEvent(e) for e in logs if e["log_level"] >= LogLevel.warn], [])
        self.assertEqual(await self.stored("twice"), ("filled", "10.000000000", "189.100000000"))
        self.assertTrue(await self._trades("twice", 1))
        # Only the marker's order changed since: the repeats wrote nothing.
        [(later,)] = await self.query("SELECT count(*) FROM change_log")
        self.assertEqual(later - changes, 1)

    async def test_a_position_the_sync_saw_after_a_fill_is_not_moved_back_by_it(self):
        order = self.order_at_alpaca("old-fill")
        an_hour_ago = Timestamp(Timestamp.now().ns - 3600 * 10**9).to_rfc3339()
        self.fake.trade_stream.publish(
            "fill",
            dict(order, status="filled", filled_qty="10", filled_avg_price="189"),
            execution_id="0e6c1b58-1b4f-4b8e-9d3f-0c1d2e3f4a5b",
            qty="10",
            price="189",
            position_qty="999",
            timestamp=an_hour_ago,
        )
        await until(lambda: self._trades("old-fill", 1))
        self.assertEqual(await self.query("SELECT qty::text FROM position WHERE symbol = 'AAPL'"), [("5.000000000",)])

    async def test_a_refused_order_report_still_stores_its_execution(self):
        order = self.order_at_alpaca("odd-report")
        self.fake.move(order, "new")
        await until(lambda: self.stored("odd-report"))
        # Alpaca's report breaks a rule (neither qty nor notional); the execution it carries is a fact.
        fill = self.fake.trade_stream.publish(
            "fill",
            dict(order, status="filled", qty=None, filled_qty="10", filled_avg_price="189"),
            execution_id="5b1c7f0e-2d3a-4e5f-8a9b-0c1d2e3f4a5b",
            qty="10",
            price="189",
            timestamp=Timestamp.now().to_rfc3339(),
        )
        await until(lambda: self._trades("odd-report", 1))
        self.assertEqual((await self.stored("odd-report"))[0], "new")
        [(trade_id,)] = await self.query("SELECT id::text FROM trade WHERE client_order_id = 'odd-report'")
        self.assertEqual(trade_id, fill["execution_id"])

    async def test_a_late_report_does_not_move_an_order_back(self):
        order = self.order_at_alpaca("late")
        self.fake.fill(order, "10", "189.10")
        await until(lambda: self._trades("late", 1))
        stale = dict(order, status="new", filled_qty="0", filled_avg_price=None)
        self.fake.trade_stream.publish("new", stale, timestamp=stale["created_at"])
        marker = self.order_at_alpaca("marker")
        self.fake.move(marker, "new")
        await until(lambda: self.stored("marker"))
        self.assertEqual(await self.stored("late"), ("filled", "10.000000000", "189.100000000"))

    async def test_a_fill_while_the_stream_is_down_is_found_by_the_reconciliation(self):
        order = self.order_at_alpaca("while-down")
        heard = self.fake.fill(order, "4", "190.5")
        await until(lambda: self._trades("while-down", 1))
        auths = self.auths()
        self.fake.trade_stream.drop()
        missed = self.fake.fill(order, "6", "191")
        # The reconciliation fetches both executions (it starts a little before the last event
        # stored) and stores the one it missed; the one it had already is not stored again.
        # (Trusted again on a new connection: the drop may be over before a poll sees it.)
        await until(lambda: self.auths() > auths and self.updates.trusted)
        self.assertEqual(await self.stored("while-down"), ("filled", "10.000000000", "190.800000000"))
        self.assertEqual(
            await self.query("SELECT id::text FROM trade WHERE client_order_id = 'while-down' ORDER BY executed_at"),
            [(heard["execution_id"],), (missed["execution_id"],)],
        )
        [(qty,)] = await self.query("SELECT qty::text FROM position WHERE symbol = 'AAPL'")
        self.assertEqual(qty, "15.000000000", "the REST sync's position")
        fills = [r for r in self.fake.received if r.path == "/v2/account/activities/FILL"]
        self.assertTrue(fills, "the reconciliation asked for the executions since the last event")
        # The stream's own report of that fill, had it come late, would store nothing more.
        self.fake.trade_stream.repeat(missed)
        self.fake.move(self.order_at_alpaca("marker"), "new")
        await until(lambda: self.stored("marker"))
        self.assertTrue(await self._trades("while-down", 2))

    async def test_a_silent_stream_is_noticed_and_connected_again(self):
        auths = len(self.fake.trade_stream.heard)
        self.fake.trade_stream.silent = True
        await until(lambda: not self.updates.trusted)
        self.assertIn("fills reach the hub through the REST sync", self.updates.describe())
        self.fake.trade_stream.silent = False
        await until(lambda: self.updates.trusted)
        self.assertGreater(len(self.fake.trade_stream.heard), auths)
        order = self.order_at_alpaca("after-silence")
        self.fake.move(order, "new")
        await until(lambda: self.stored("after-silence"))

    async def test_a_frontend_subscribed_to_orders_sees_the_fill(self):
        frontend = await connect(reactor, f"tcp:127.0.0.1:{self.hub.port}", Role.FRONTEND, wire.FRONTEND_TOKEN)
        self.addCleanup(frontend.transport.loseConnection)
        subscription = await frontend.subscribe(SQLTable.ORDER)
        trades = await frontend.subscribe(SQLTable.TRADE)
        order = self.order_at_alpaca("seen")
        self.fake.move(order, "new")
        fill = self.fake.fill(order, "10", "189.10")
        statuses = []
        async for change in subscription:
            statuses.append((change.kind, change.row["status"]))
            if change.row["status"] == "filled":
                break
        self.assertEqual(statuses, [(SQLCommand.INSERT, "new"), (SQLCommand.UPDATE, "filled")])
        self.assertEqual(change.row["filled_qty"], Decimal(10))
        trade = await trades.__anext__()
        self.assertEqual(trade.row["id"], fill["execution_id"])

    async def test_after_a_restart_executions_missed_meanwhile_are_found(self):
        order = self.order_at_alpaca("restart")
        first = self.fake.fill(order, "2", "190")
        await until(lambda: self._trades("restart", 1))
        await self.updates.stopService()
        # Minutes apart: more than the reconciliation's overlap.
        advance(60)
        missed = [self.fake.fill(order, "3", "191")]
        advance(60)
        missed.append(self.fake.fill(order, "5", "192"))
        # The periodic sync moves the order on while no stream listens; it never reads executions.
        await self.sync.sync_trading()
        self.assertEqual((await self.stored("restart"))[:2], ("filled", "10.000000000"))
        self.assertTrue(await self._trades("restart", 1))
        restarted = TradeUpdates(
            AlpacaSync(alpaca_for(self.fake), build_controllers(self.hub.pool), reactor, every=15, assets_every=86400),
            KEY_ID,
            SECRET,
            self.stream_for,
        )
        restarted.startService()
        self.addCleanup(restarted.stopService)
        await until(lambda: restarted.trusted)
        self.assertEqual(
            await self.query("SELECT id::text FROM trade WHERE client_order_id = 'restart' ORDER BY executed_at"),
            [(e["execution_id"],) for e in [first, *missed]],
        )

    async def test_an_order_the_rules_refuse_does_not_keep_the_others_out_of_a_sync(self):
        bad = self.order_at_alpaca("no-quantity")
        bad["qty"] = None
        self.order_at_alpaca("fine")
        with capturedLogs() as logs:
            changes = await self.sync.sync_trading()
        self.assertIn("orders: 1 new, 0 changed", changes)
        self.assertIsNotNone(await self.stored("fine"))
        self.assertIsNone(await self.stored("no-quantity"))
        self.assertIn("skipped order no-quantity", " ".join(formatEvent(e) for e in logs))

    # The hub's own submissions, whose events the stream may bring before Alpaca's answer to the POST.

    async def test_a_fill_reported_before_alpacas_answer_keeps_the_hubs_order_and_legs(self):
        self.fake.answer_delay = 0.3
        self.fake.fill_on_submit = "189.5"
        parent = rows.order(
            client_order_id="bracket-1", submit=True, order_class="bracket", type="market", limit_price=None
        )
        legs = [
            rows.order(
                client_order_id="bracket-1-tp",
                parent_client_order_id="bracket-1",
                submit=True,
                order_class="bracket",
                side="sell",
                type="limit",
                limit_price=Decimal("200"),
            ),
            rows.order(
                client_order_id="bracket-1-sl",
                parent_client_order_id="bracket-1",
                submit=True,
                order_class="bracket",
                side="sell",
                type="stop",
                limit_price=None,
                stop_price=Decimal("180"),
            ),
        ]
        frontend = await connect(reactor, f"tcp:127.0.0.1:{self.hub.port}", Role.FRONTEND, wire.FRONTEND_TOKEN)
        self.addCleanup(frontend.transport.loseConnection)
        # A leg first: the answer follows the request's order all the same.
        answer = await frontend.insert(SQLTable.ORDER, [legs[0], parent, legs[1]])
        in_order = ["bracket-1-tp", "bracket-1", "bracket-1-sl"]
        self.assertEqual([r["client_order_id"] for r in answer.rows], in_order)
        self.assertEqual([w["client_order_id"] for w in answer.written], in_order)
        self.assertEqual(answer.rows[1]["status"], "filled", "the answer is the order as stored, without echo")
        stored = await self.query(
            'SELECT client_order_id, submit, id IS NOT NULL, parent_client_order_id, status FROM "order"'
            " ORDER BY client_order_id"
        )
        self.assertEqual(
            stored,
            [
                ("bracket-1", True, True, None, "filled"),
                ("bracket-1-sl", True, True, "bracket-1", "held"),
                ("bracket-1-tp", True, True, "bracket-1", "held"),
            ],
        )
        [(trade_order,)] = await self.query("SELECT client_order_id FROM trade")
        self.assertEqual(trade_order, "bracket-1")

    async def test_a_refused_cancel_moves_the_order_back(self):
        order = self.order_at_alpaca("cancel-refused")
        self.fake.move(order, "pending_cancel")
        await until(lambda: self._status("cancel-refused", "pending_cancel"))
        self.fake.move(order, "order_cancel_rejected", status="new")
        await until(lambda: self._status("cancel-refused", "new"))

    async def _status(self, client_order_id, status):
        found = await self.stored(client_order_id)
        return found is not None and found[0] == status


class Hand:
    """A stream driven by hand: what the handler sent and asked."""

    def __init__(self):
        self.sent = []
        self.dropped = []
        self.held_off = []
        self.streamed = 0
        self.state = StreamState.OPEN
        self.attempts = 1

    def send(self, message):
        self.sent.append(message)

    def drop(self, reason):
        self.dropped.append(reason)

    def hold_off(self, seconds):
        self.held_off.append(seconds)

    def streaming(self):
        self.streamed += 1

    def startService(self):
        pass


class Ledger:
    """Records reports; each may be told to block or fail."""

    def __init__(self):
        self.reports = []
        self.pending = {}
        self.failures = {}
        self.pool = None

    async def record(self, orders, executions=(), positions=()):
        client_order_id = orders[0]["client_order_id"]
        if client_order_id in self.pending:
            await self.pending.pop(client_order_id)
        if client_order_id in self.failures:
            raise self.failures.pop(client_order_id)
        self.reports.append((client_order_id, len(executions), len(positions)))
        return Recorded()


class Sync:
    def __init__(self, ledger):
        self.ledger = ledger
        self.account_id = "904837e3-3b76-47ec-b432-046db621571b"
        self.reconciled = []
        self.blocked = None

    async def reconcile(self, since):
        self.reconciled.append(since)
        if self.blocked is not None:
            await self.blocked
        return since, []


def event(client_order_id, kind="new", **fields):
    order = {
        "id": "61e69015-8549-4bfd-b9c3-01e75843f47d",
        "client_order_id": client_order_id,
        "symbol": "AAPL",
        "side": "buy",
        "type": "market",
        "time_in_force": "day",
        "qty": "10",
        "status": kind,
        "created_at": "2026-11-24T14:30:00.000000001Z",
        "updated_at": "2026-11-24T14:30:00.000000002Z",
    }
    return {"stream": "trade_updates", "data": {"event": kind, "order": order, **fields}}


class HandDrivenTests(SynchronousTestCase):
    def setUp(self):
        self.ledger = Ledger()
        self.sync = Sync(self.ledger)
        self.hand = Hand()
        self.updates = TradeUpdates(self.sync, "key", "secret", lambda handler: self.hand)
        self.updates.startService()

    def listening(self):
        self.updates.opened(self.hand)
        self.updates.received(self.hand, {"stream": "authorization", "data": {"status": "authorized"}})
        self.updates.received(self.hand, {"stream": "listening", "data": {"streams": ["trade_updates"]}})

    def test_it_authenticates_then_listens(self):
        self.updates.opened(self.hand)
        self.assertEqual(self.hand.sent, [{"action": "auth", "key": "key", "secret": "secret"}])
        self.updates.received(self.hand, {"stream": "authorization", "data": {"status": "authorized"}})
        self.assertEqual(self.hand.sent[-1], LISTEN)

    def test_refused_keys_are_not_tried_again_at_once(self):
        self.updates.opened(self.hand)
        with capturedLogs() as logs:
            self.updates.received(
                self.hand,
                {"stream": "authorization", "data": {"status": "unauthorized", "message": "access key verification"}},
            )
        self.assertEqual(self.hand.held_off, [REFUSED_KEYS_WAIT])
        self.assertEqual(self.hand.dropped, ["unauthorized"])
        errors = [e for e in logs if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertNotIn("secret", str(errors[0]))

    def test_events_wait_for_the_reconciliation_then_are_stored_in_order(self):
        self.sync.blocked = Deferred()
        self.listening()
        self.assertEqual(self.sync.reconciled, [None])
        for name in ("a", "b", "c"):
            self.updates.received(self.hand, event(name))
        self.assertEqual(self.ledger.reports, [])
        self.assertFalse(self.updates.trusted)
        self.sync.blocked.callback(None)
        self.assertEqual([r[0] for r in self.ledger.reports], ["a", "b", "c"])
        self.assertTrue(self.updates.trusted)
        self.assertEqual(self.hand.streamed, 1)

    def test_a_fill_reports_its_execution_and_position(self):
        self.listening()
        fill = event(
            "f",
            "fill",
            execution_id="8efc7b9a-8b2b-4000-9955-d36e7db0df74",
            qty="10",
            price="189.1",
            position_qty="15",
            timestamp="2026-11-24T14:30:01.000000001Z",
        )
        self.updates.received(self.hand, fill)
        self.assertEqual(self.ledger.reports, [("f", 1, 1)])
        self.assertEqual(self.updates.last_event, Timestamp.from_rfc3339("2026-11-24T14:30:01.000000001Z"))

    def test_an_event_the_rules_refuse_is_left_and_the_rest_go_on(self):
        self.listening()
        self.ledger.failures["bad"] = Invalid("row 0: qty must be above 0")
        with capturedLogs() as logs:
            self.updates.received(self.hand, event("bad"))
        self.updates.received(self.hand, event("good"))
        self.assertEqual([r[0] for r in self.ledger.reports], ["good"])
        self.assertEqual(self.hand.dropped, [])
        self.assertIn("left a new event of order 61e69015", " ".join(formatEvent(e) for e in logs))

    def test_a_failure_to_store_drops_the_stream_and_the_next_connection_reconciles_from_the_last_event(self):
        self.listening()
        self.updates.received(self.hand, event("stored"))
        blocked = Deferred()
        self.ledger.pending["lost"] = blocked
        self.ledger.failures["lost"] = ConnectionError("the database is gone")
        self.updates.received(self.hand, event("lost"))
        self.updates.received(self.hand, event("after-it"))
        blocked.callback(None)
        self.assertEqual(self.hand.dropped, ["storing a new event failed"])
        self.assertEqual([r[0] for r in self.ledger.reports], ["stored"])
        self.assertFalse(self.updates.trusted)
        self.updates.closed(self.hand)
        self.listening()
        last = Timestamp.from_rfc3339("2026-11-24T14:30:00.000000002Z")
        self.assertEqual(self.sync.reconciled, [None, last])
        self.assertTrue(self.updates.trusted)

    def test_a_reconciliation_for_a_connection_that_is_gone_is_not_trusted(self):
        self.sync.blocked = Deferred()
        self.listening()
        self.updates.closed(self.hand)
        self.sync.blocked.callback(None)
        self.assertFalse(self.updates.trusted)
        self.assertEqual(self.hand.streamed, 0)

    def test_stopping_waits_for_the_event_being_stored(self):
        self.listening()
        blocked = Deferred()
        self.ledger.pending["slow"] = blocked
        self.updates.received(self.hand, event("slow"))
        self.hand.stopService = lambda: succeed(None)
        stopped = self.updates.stopService()
        self.assertNoResult(stopped)
        blocked.callback(None)
        self.successResultOf(stopped)
        self.assertEqual([r[0] for r in self.ledger.reports], ["slow"])


class StreamUrlTests(SynchronousTestCase):
    def test_the_trading_stream_is_on_the_trading_apis_host(self):
        self.assertEqual(stream_url("https://paper-api.alpaca.markets"), "wss://paper-api.alpaca.markets/stream")
        self.assertEqual(stream_url("http://127.0.0.1:8123/"), "ws://127.0.0.1:8123/stream")
