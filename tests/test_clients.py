"""The Python clients against a live hub over loopback, and their protocol logic with a fake clock."""

import time
from decimal import Decimal

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, gatherResults
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tradehub.client import BlockingClient
from tradehub.client.asynchronous import HubClientProtocol, HubClientService, connect
from tradehub.client.errors import NotFound, ShuttingDown, ValidationFailed
from tradehub.ops.metrics import Metrics
from tradehub.protocol.enums import MessageType, Role, ShutdownReason, SQLCommand, SQLTable
from tradehub.protocol.messages import HELLO_ACK, SHUTDOWN, encode_frame
from tradehub.server.hub import HubFactory
from tradehub.server.routes import Registry, Route

from . import rows, wire
from .hub import BATCH, start_hub, table_registry
from .test_tables import CASES

# Rows other rows of the test refer to (positions, trades, predictions), or that are executions.
KEPT = {SQLTable.ACCOUNT, SQLTable.ORDER, SQLTable.TRADE, SQLTable.ML_MODEL}


class TwistedClientTests(TestCase):
    timeout = 120

    async def setUp(self):
        self.hub = await start_hub(self, table_registry, max_frame=16384)

    async def client(self, role=Role.FRONTEND):
        token = wire.FRONTEND_TOKEN if role == Role.FRONTEND else wire.ML_TOKEN
        protocol = await connect(reactor, f"tcp:127.0.0.1:{self.hub.port}", role, token)
        self.addCleanup(lambda: protocol.transport.loseConnection() if protocol.transport.connected else None)
        return protocol

    async def test_a_unix_socket_listener_serves_a_session(self):
        """The listeners take any endpoint string: the same session works over a unix socket."""
        path = self.mktemp() + ".sock"
        port = await serverFromString(reactor, f"unix:{path}").listen(self.hub.factory)
        self.addCleanup(port.stopListening)
        hub = await connect(reactor, f"unix:{path}", Role.FRONTEND, wire.FRONTEND_TOKEN)
        answer = await hub.insert(SQLTable.ORDER, [rows.order(client_order_id="over-unix")])
        self.assertEqual((answer.rows, answer.written), ([], [{"client_order_id": "over-unix"}]))
        order = rows.order(client_order_id="echoed")
        self.assertEqual((await hub.insert(SQLTable.ORDER, [order], echo=True)).rows, [order])
        self.assertEqual(await hub.shutdown(), 0)

    async def test_every_table_round_trips(self):
        clients = {Role.FRONTEND: await self.client(Role.FRONTEND), Role.ML: await self.client(Role.ML)}
        await clients[Role.FRONTEND].insert(SQLTable.ACCOUNT, [rows.account()])
        order = rows.order(qty=Decimal("1000"))
        await clients[Role.FRONTEND].insert(SQLTable.ORDER, [order])
        model = rows.model()
        await clients[Role.ML].insert(SQLTable.ML_MODEL, [model])
        extras = {
            SQLTable.TRADE: {"client_order_id": order["client_order_id"]},
            SQLTable.ML_PREDICTION: {"model_id": model["id"]},
        }
        for table, case in CASES.items():
            client = clients[case.role]
            row = case.make(100, **extras.get(table, {}))
            written = await client.insert(table, [row])
            self.assertEqual(written.affected, 1, table)
            key = {name: row[name] for name in written_key(table)}
            found = await client.select(table, keys=[key])
            self.assertEqual(found.rows, [row], table)
            if case.change is not None:
                changed = dict(row, **case.change)
                await client.update(table, [changed])
                [stored] = (await client.select(table, keys=[key])).rows
                for name, value in case.change.items():
                    if name != "feature_names":
                        self.assertEqual(stored[name], value, (table, name))
            if table not in KEPT:
                self.assertEqual((await client.delete(table, [key])).affected, 1, table)
                self.assertEqual((await client.select(table, keys=[key])).rows, [], table)

    async def test_pipelined_calls_are_answered_in_order(self):
        client = await self.client()
        calls = [client.insert(SQLTable.MARKET_TICK, [rows.tick(i)]) for i in range(1, 501)]
        results = await gatherResults(calls)
        self.assertEqual([r.affected for r in results], [1] * 500)
        page = await client.select(SQLTable.MARKET_TICK, symbol="AAPL", limit=0)
        self.assertEqual([row["seq"] for row in page.rows], list(range(1, 501)))

    async def test_large_answers_are_joined_and_pages_streamed(self):
        client = await self.client()
        for start in range(0, 1500, 100):
            await client.insert(SQLTable.MARKET_TICK, [rows.tick(i) for i in range(start + 1, start + 101)])
        big = await client.select(SQLTable.MARKET_TICK, limit=1500)
        self.assertEqual(len(big.rows), 1500)
        seen = []
        async for row in client.select_all(SQLTable.MARKET_TICK, page_size=200, symbol="AAPL"):
            seen.append(row["seq"])
        self.assertEqual(seen, list(range(1, 1501)))

    async def test_hub_errors_are_typed_with_their_row(self):
        client = await self.client()
        with self.assertRaises(ValidationFailed) as refused:
            await client.insert(SQLTable.MARKET_TICK, [rows.tick(1), rows.tick(2, price=None)])
        self.assertEqual(refused.exception.row_index, 1)
        with self.assertRaises(NotFound):
            await client.delete(SQLTable.ORDER, [{"client_order_id": "nope"}])

    async def test_shutdown_answers_in_flight_calls_then_closes(self):
        client = await self.client()
        calls = [client.insert(SQLTable.MARKET_TICK, [rows.tick(i)]) for i in range(1, 51)]
        completed = await client.shutdown()
        self.assertEqual(len(await gatherResults(calls)), 50)
        self.assertLessEqual(completed, 50)
        self.assertFalse(client.transport.connected)

    async def test_service_reconnects_with_backoff_after_the_hub_goes_away(self):
        service = HubClientService(reactor, f"tcp:127.0.0.1:{self.hub.port}", Role.FRONTEND, wire.FRONTEND_TOKEN)
        service.startService()
        self.addCleanup(service.stopService)
        first = await service.session()
        await first.insert(SQLTable.MARKET_TICK, [rows.tick(1)])
        port = self.hub.port
        await self.hub.listener.stopListening()
        first.transport.abortConnection()
        await first.closed
        await deferLater(reactor, 0.5, lambda: None)
        replacement = await serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1").listen(self.hub.factory)
        self.addCleanup(replacement.stopListening)
        second = await service.session()
        self.assertIsNot(second, first)
        self.assertEqual((await second.select(SQLTable.MARKET_TICK, symbol="AAPL")).affected, 1)


