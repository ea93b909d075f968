"""
Push subscriptions in the Twisted client: the protocol against hand-built hub
frames with a fake clock, the reconnecting service's standing subscriptions
likewise, then both against a live hub on loopback.
"""

from twisted.internet import reactor
from twisted.internet.defer import DeferredQueue, ensureDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tradehub.client.asynchronous import HubClientService, connect
from tradehub.client.calls import subscribe_payload
from tradehub.client.errors import PermissionDenied, PositionExpired, ShuttingDown
from tradehub.protocol.enums import (
    FLAG_CANCEL,
    FLAG_MORE,
    ErrorCode,
    MessageType,
    Role,
    ShutdownReason,
    SQLCommand,
    SQLTable,
)
from tradehub.protocol.messages import ERROR, SUBSCRIBED, encode_frame
from tradehub.protocol.tables import LAYOUTS

from . import rows, wire
from .hub import start_hub, table_registry
from .test_clients import handshaken

TABLE = SQLTable.ML_PREDICTION
MODEL_ID = rows.new_id()


def confirm(request_id, position):
    """The hub's answer to a SUBSCRIBE or to its cancel: the position the subscription is current to."""
    return encode_frame(MessageType.RESPONSE, SUBSCRIBED.encode({"position": position}), request_id)


def event(request_id, position, row, kind=SQLCommand.INSERT, frame_bytes=None):
    """
    The hub's EVENT of a change, in frames carrying at most C{frame_bytes}
    of payload each (MORE on all but the last); a DELETE carries the key only.
    """
    layouts = LAYOUTS[TABLE]
    layout = layouts.deleted_event if kind == SQLCommand.DELETE else layouts.event
    payload = layout.encode(dict(row, position=position))
    size = frame_bytes or len(payload)
    parts = [payload[start : start + size] for start in range(0, len(payload), size)]
    return [
        encode_frame(MessageType.EVENT, part, request_id, kind, TABLE, FLAG_MORE if index < len(parts) - 1 else 0)
        for index, part in enumerate(parts)
    ]


def error(request_id, code):
    payload = ERROR.encode({"code": code, "row_index": -1, "message": f"{ErrorCode(code).name.lower()} for the test"})
    return encode_frame(MessageType.ERROR, payload, request_id)


def prediction(**changes):
    return rows.prediction(MODEL_ID, **changes)


def feed(protocol, *frames):
    """The hub's frames to the client, each a read of its own (a multi-frame EVENT is a list)."""
    for frame in frames:
        protocol.dataReceived(b"".join(frame) if isinstance(frame, list) else frame)


def sent(transport):
    """What the client wrote since last asked, heartbeats aside (a test's clock may pass one): (header, payload)."""
    frames = wire.Reader().feed(transport.value())
    transport.clear()
    return [(header, payload) for header, payload in frames if header.type != MessageType.HEARTBEAT]


async def take(subscription, count=None):
    """The ids of the rows an iteration hands out: C{count} of them, or all until it ends."""
    ids = []
    async for change in subscription:
        ids.append(change.row["id"])
        if len(ids) == count:
            break
    return ids


