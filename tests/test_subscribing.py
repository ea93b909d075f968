"""
SUBSCRIBE, CANCEL and EVENT in the session, deterministically: the real
session, Subscriptions, Feed and Subscription over StringTransport and a
task.Clock, with the change log held in memory (L{FakeLog}) so the test
decides when each database answer comes.
"""

from twisted.internet.defer import Deferred, FirstError, ensureDeferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tradehub.changes.feed import RELAY_BATCH, WINDOW, Feed
from tradehub.changes.subscription import PAGE
from tradehub.client.calls import decode_event, subscribe_payload
from tradehub.db.pool import prepared
from tradehub.ops.metrics import Metrics
from tradehub.protocol.enums import FLAG_CANCEL, FLAG_MORE, ErrorCode, MessageType, Role, SQLCommand, SQLTable
from tradehub.protocol.messages import SUBSCRIBED, encode_frame
from tradehub.protocol.tables import LAYOUTS
from tradehub.repositories.changes import Change, ChangeLogRepository
from tradehub.server.hub import HubFactory
from tradehub.server.routes import Registry
from tradehub.server.subscribing import Subscriptions

from . import rows, wire
from .support import make_pool

MODEL = rows.new_id()


class FakeLog:
    """
    The change log in memory, standing in for the feed's pool and its
    repository at once. Queries answer at once, unless C{hold} is set: then
    they wait in C{held} until the test releases them.
    """

    def __init__(self):
        self.numbered: list[Change] = []
        self.pending: list[tuple[int, dict]] = []
        self.tables: dict[int, SQLTable] = {}
        self.trimmed_through = 0
        self.hold = False
        self.held: list[tuple[Deferred, object]] = []
        self.reads = 0

    @property
    def last(self):
        return self.numbered[-1].position if self.numbered else 0

    def write(self, row, op=SQLCommand.INSERT, table=SQLTable.ML_PREDICTION):
        """A committed write the relay has not numbered yet."""
        self.pending.append((op, row, table))

    def numbered_writes(self, count, **changes):
        for _ in range(count):
            self.write(rows.prediction(MODEL, **changes))
        self.relay_now()

    def relay_now(self):
        for op, row, table in self.pending:
            position = self.last + 1
            self.numbered.append(Change(position, op, row))
            self.tables[position] = table
        self.pending.clear()

    # The repository's side

    def changes_statement(self, table, after, through, filters, limit):
        return "changes", (table, after, through, filters, limit)

    def changes(self, table, records):
        return records

    # The pool's side

    def query(self, statement, params=()):
        result = self._answer(statement, params)
        if not self.hold:
            return succeed(result)
        waiting = Deferred()
        self.held.append((waiting, result))
        return waiting

    def release(self):
        """Answer the queries waiting now (answers may send new queries: they wait in turn)."""
        held, self.held = self.held, []
        for waiting, result in held:
            waiting.callback(result)

    def release_all(self):
        while self.held:
            self.release()

    def _answer(self, statement, params):
        if statement == ChangeLogRepository.HEAD:
            return [(self.last, self.trimmed_through)]
        if statement == ChangeLogRepository.RELAY:
            self.relay_now()
            return [(self.last,)]
        if statement == ChangeLogRepository.TRIM:
            return [(0,)]
        assert statement == prepared("changes"), statement
        self.reads += 1
        table, after, through, filters, limit = params
        found = [
            c
            for c in self.numbered
            if after < c.position <= through
            and self.tables[c.position] == table
            and all(c.row[column] in values for column, values in filters.items() if values)
        ]
        return found[:limit]