def written_key(table):
    from tradehub.schema import TABLES

    return TABLES[table].key


def handshaken(clock, prepare=None):
    """
    A Twisted client protocol on a StringTransport, past the hub's HELLO_ACK
    (session 9, max_frame 4096, heartbeats every second). Its HELLO is
    cleared from the transport: what it wrote once handshaken stays.
    C{prepare} sees the protocol before the handshake, as a ClientService's
    prepareConnection does.
    """
    protocol = HubClientProtocol(Role.FRONTEND, "t", "test", clock)
    transport = StringTransport()
    protocol.makeConnection(transport)
    if prepare is not None:
        prepare(protocol)
    transport.clear()
    ack = HELLO_ACK.encode(
        dict(version=1, session_id=9, heartbeat_ms=1000, max_frame=4096, max_in_flight=8, server_name="hub")
    )
    protocol.dataReceived(encode_frame(MessageType.HELLO_ACK, ack))
    return protocol, transport


class TwistedClientProtocolTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.protocol, self.transport = handshaken(self.clock)

    def sent_types(self):
        frames = wire.Reader().feed(self.transport.value())
        self.transport.clear()
        return [header.type for header, _ in frames]

    def test_handshake_result_is_the_session(self):
        self.assertEqual(self.successResultOf(self.protocol.ready).session_id, 9)

    def test_idle_client_sends_heartbeats(self):
        self.clock.advance(0.5)
        self.assertEqual(self.sent_types(), [])
        self.clock.advance(0.5)
        self.assertEqual(self.sent_types(), [MessageType.HEARTBEAT])

    def test_silent_hub_is_cut_and_calls_fail(self):
        pending = self.protocol.call(1, 6, b"")
        for _ in range(6):
            self.clock.advance(0.5)
        self.assertTrue(self.transport.disconnected)
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        self.protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(pending)

    def hub_stops(self):
        payload = SHUTDOWN.encode(
            {"reason": ShutdownReason.SERVER_STOPPING, "deadline_ms": 5000, "message": "tradehub is stopping"}
        )
        self.protocol.dataReceived(encode_frame(MessageType.SHUTDOWN, payload))

    def test_after_the_hubs_shutdown_answers_still_come_and_later_calls_fail_shutting_down(self):
        pending = self.protocol.call(1, 6, b"")
        self.transport.clear()
        self.hub_stops()
        self.protocol.dataReceived(encode_frame(MessageType.RESPONSE, b"answer", 1))
        self.assertEqual(self.successResultOf(pending), b"answer")
        later = self.protocol.call(1, 6, b"")
        self.assertIn("tradehub is stopping", str(self.failureResultOf(later, ShuttingDown).value))
        self.assertEqual(self.sent_types(), [], "the hub would refuse it, or be gone")

    def test_calls_the_hub_closes_without_answering_after_its_shutdown_fail_shutting_down(self):
        pending = self.protocol.call(1, 6, b"")
        self.hub_stops()
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(pending, ShuttingDown)

    def test_chunked_response_is_joined(self):
        waiter = self.protocol.call(2, 6, b"")
        self.protocol.dataReceived(encode_frame(MessageType.RESPONSE, b"abc", 1, flags=1))
        self.assertNoResult(waiter)
        self.protocol.dataReceived(encode_frame(MessageType.RESPONSE, b"def", 1))
        self.assertEqual(self.successResultOf(waiter), b"abcdef")