class SubscriptionTests(SynchronousTestCase):
    def setUp(self):
        self.protocol, self.transport = handshaken(Clock())

    def hub_sends(self, *frames):
        feed(self.protocol, *frames)

    def sent(self):
        return sent(self.transport)

    def subscribed(self, position=40, **options):
        """A subscription the hub has confirmed, current to C{position}."""
        waiting = self.protocol.subscribe(TABLE, **options)
        [(header, _)] = self.sent()
        self.hub_sends(confirm(header.request_id, position))
        return self.successResultOf(waiting)

    def test_subscribe_sends_the_tables_layout_and_fires_once_the_hub_confirms(self):
        waiting = self.protocol.subscribe(TABLE, symbols=["msft"], from_position=7, model_ids=[MODEL_ID])
        [(header, payload)] = self.sent()
        self.assertEqual(
            (header.type, header.table, header.command, header.flags), (MessageType.SUBSCRIBE, TABLE, 0, 0)
        )
        self.assertEqual(payload, subscribe_payload(TABLE, 7, ["msft"], model_ids=[MODEL_ID]))
        self.assertNoResult(waiting)
        self.hub_sends(confirm(header.request_id, 7))
        subscription = self.successResultOf(waiting)
        self.assertEqual((subscription.request_id, subscription.position), (header.request_id, 7))
        self.assertNoResult(subscription.ended)

    def test_a_refused_subscribe_fails_typed_and_the_connection_goes_on(self):
        waiting = self.protocol.subscribe(SQLTable.MARKET_TICK)
        [(header, _)] = self.sent()
        self.hub_sends(error(header.request_id, ErrorCode.PERMISSION_DENIED))
        self.failureResultOf(waiting, PermissionDenied)
        self.assertEqual(self.subscribed(3).position, 3)

    def test_events_reach_the_callback_in_order_and_advance_the_position(self):
        seen = []
        subscription = self.subscribed(40, on_event=seen.append)
        added, changed = prediction(), prediction()
        self.hub_sends(
            event(subscription.request_id, 41, added),
            event(subscription.request_id, 43, dict(changed, value=0.5), SQLCommand.UPDATE),
            event(subscription.request_id, 44, {"id": added["id"]}, SQLCommand.DELETE),
        )
        self.assertEqual([e.position for e in seen], [41, 43, 44])
        self.assertEqual([e.kind for e in seen], [SQLCommand.INSERT, SQLCommand.UPDATE, SQLCommand.DELETE])
        self.assertEqual(seen[0].row, added)
        self.assertEqual(seen[1].row["value"], 0.5)
        self.assertEqual(seen[2].row, {"id": added["id"]})
        self.assertEqual(subscription.position, 44)
        self.assertRaises(TypeError, subscription.__aiter__)

    def test_a_callback_that_raises_is_logged_and_delivery_goes_on(self):
        seen = []

        def on_event(change):
            seen.append(change.position)
            if change.position == 41:
                raise ValueError("a bug in the model")

        subscription = self.subscribed(40, on_event=on_event)
        pending = self.protocol.call(SQLCommand.SELECT, SQLTable.ML_MODEL, b"")
        [(request, _)] = self.sent()
        self.hub_sends(
            event(subscription.request_id, 41, prediction()),
            event(subscription.request_id, 42, prediction()),
            encode_frame(MessageType.RESPONSE, b"answer", request.request_id),
        )
        self.assertEqual(seen, [41, 42])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(subscription.position, 42)
        self.assertEqual(self.successResultOf(pending), b"answer")
        self.assertFalse(self.transport.disconnecting)

    def test_without_a_callback_events_wait_for_the_iteration(self):
        subscription = self.subscribed(40)
        first, second, third = prediction(), prediction(), prediction()
        self.hub_sends(event(subscription.request_id, 41, first), event(subscription.request_id, 42, second))
        self.assertEqual(subscription.position, 40, "nothing is delivered until it is iterated")
        taking = ensureDeferred(take(subscription, 3))
        self.assertEqual(subscription.position, 42)
        self.assertNoResult(taking)
        self.hub_sends(event(subscription.request_id, 43, third))
        self.assertEqual(self.successResultOf(taking), [first["id"], second["id"], third["id"]])
        self.assertEqual(subscription.position, 43)

    def test_an_event_in_several_frames_is_joined(self):
        seen = []
        subscription = self.subscribed(40, on_event=seen.append)
        row = prediction(predicted_side="sell" * 20)
        frames = event(subscription.request_id, 41, row, frame_bytes=32)
        self.assertGreater(len(frames), 3)
        self.hub_sends(*frames[:-1])
        self.assertEqual(seen, [])
        self.hub_sends(frames[-1])
        self.assertEqual([(e.position, e.row) for e in seen], [(41, row)])

    def test_events_interleave_with_a_pending_answer_and_other_subscriptions(self):
        firsts, seconds = [], []
        first = self.subscribed(40, on_event=firsts.append)
        second = self.subscribed(40, on_event=seconds.append)
        pending = self.protocol.call(SQLCommand.SELECT, SQLTable.ML_MODEL, b"")
        [(request, _)] = self.sent()
        self.assertNotIn(request.request_id, (first.request_id, second.request_id))
        long_row, short_row = prediction(predicted_side="x" * 100), prediction()
        f1, f2, f3, *rest = event(first.request_id, 41, long_row, frame_bytes=48)
        self.hub_sends(
            f1,
            encode_frame(MessageType.RESPONSE, b"ab", request.request_id, flags=FLAG_MORE),
            event(second.request_id, 41, short_row),
            f2,
            encode_frame(MessageType.RESPONSE, b"cd", request.request_id),
        )
        self.assertEqual(self.successResultOf(pending), b"abcd")
        self.assertEqual([e.row for e in seconds], [short_row])
        self.assertEqual(firsts, [])
        self.hub_sends(f3, *rest)
        self.assertEqual([e.row for e in firsts], [long_row])

    def test_cancel_ends_it_at_once_and_fires_with_the_hubs_position(self):
        subscription = self.subscribed(40)
        self.hub_sends(event(subscription.request_id, 41, prediction()))
        cancelled = subscription.cancel()
        [(header, payload)] = self.sent()
        self.assertEqual(
            (header.type, header.request_id, header.table, header.flags, payload),
            (MessageType.SUBSCRIBE, subscription.request_id, TABLE, FLAG_CANCEL, b""),
        )
        self.assertIsNone(self.successResultOf(subscription.ended))
        self.assertEqual(self.successResultOf(ensureDeferred(take(subscription))), [], "queued events are dropped")
        # An event that crossed the cancel is not delivered either.
        self.hub_sends(event(subscription.request_id, 42, prediction()))
        self.assertNoResult(cancelled)
        self.hub_sends(confirm(subscription.request_id, 45))
        self.assertEqual(self.successResultOf(cancelled), 45)
        self.assertEqual(subscription.position, 40)
        self.assertEqual(self.successResultOf(subscription.cancel()), 45)
        self.assertEqual(self.sent(), [], "one cancel is sent")

    def test_a_hub_error_ends_it_typed_after_the_events_already_received(self):
        subscription = self.subscribed(40)
        others = []
        other = self.subscribed(40, on_event=others.append)
        received = prediction()
        self.hub_sends(
            event(subscription.request_id, 41, received),
            error(subscription.request_id, ErrorCode.POSITION_EXPIRED),
            event(other.request_id, 41, prediction()),
        )
        self.failureResultOf(subscription.ended, PositionExpired)
        taking = ensureDeferred(take(subscription, 1))
        self.assertEqual(self.successResultOf(taking), [received["id"]])
        self.failureResultOf(ensureDeferred(take(subscription)), PositionExpired)
        self.assertEqual([e.position for e in others], [41])
        self.assertNoResult(other.ended)
        self.assertFalse(self.transport.disconnecting)

    def test_an_end_that_crosses_a_cancel_waits_for_the_cancels_own_answer(self):
        """The hub ended it as the cancel went out: two ERRORs come, the second answering the cancel."""
        subscription = self.subscribed(40, on_event=lambda change: None)
        self.hub_sends(event(subscription.request_id, 41, prediction()))
        cancelled = subscription.cancel()
        with capturedLogs() as events:
            self.hub_sends(error(subscription.request_id, ErrorCode.POSITION_EXPIRED))
            self.assertNoResult(cancelled)
            self.hub_sends(error(subscription.request_id, ErrorCode.NOT_FOUND))
        self.assertEqual(self.successResultOf(cancelled), 41)
        self.assertEqual([e for e in events if e["log_level"] >= LogLevel.warn], [])

    def test_connection_loss_ends_every_subscription_with_its_error(self):
        subscription = self.subscribed(40)
        received = prediction()
        self.hub_sends(event(subscription.request_id, 41, received))
        unconfirmed = self.protocol.subscribe(TABLE)
        self.protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(subscription.ended, ConnectionLost)
        self.failureResultOf(unconfirmed, ConnectionLost)
        self.assertEqual(self.successResultOf(ensureDeferred(take(subscription, 1))), [received["id"]])
        self.failureResultOf(ensureDeferred(take(subscription)), ConnectionLost)
        self.assertEqual(self.successResultOf(subscription.cancel()), 41)

    def test_the_hubs_shutdown_ends_subscriptions_and_refuses_new_ones(self):
        subscription = self.subscribed(40)
        unconfirmed = self.protocol.subscribe(TABLE)
        [(header, _)] = self.sent()
        self.hub_sends(wire.shutdown(ShutdownReason.SERVER_STOPPING, message="tradehub is stopping"))
        self.failureResultOf(subscription.ended, ShuttingDown)
        # Confirmed as the hub began stopping: it ended there before any event.
        self.hub_sends(confirm(header.request_id, 40))
        self.failureResultOf(unconfirmed, ShuttingDown)
        self.failureResultOf(self.protocol.subscribe(TABLE), ShuttingDown)
        self.assertEqual(self.sent(), [])