class Hub:
    """One session of a hub whose push side runs on a L{FakeLog}."""

    def __init__(self, push=True, max_frame=4096):
        self.clock = Clock()
        self.log = FakeLog()
        self.feed = Feed(self.log, self.log, self.clock, sweep=1.0, retention=60.0, trim_every=60.0)
        ensureDeferred(self.feed.start())
        self.factory = HubFactory(
            Registry([]),
            wire.TOKENS,
            self.clock,
            handshake_timeout=10,
            heartbeat_ms=1000,
            max_frame=max_frame,
            max_in_flight=16,
            metrics=Metrics(),
            subscriptions=Subscriptions(self.feed) if push else None,
        )
        self.transport = StringTransport()
        self.session = self.factory.buildProtocol(None)
        self.session.makeConnection(self.transport)
        self.reader = wire.Reader()

    def send(self, data):
        self.session.dataReceived(data)

    def frames(self):
        data = self.transport.value()
        self.transport.clear()
        return self.reader.feed(data)

    def handshake(self, role=Role.FRONTEND):
        self.send(wire.hello(role))
        [(header, _)] = self.frames()
        assert header.type == MessageType.HELLO_ACK

    def subscribe(self, request_id=1, table=SQLTable.ML_PREDICTION, **query):
        self.send(encode_frame(MessageType.SUBSCRIBE, subscribe_payload(table, **query), request_id, table=table))

    def cancel(self, request_id=1, table=SQLTable.ML_PREDICTION):
        self.send(encode_frame(MessageType.SUBSCRIBE, b"", request_id, table=table, flags=FLAG_CANCEL))

    def events(self, frames):
        """The EVENTs among C{frames}, decoded; MORE parts joined."""
        events, parts = [], []
        for header, payload in frames:
            assert header.type == MessageType.EVENT, header
            parts.append(payload)
            if not header.flags & FLAG_MORE:
                events.append((header.request_id, decode_event(header.command, header.table, b"".join(parts))))
                parts = []
        return events


class SubscriptionCase(SynchronousTestCase):
    role = Role.FRONTEND

    def setUp(self):
        self.hub = Hub()
        self.hub.handshake(self.role)
        self.log = self.hub.log

    def subscribed(self, frames, request_id=1):
        header, payload = frames[0]
        self.assertEqual((header.type, header.request_id), (MessageType.RESPONSE, request_id))
        return SUBSCRIBED.decode(payload).position

    def assertError(self, frames, code, request_id=1):
        [(header, error)] = frames
        self.assertEqual((header.type, header.request_id), (MessageType.ERROR, request_id))
        self.assertEqual(ErrorCode(error.code), code, error.message)
        self.assertFalse(self.hub.transport.disconnecting)
        return error

    def positions(self, frames):
        return [event.position for _, event in self.hub.events(frames)]