class HeldRoute:
    """An INSERT whose answers the test gives: each request that runs puts its answer's Deferred in C{arrivals}."""

    def __init__(self):
        self.arrivals = DeferredQueue()

    def handle(self, value):
        answer = Deferred()
        self.arrivals.put(answer)
        return answer

    def registry(self):
        return Registry([Route(SQLCommand.INSERT, SQLTable.MARKET_TICK, BATCH, self.handle)])


INSERT = (SQLCommand.INSERT, SQLTable.MARKET_TICK, BATCH.encode({"batch": "b", "notes": []}))


class BlockingClientTests(TestCase):
    timeout = 60

    async def held_hub(self, route):
        """A hub on loopback serving C{route}: the test decides when its answer comes."""
        factory = HubFactory(
            route.registry(),
            wire.TOKENS,
            reactor,
            handshake_timeout=5,
            heartbeat_ms=5000,
            max_frame=1 << 20,
            max_in_flight=16,
            metrics=Metrics(),
        )
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        client = await deferToThread(
            BlockingClient, "127.0.0.1", port.getHost().port, Role.FRONTEND, wire.FRONTEND_TOKEN
        )
        self.addCleanup(deferToThread, client.close)
        return factory, client

    async def test_hub_shutdown_while_waiting_still_delivers_the_answers_and_refuses_later_calls(self):
        route = HeldRoute()
        factory, client = await self.held_hub(route)
        first, second = await deferToThread(lambda: [client.send_request(*INSERT) for _ in range(2)])
        held = await route.arrivals.get()
        drained = factory.drain(5)
        held.callback(b"first")
        self.assertEqual(await deferToThread(client.read_answer, first), [b"first"])
        (await route.arrivals.get()).callback(b"second")
        with self.assertRaises(ShuttingDown) as refused:
            await deferToThread(client.call, *INSERT)
        self.assertIn("tradehub is stopping", str(refused.exception))
        self.assertEqual(await deferToThread(client.read_answer, second), [b"second"])
        self.assertIsNone(await deferToThread(client.close))
        await drained

    async def test_a_call_the_hub_closes_on_after_its_shutdown_fails_shutting_down(self):
        factory, client = await self.held_hub(HeldRoute())
        drained = factory.drain(5)
        with self.assertRaises(ShuttingDown):
            await deferToThread(client.call, *INSERT)
        await deferToThread(client.close)
        await drained

    async def test_idle_blocking_client_keeps_its_session_with_heartbeats(self):
        hub = await start_hub(self, table_registry, heartbeat_ms=200)

        def idle_then_call():
            with BlockingClient("127.0.0.1", hub.port, Role.FRONTEND, wire.FRONTEND_TOKEN) as client:
                time.sleep(1.5)
                return client.insert(SQLTable.MARKET_TICK, [rows.tick(1)]).affected

        self.assertEqual(await deferToThread(idle_then_call), 1)