class StandingSubscriptionTests(SynchronousTestCase):
    """
    The service's standing subscriptions, over connections a test makes: each
    goes through the service's prepareConnection, as ClientService does.
    """

    def setUp(self):
        self.clock = Clock()
        self.service = HubClientService(self.clock, "tcp:127.0.0.1:1", Role.FRONTEND, "t")
        self.seen = []

    def connection(self):
        return handshaken(self.clock, prepare=self.service._prepare)

    def lose(self, protocol):
        protocol.connectionLost(Failure(ConnectionLost()))

    def resumes_from(self, transport):
        """The from_position of the one SUBSCRIBE sent on this connection, and its request_id."""
        [(header, payload)] = sent(transport)
        self.assertEqual(header.type, MessageType.SUBSCRIBE)
        return LAYOUTS[TABLE].subscribe.decode(payload)["from_position"], header.request_id

    def standing(self, **options):
        return self.service.subscribe(TABLE, self.seen.append, **options)

    def test_it_resumes_on_each_new_connection_from_the_last_position_delivered(self):
        standing = self.standing(symbols=["AAPL"], model_ids=[MODEL_ID])
        subscribed = standing.subscribed()
        first, transport = self.connection()
        [(header, payload)] = sent(transport)
        self.assertEqual(payload, subscribe_payload(TABLE, None, ["AAPL"], model_ids=[MODEL_ID]))
        self.assertNoResult(subscribed)
        feed(first, confirm(header.request_id, 40))
        self.assertEqual(self.successResultOf(subscribed), 40)
        feed(first, event(header.request_id, 41, prediction()), event(header.request_id, 42, prediction()))
        self.lose(first)
        self.assertNoResult(standing.ended)
        second, transport = self.connection()
        [(header, payload)] = sent(transport)
        self.assertEqual(payload, subscribe_payload(TABLE, 42, ["AAPL"], model_ids=[MODEL_ID]))
        feed(second, confirm(header.request_id, 42), event(header.request_id, 43, prediction()))
        self.assertEqual([e.position for e in self.seen], [41, 42, 43])
        self.assertEqual(standing.position, 43)

    def test_made_while_connected_it_subscribes_on_that_connection_from_its_position(self):
        connection, transport = self.connection()
        standing = self.standing(from_position=5)
        self.assertEqual(self.resumes_from(transport)[0], 5)
        self.assertEqual(standing.position, 5)

    def test_position_expired_on_resume_ends_it_and_it_is_not_retried(self):
        standing = self.standing(from_position=40)
        first, transport = self.connection()
        _, request_id = self.resumes_from(transport)
        feed(first, confirm(request_id, 40), event(request_id, 41, prediction()))
        self.lose(first)
        second, transport = self.connection()
        position, request_id = self.resumes_from(transport)
        self.assertEqual(position, 41)
        with capturedLogs() as events:
            feed(second, error(request_id, ErrorCode.POSITION_EXPIRED))
        self.failureResultOf(standing.ended, PositionExpired)
        self.failureResultOf(standing.subscribed(), PositionExpired)
        [logged] = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertIn("POSITION_EXPIRED", logged["error"])
        self.lose(second)
        third, transport = self.connection()
        self.assertEqual(sent(transport), [], "it does not subscribe again")

    def test_the_database_being_down_is_waited_out_on_the_same_connection(self):
        standing = self.standing(from_position=40)
        connection, transport = self.connection()
        _, request_id = self.resumes_from(transport)
        feed(connection, confirm(request_id, 40), event(request_id, 41, prediction()))
        feed(connection, error(request_id, ErrorCode.DB_UNAVAILABLE))
        self.assertEqual(sent(transport), [])
        # The service's backoff: 0.2 s, plus up to 1 s of jitter.
        self.clock.advance(1.2)
        position, request_id = self.resumes_from(transport)
        self.assertEqual(position, 41)
        feed(connection, confirm(request_id, 41), event(request_id, 42, prediction()))
        self.assertEqual([e.position for e in self.seen], [41, 42])
        self.assertNoResult(standing.ended)

    def test_cancel_stops_it_on_this_connection_and_the_next(self):
        standing = self.standing(from_position=40)
        connection, transport = self.connection()
        _, request_id = self.resumes_from(transport)
        feed(connection, confirm(request_id, 40), event(request_id, 41, prediction()))
        cancelled = standing.cancel()
        [(header, _)] = sent(transport)
        self.assertEqual((header.request_id, header.flags), (request_id, FLAG_CANCEL))
        feed(connection, confirm(request_id, 44))
        self.assertEqual(self.successResultOf(cancelled), 44)
        self.assertIsNone(self.successResultOf(standing.ended))
        self.lose(connection)
        _, transport = self.connection()
        self.assertEqual(sent(transport), [])
        self.assertEqual([e.position for e in self.seen], [41])

    def test_cancelled_before_the_hub_confirms_it_is_cancelled_once_confirmed(self):
        standing = self.standing(from_position=40)
        connection, transport = self.connection()
        _, request_id = self.resumes_from(transport)
        self.assertEqual(self.successResultOf(standing.cancel()), 40)
        feed(connection, confirm(request_id, 40))
        [(header, _)] = sent(transport)
        self.assertEqual((header.request_id, header.flags), (request_id, FLAG_CANCEL))