class SubscribeTests(SubscriptionCase):
    def test_live_changes_follow_the_confirmation(self):
        self.log.numbered_writes(3)
        self.hub.subscribe()
        self.assertEqual(self.subscribed(self.hub.frames()), 3)
        row = rows.prediction(MODEL)
        self.log.write(row)
        self.hub.feed.relay()
        [(request_id, event)] = self.hub.events(self.hub.frames())
        self.assertEqual((request_id, event.position, event.kind), (1, 4, SQLCommand.INSERT))
        self.assertEqual(event.row, row)

    def test_a_write_committed_before_the_subscribe_is_not_sent_though_not_numbered_yet(self):
        """ "After the confirmation" excludes a write whose answer the client already had."""
        self.log.write(rows.prediction(MODEL))
        self.hub.subscribe()
        self.assertEqual(self.subscribed(self.hub.frames()), 1)
        self.hub.feed.relay()
        self.assertEqual(self.hub.frames(), [])

    def test_from_position_replays_then_goes_live_without_gap_or_repeat(self):
        self.log.numbered_writes(5)
        self.hub.subscribe(from_position=2)
        frames = self.hub.frames()
        self.assertEqual(self.subscribed(frames), 2)
        self.assertEqual(self.positions(frames[1:]), [3, 4, 5])
        self.log.numbered_writes(2)
        self.hub.feed.learned(self.log.last)
        self.assertEqual(self.positions(self.hub.frames()), [6, 7])

    def test_changes_numbered_while_catching_up_are_not_lost_at_the_seam(self):
        self.log.numbered_writes(3)
        self.log.hold = True
        self.hub.subscribe(from_position=0)
        self.log.release()  # the relay
        self.log.release()  # the head: confirmed, the catch-up read of (0, 3] is sent
        self.assertEqual(self.subscribed(self.hub.frames()), 0)
        self.assertEqual(len(self.log.held), 1)
        # While that read is in flight, 4 and 5 are numbered and handed out to the live ones.
        self.log.hold = False
        self.log.numbered_writes(2)
        self.hub.feed.learned(self.log.last)
        self.assertEqual(self.hub.feed.head, 5)
        self.log.release()
        self.assertEqual(self.positions(self.hub.frames()), [1, 2, 3, 4, 5])

    def test_the_confirmation_comes_before_any_event(self):
        self.log.numbered_writes(2)
        self.hub.subscribe(from_position=0)
        types = [header.type for header, _ in self.hub.frames()]
        self.assertEqual(types, [MessageType.RESPONSE, MessageType.EVENT, MessageType.EVENT])

    def test_filters_keep_only_matching_rows(self):
        other = rows.new_id()
        self.hub.subscribe(symbols=["msft"], model_ids=[MODEL.upper()])
        self.subscribed(self.hub.frames())
        self.log.write(rows.prediction(MODEL, symbol="AAPL"))
        self.log.write(rows.prediction(other, symbol="MSFT"))
        self.log.write(rows.prediction(MODEL, symbol="MSFT"))
        self.hub.feed.relay()
        self.assertEqual(self.positions(self.hub.frames()), [3])

    def test_a_delete_carries_the_key(self):
        self.hub.subscribe()
        self.subscribed(self.hub.frames())
        row = rows.prediction(MODEL)
        self.log.write(row, op=SQLCommand.DELETE)
        self.hub.feed.relay()
        [(_, event)] = self.hub.events(self.hub.frames())
        self.assertEqual((event.kind, event.row), (SQLCommand.DELETE, {"id": row["id"]}))

    def test_an_event_larger_than_a_frame_spans_frames(self):
        hub = Hub(max_frame=96)
        hub.handshake()
        hub.subscribe()
        hub.frames()
        row = rows.prediction(MODEL)
        hub.log.write(row)
        hub.feed.relay()
        frames = hub.frames()
        self.assertGreater(len(frames), 1)
        self.assertTrue(all(header.flags & FLAG_MORE for header, _ in frames[:-1]))
        [(_, event)] = hub.events(frames)
        self.assertEqual(event.row, row)

    def test_a_windows_events_leave_in_one_write(self):
        self.hub.subscribe()
        self.hub.frames()
        writes = []
        self.hub.transport.write = writes.append
        self.log.numbered_writes(3)
        self.hub.feed.learned(self.log.last)
        self.assertEqual(len(writes), 1)
        self.assertEqual(self.positions(wire.Reader().feed(writes[0])), [1, 2, 3])

    def test_a_change_is_encoded_once_for_all_its_live_subscribers(self):
        layout = LAYOUTS[SQLTable.ML_PREDICTION].event
        encoded = []
        self.patch(layout, "encode", lambda value, encode=layout.encode: encoded.append(1) or encode(value))
        for request_id in (1, 2, 3):
            self.hub.subscribe(request_id)
        self.hub.frames()
        self.log.write(rows.prediction(MODEL))
        self.hub.feed.relay()
        events = self.hub.events(self.hub.frames())
        self.assertEqual(sorted(request_id for request_id, _ in events), [1, 2, 3])
        self.assertEqual(len(encoded), 1)

    def test_other_tables_changes_are_not_sent(self):
        self.hub.subscribe()
        self.subscribed(self.hub.frames())
        self.log.write(rows.indicator(), table=SQLTable.TECHNICAL_INDICATOR)
        self.log.write(rows.prediction(MODEL))
        self.hub.feed.relay()
        self.assertEqual(self.positions(self.hub.frames()), [2])


class RefusalTests(SubscriptionCase):
    def test_unknown_table(self):
        self.hub.send(encode_frame(MessageType.SUBSCRIBE, b"", 1, table=99))
        self.assertError(self.hub.frames(), ErrorCode.UNKNOWN_TABLE)

    def test_a_table_the_role_may_not_follow(self):
        self.hub.subscribe(table=SQLTable.MARKET_TICK)
        self.assertError(self.hub.frames(), ErrorCode.PERMISSION_DENIED)

    def test_a_malformed_payload(self):
        self.hub.send(encode_frame(MessageType.SUBSCRIBE, b"\x01", 1, table=SQLTable.ML_PREDICTION))
        self.assertError(self.hub.frames(), ErrorCode.MALFORMED_PAYLOAD)

    def test_symbols_on_a_table_without_symbols(self):
        self.hub.subscribe(table=SQLTable.ACCOUNT, symbols=["AAPL"])
        self.assertError(self.hub.frames(), ErrorCode.VALIDATION_FAILED)

    def test_a_filter_value_its_column_refuses(self):
        self.hub.subscribe(model_ids=["not-a-uuid"])
        error = self.assertError(self.hub.frames(), ErrorCode.VALIDATION_FAILED)
        self.assertIn("model_ids", error.message)

    def test_a_position_ahead_of_the_log(self):
        self.log.numbered_writes(2)
        self.hub.subscribe(from_position=3)
        self.assertError(self.hub.frames(), ErrorCode.VALIDATION_FAILED)

    def test_a_position_retention_removed(self):
        self.log.numbered_writes(4)
        self.log.trimmed_through = 2
        self.hub.subscribe(from_position=1)
        self.assertError(self.hub.frames(), ErrorCode.POSITION_EXPIRED)
        self.hub.subscribe(from_position=2)
        self.assertEqual(self.positions(self.hub.frames()[1:]), [3, 4])

    def test_a_request_id_that_names_a_live_subscription(self):
        self.hub.subscribe()
        self.subscribed(self.hub.frames())
        self.hub.subscribe()
        self.assertError(self.hub.frames(), ErrorCode.CONFLICT)

    def test_push_off(self):
        hub = Hub(push=False)
        hub.handshake()
        hub.subscribe()
        [(header, error)] = hub.frames()
        self.assertEqual(ErrorCode(error.code), ErrorCode.UNKNOWN_TYPE)
        self.assertFalse(hub.transport.disconnecting)

    def test_subscribe_after_the_clients_shutdown(self):
        """One in flight when the SHUTDOWN comes does not start; one sent after it is refused."""
        self.log.hold = True
        self.hub.subscribe(1)
        self.hub.send(wire.shutdown())
        self.hub.subscribe(2)
        self.log.release_all()
        frames = [(h.request_id, ErrorCode(p.code)) for h, p in self.hub.frames() if h.type == MessageType.ERROR]
        self.assertEqual(frames, [(1, ErrorCode.SHUTTING_DOWN), (2, ErrorCode.SHUTTING_DOWN)])
        self.assertEqual(self.hub.session.subscriptions, {})


class CancelTests(SubscriptionCase):
    def test_cancel_answers_the_position_and_no_event_follows(self):
        self.log.numbered_writes(2)
        self.hub.subscribe()
        self.subscribed(self.hub.frames())
        self.hub.cancel()
        self.assertEqual(self.subscribed(self.hub.frames()), 2)
        self.log.numbered_writes(2)
        self.hub.feed.learned(self.log.last)
        self.assertEqual(self.hub.frames(), [])
        self.assertEqual(self.hub.session.subscriptions, {})

    def test_cancel_while_catching_up_stops_the_replay(self):
        self.log.numbered_writes(3)
        self.log.hold = True
        self.hub.subscribe(from_position=0)
        self.log.release()  # the relay
        self.log.release()  # the head: confirmed, the first page is being read
        self.assertEqual(len(self.log.held), 1)
        self.hub.cancel()
        self.log.release_all()
        frames = self.hub.frames()
        self.assertEqual([h.type for h, _ in frames], [MessageType.RESPONSE, MessageType.RESPONSE])

    def test_cancel_of_an_unknown_subscription(self):
        self.hub.cancel(request_id=7)
        self.assertError(self.hub.frames(), ErrorCode.NOT_FOUND, 7)

    def test_the_request_id_is_free_again_after_a_cancel(self):
        self.hub.subscribe()
        self.hub.cancel()
        self.hub.subscribe()
        frames = self.hub.frames()
        self.assertEqual([h.type for h, _ in frames], [MessageType.RESPONSE] * 3)