class LiveSubscriptionTests(TestCase):
    """The Twisted client against a hub on loopback, with push on, and an ML client writing."""

    timeout = 120

    async def setUp(self):
        self.hub = await start_hub(self, table_registry, push=True)
        self.ml = await self.client(Role.ML)
        self.model = rows.model()
        await self.ml.insert(SQLTable.ML_MODEL, [self.model])

    async def client(self, role):
        token = wire.FRONTEND_TOKEN if role == Role.FRONTEND else wire.ML_TOKEN
        protocol = await connect(reactor, f"tcp:127.0.0.1:{self.hub.port}", role, token)
        self.addCleanup(lambda: protocol.transport.loseConnection() if protocol.transport.connected else None)
        return protocol

    def predictions(self, count):
        return [rows.prediction(self.model["id"], horizon=index + 1) for index in range(count)]

    async def test_the_frontend_receives_what_the_ml_client_writes(self):
        frontend = await self.client(Role.FRONTEND)
        iterated = await frontend.subscribe(TABLE, model_ids=[self.model["id"]])
        called = DeferredQueue()
        await frontend.subscribe(TABLE, on_event=called.put)
        written = self.predictions(5)
        await self.ml.insert(TABLE, written[:2])
        # A request on the same connection is answered while events come.
        found = await frontend.select(SQLTable.ML_MODEL, keys=[{"id": self.model["id"]}])
        self.assertEqual(found.rows[0]["id"], self.model["id"])
        await self.ml.insert(TABLE, written[2:])
        events = []
        async for change in iterated:
            events.append(change)
            if len(events) == 5:
                break
        stored = await frontend.select(TABLE, keys=[{"id": p["id"]} for p in written])
        by_id = {row["id"]: row for row in stored.rows}
        self.assertEqual([e.row for e in events], [by_id[p["id"]] for p in written])
        positions = [e.position for e in events]
        self.assertEqual(positions, sorted(set(positions)))
        self.assertEqual(iterated.position, positions[-1])
        self.assertEqual([(await called.get()).position for _ in written], positions)
        self.assertGreaterEqual(await iterated.cancel(), positions[-1])
        self.assertIsNone(await iterated.ended)

    async def test_the_service_resumes_after_the_hub_drops_it_and_delivers_each_change_once_in_order(self):
        service = HubClientService(
            reactor, f"tcp:127.0.0.1:{self.hub.port}", Role.FRONTEND, wire.FRONTEND_TOKEN, client_name="standing"
        )
        service.startService()
        self.addCleanup(service.stopService)
        delivered = DeferredQueue()
        standing = service.subscribe(TABLE, delivered.put, model_ids=[self.model["id"]])
        await standing.subscribed()
        written = self.predictions(10)

        async def taken(count):
            return [(await delivered.get()).row["id"] for _ in range(count)]

        await self.ml.insert(TABLE, written[:3])
        ids = await taken(3)
        first = await service.session()
        # The hub drops the connection and takes no new one for a while, during which writes go on.
        await self.hub.listener.stopListening()
        [session] = [s for s in self.hub.factory.sessions if s.client_name == "standing"]
        session.transport.abortConnection()
        await first.closed
        await self.ml.insert(TABLE, written[3:6])
        await self.ml.insert(TABLE, written[6:])
        self.assertEqual(len(delivered.pending), 0)
        listener = await serverFromString(reactor, f"tcp:{self.hub.port}:interface=127.0.0.1").listen(self.hub.factory)
        self.addCleanup(listener.stopListening)
        ids += await taken(7)
        self.assertEqual(ids, [p["id"] for p in written])
        self.assertIsNot(await service.session(), first)
        # Nothing was repeated: the next change is the next thing delivered.
        marker = rows.prediction(self.model["id"], horizon=99)
        await self.ml.insert(TABLE, [marker])
        self.assertEqual(await taken(1), [marker["id"]])
        self.assertEqual(len(delivered.pending), 0)
        self.assertNoResult(standing.ended)
        self.assertIsInstance(await standing.cancel(), int)