class EndTests(SubscriptionCase):
    def followers(self):
        return sum(len(f) for f in self.hub.feed._followers.values())

    def test_the_clients_shutdown_ends_every_subscription(self):
        self.hub.subscribe(1)
        self.hub.subscribe(2)
        self.assertEqual(self.followers(), 2)
        self.hub.send(wire.shutdown())
        self.assertEqual(self.followers(), 0)
        self.log.numbered_writes(1)
        self.hub.feed.learned(self.log.last)
        self.assertNotIn(MessageType.EVENT, [h.type for h, _ in self.hub.frames()])

    def test_the_hubs_shutdown_ends_every_subscription(self):
        self.hub.subscribe(1)
        self.hub.session.server_shutdown(1.0)
        self.assertEqual(self.followers(), 0)

    def test_losing_the_connection_ends_every_subscription(self):
        self.hub.subscribe(1)
        self.hub.frames()
        self.hub.session.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.followers(), 0)
        self.log.numbered_writes(1)
        self.hub.feed.learned(self.log.last)
        self.assertEqual(self.hub.transport.value(), b"")


class FlowTests(SubscriptionCase):
    """A subscriber that stops reading falls behind, costs no reads while it does not read, and catches up."""

    def test_a_subscriber_that_does_not_read_falls_behind_and_catches_up(self):
        self.hub.subscribe()
        self.subscribed(self.hub.frames())
        self.hub.session.pauseProducing()  # its socket buffer is full
        total = 3 * WINDOW + PAGE // 2
        self.log.numbered_writes(WINDOW)
        self.hub.feed.learned(self.log.last)
        # The window was read for the live ones; this one has not taken what it was sent: it stays behind.
        self.assertEqual(self.hub.frames(), [])
        subscription = self.hub.session.subscriptions[1]
        self.assertFalse(subscription.live)
        reads = self.log.reads
        self.log.numbered_writes(total - WINDOW)
        self.hub.feed.learned(self.log.last)
        self.assertEqual(self.hub.frames(), [])
        self.assertEqual(self.log.reads, reads, "nothing is read for a subscriber that is not reading")
        self.hub.session.resumeProducing()
        self.assertEqual(self.positions(self.hub.frames()), list(range(1, total + 1)))
        self.assertTrue(subscription.live)
        self.log.numbered_writes(1)
        self.hub.feed.learned(self.log.last)
        self.assertEqual(self.positions(self.hub.frames()), [total + 1])

    def test_a_subscriber_that_takes_each_window_before_the_next_stays_live(self):
        """A window larger than the transport's buffer pauses it; drained in time, the next one is live too."""
        self.hub.subscribe()
        self.subscribed(self.hub.frames())
        subscription = self.hub.session.subscriptions[1]
        for window in range(3):
            self.log.numbered_writes(WINDOW)
            self.hub.feed.learned(self.log.last)
            self.hub.session.pauseProducing()  # what the transport does when a window overfills it
            first = window * WINDOW + 1
            self.assertEqual(self.positions(self.hub.frames()), list(range(first, first + WINDOW)))
            self.assertTrue(subscription.live)
            self.hub.session.resumeProducing()  # the client read it all
        self.assertEqual(self.log.reads, 3, "one read per window, shared: no catch-up read")

    def test_a_subscription_that_falls_behind_retention_is_told_and_ends(self):
        self.hub.subscribe()
        self.subscribed(self.hub.frames())
        self.hub.session.pauseProducing()
        self.log.numbered_writes(WINDOW + 5)
        self.hub.feed.learned(self.log.last)
        self.hub.frames()
        self.log.trimmed_through = WINDOW + 3
        self.hub.session.resumeProducing()
        frames = [(h, p) for h, p in self.hub.frames() if h.type != MessageType.EVENT]
        self.assertError(frames, ErrorCode.POSITION_EXPIRED)
        self.assertEqual(self.hub.session.subscriptions, {})
        self.hub.subscribe(2)
        self.assertEqual(self.subscribed(self.hub.frames(), 2), WINDOW + 5)


class MetricsTests(SubscriptionCase):
    def test_subscriptions_events_and_positions_are_scraped(self):
        metrics = self.hub.factory.metrics
        metrics.watch(self.hub.factory.sessions, make_pool("dbname=never_connected"), self.hub.feed)

        def sample(name, **labels):
            return metrics.registry.get_sample_value(name, labels)

        self.hub.subscribe(1)
        self.hub.subscribe(2, table=SQLTable.ORDER)
        self.assertEqual(sample("tradehub_subscriptions", table="ORDER", state="live"), 1)
        self.assertEqual(sample("tradehub_subscriptions", table="ML_PREDICTION", state="live"), 1)
        self.log.numbered_writes(1)
        self.hub.feed.learned(self.log.last)
        self.assertEqual(sample("tradehub_events_sent_total"), 1)
        self.hub.session.pauseProducing()
        self.log.numbered_writes(WINDOW)
        self.hub.feed.learned(self.log.last)
        self.assertEqual(sample("tradehub_subscriptions", table="ML_PREDICTION", state="catching_up"), 1)
        self.assertEqual(sample("tradehub_subscriptions", table="ML_PREDICTION", state="live"), 0)
        self.assertEqual(sample("tradehub_change_log_last_position"), WINDOW + 1)
        self.assertEqual(sample("tradehub_change_log_handed_out_position"), WINDOW + 1)


class FeedTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.log = FakeLog()
        self.feed = Feed(self.log, self.log, self.clock, sweep=1.0, retention=60.0, trim_every=60.0)
        ensureDeferred(self.feed.start())

    def test_relays_while_one_runs_coalesce_into_one_more(self):
        self.log.hold = True
        self.feed.relay()
        for _ in range(5):
            self.feed.relay()
        self.assertEqual(len(self.log.held), 1)
        self.log.release()
        self.assertEqual(len(self.log.held), 1, "one more relay for the five asked meanwhile")
        self.log.release()
        self.assertEqual(self.log.held, [])

    def test_the_sweep_numbers_what_no_relay_saw(self):
        self.log.write(rows.prediction(MODEL))
        self.clock.advance(1.0)
        self.assertEqual(self.log.last, 1)
        self.assertEqual(self.feed.head, 1)

    def test_a_notify_moves_the_head_and_a_bad_payload_is_ignored(self):
        class Notify:
            def __init__(self, payload):
                self.payload = payload

        self.log.numbered_writes(3)
        self.feed.notified(Notify("garbage"))
        self.assertEqual(self.feed.head, 0)
        self.feed.notified(Notify("3"))
        self.assertEqual(self.feed.head, 3)

    def test_a_pending_notify_runs_a_relay(self):
        self.log.write(rows.prediction(MODEL))  # committed by a statement that could not number it
        self.feed.notified(type("Notify", (), {"payload": ChangeLogRepository.PENDING}))
        self.assertEqual((self.log.last, self.feed.head), (1, 1))

    def test_a_window_whose_read_failed_is_read_again_at_the_next_relay(self):
        hub = Hub()
        hub.handshake()
        hub.subscribe()
        hub.frames()
        hub.log.numbered_writes(2)
        failing = hub.log.query
        hub.log.query = lambda statement, params=(): fail(ConnectionError("PostgreSQL went away"))
        hub.feed.learned(hub.log.last)
        self.assertEqual(len(self.flushLoggedErrors(FirstError)), 1)
        self.assertEqual((hub.feed.head, hub.frames()), (0, []))
        hub.log.query = failing
        hub.clock.advance(1.0)  # the sweep: nothing new to number, but the window is read again
        self.assertEqual([e.position for _, e in hub.events(hub.frames())], [1, 2])

    def test_the_trim_runs_with_the_retention_in_seconds(self):
        statements = []
        query = self.log.query
        self.log.query = lambda statement, params=(): statements.append((statement, params)) or query(statement, params)
        self.clock.advance(60.0)
        self.assertIn((ChangeLogRepository.TRIM, (60.0, RELAY_BATCH)), statements)

    def test_stop_ends_the_loops(self):
        self.successResultOf(ensureDeferred(self.feed.stop()))
        self.log.write(rows.prediction(MODEL))
        self.clock.advance(10)
        self.assertEqual(self.log.last, 0)
