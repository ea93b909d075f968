"""
The session state machine, driven byte by byte through StringTransport with
a task.Clock: every row of the contract's error table, the handshake,
heartbeats, ordering, backpressure, coalescing and both shutdowns.
"""

import struct

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tradehub.client.calls import request_frames
from tradehub.errors import Invalid
from tradehub.ops.metrics import Metrics
from tradehub.protocol.enums import (
    FLAG_MORE,
    ErrorCode,
    MessageType,
    Role,
    ShutdownReason,
    SQLCommand,
    SQLTable,
)
from tradehub.protocol.errors import ProtocolError
from tradehub.protocol.messages import HEADER, LENGTH, encode_frame
from tradehub.protocol.wire import Field, Layout, list_of, string
from tradehub.server.hub import HubFactory
from tradehub.server.routes import Registry, Route
from tradehub.server.session import CLOSE_GRACE, State

from . import wire

NOTES = Layout("notes", [Field("notes", list_of(string))])
BIG_NOTES = [f"part {i:04d}" * 50 for i in range(30)]


def notes(*items):
    return NOTES.encode({"notes": list(items)})


# How many frames of max_frame 4096 the big answer takes.
BIG_FRAMES = -(-len(notes(*BIG_NOTES)) // (4096 - 16))


class Controller:
    """Routes whose answers the test releases by hand, recording what ran."""

    def __init__(self):
        self.calls = []
        self.groups = []
        self.fail_group = False

    def handle(self, value):
        waiter = Deferred()
        self.calls.append((value["notes"], waiter))
        return waiter

    def handle_now(self, value):
        if "bad" in value["notes"]:
            raise ProtocolError(
                ErrorCode.VALIDATION_FAILED, "note 'bad' is not allowed", row_index=value["notes"].index("bad")
            )
        return succeed(notes(*value["notes"]))

    def handle_group(self, values):
        self.groups.append([v["notes"] for v in values])
        if self.fail_group:
            raise Invalid("row 1: group failed", 1)
        return succeed([notes(*v["notes"]) for v in values])

    def chunks(self, value):
        return succeed(notes(*BIG_NOTES))

    def registry(self):
        return Registry(
            [
                Route(SQLCommand.INSERT, SQLTable.MARKET_TICK, NOTES, self.handle),
                Route(SQLCommand.INSERT, SQLTable.TRADE, NOTES, self.handle_now, self.handle_group),
                Route(SQLCommand.SELECT, SQLTable.TRADE, NOTES, self.chunks),
                Route(SQLCommand.INSERT, SQLTable.ML_MODEL, NOTES, self.handle_now),
            ]
        )


class Harness:
    def __init__(self, controller=None, max_in_flight=4, max_frame=4096, max_request=None):
        self.controller = controller or Controller()
        self.clock = Clock()
        self.factory = HubFactory(
            self.controller.registry(),
            wire.TOKENS,
            self.clock,
            handshake_timeout=10,
            heartbeat_ms=1000,
            max_frame=max_frame,
            max_in_flight=max_in_flight,
            max_request=max_request,
            metrics=Metrics(),
        )
        self.transport = StringTransport()
        self.protocol = self.factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        self.reader = wire.Reader()

    def send(self, data):
        self.protocol.dataReceived(data)

    def frames(self):
        data = self.transport.value()
        self.transport.clear()
        return self.reader.feed(data)

    def handshake(self, role=Role.FRONTEND):
        self.send(wire.hello(role))
        [(header, ack)] = self.frames()
        assert header.type == MessageType.HELLO_ACK, header
        return ack

    def lose(self):
        self.protocol.connectionLost(Failure(ConnectionDone()))


class SessionCase(SynchronousTestCase):
    def setUp(self):
        self.hub = Harness()

    def assertError(self, frames, code, request_id=0, closed=None, row_index=-1):
        [(header, error)] = frames
        self.assertEqual(header.type, MessageType.ERROR)
        self.assertEqual(ErrorCode(error.code), code, error.message)
        self.assertEqual(header.request_id, request_id)
        self.assertEqual(error.row_index, row_index)
        if closed is None:
            closed = code.closes
        self.assertEqual(self.hub.transport.disconnecting, closed)
        return error


class HandshakeTests(SessionCase):
    def test_hello_gets_ack_with_negotiated_settings(self):
        ack = self.hub.handshake()
        self.assertEqual(ack.version, 1)
        self.assertEqual((ack.heartbeat_ms, ack.max_frame, ack.max_in_flight), (1000, 4096, 4))
        self.assertEqual(ack.server_name, "tradehub")
        self.assertEqual(self.hub.protocol.state, State.READY)

    def test_session_ids_are_unique(self):
        first = self.hub.handshake().session_id
        other = Harness()
        other.factory = self.hub.factory
        protocol = self.hub.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(wire.hello(Role.ML))
        [(_, ack)] = wire.Reader().feed(transport.value())
        self.assertNotEqual(first, ack.session_id)

    def test_version_range_picks_highest_common(self):
        self.hub.send(wire.hello(min_version=1, max_version=7))
        [(_, ack)] = self.hub.frames()
        self.assertEqual(ack.version, 1)

    def test_request_before_hello_is_not_handshaken(self):
        self.hub.send(wire.request(SQLCommand.SELECT, SQLTable.TRADE, notes(), request_id=5))
        self.assertError(self.hub.frames(), ErrorCode.NOT_HANDSHAKEN, request_id=5)
        self.assertEqual(self.hub.protocol.state, State.CLOSED)

    def test_no_common_version_is_unsupported(self):
        self.hub.send(wire.hello(min_version=2, max_version=3))
        self.assertError(self.hub.frames(), ErrorCode.UNSUPPORTED_VERSION)

    def test_wrong_token_closes_with_auth_failed(self):
        self.hub.send(wire.hello(Role.ML, token="frontend-token"))
        self.assertError(self.hub.frames(), ErrorCode.AUTH_FAILED)

    def test_unknown_role_closes_with_auth_failed(self):
        self.hub.send(wire.hello(role=9, token="x"))
        self.assertError(self.hub.frames(), ErrorCode.AUTH_FAILED)

    def test_undecodable_hello_is_malformed_and_closes(self):
        self.hub.send(encode_frame(MessageType.HELLO, b"\x01\x01"))
        self.assertError(self.hub.frames(), ErrorCode.MALFORMED_PAYLOAD, closed=True)

    def test_no_hello_within_timeout_disconnects(self):
        self.hub.clock.advance(9.9)
        self.assertEqual(self.hub.frames(), [])
        self.hub.clock.advance(0.1)
        self.assertError(self.hub.frames(), ErrorCode.NOT_HANDSHAKEN)

    def test_partial_hello_at_timeout_still_disconnects(self):
        self.hub.send(wire.hello()[:10])
        self.hub.clock.advance(10)
        self.assertError(self.hub.frames(), ErrorCode.NOT_HANDSHAKEN)

    def test_hello_one_byte_at_a_time(self):
        for byte in wire.hello():
            self.hub.send(bytes([byte]))
        [(header, ack)] = self.hub.frames()
        self.assertEqual(header.type, MessageType.HELLO_ACK)
        for _ in range(12):
            self.hub.clock.advance(1)
            self.hub.send(wire.heartbeat())
        self.assertFalse(self.hub.transport.disconnecting, "the handshake timer must stop at HELLO")

    def test_token_not_logged(self):
        events = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.hub.send(wire.hello(Role.ML, token="secret-guess"))
        self.assertTrue(events)
        self.assertNotIn("secret-guess", repr(events))
        self.assertNotIn(wire.ML_TOKEN, repr(events))


class FramingTests(SessionCase):
    def test_bad_magic(self):
        frame = bytearray(wire.hello())
        frame[4:6] = b"XX"
        self.hub.send(bytes(frame))
        self.assertIn("bad magic", self.assertError(self.hub.frames(), ErrorCode.BAD_FRAME).message)

    def test_bad_version_byte(self):
        self.hub.handshake()
        frame = bytearray(wire.heartbeat())
        frame[6] = 2
        self.hub.send(bytes(frame))
        self.assertIn("version", self.assertError(self.hub.frames(), ErrorCode.BAD_FRAME).message)

    def test_length_below_header(self):
        self.hub.send(LENGTH.pack(15) + b"\0" * 15)
        self.assertError(self.hub.frames(), ErrorCode.BAD_FRAME)

    def test_length_above_maximum(self):
        self.hub.handshake()
        self.hub.send(LENGTH.pack(4097))
        self.assertError(self.hub.frames(), ErrorCode.FRAME_TOO_LARGE)

    def test_four_gigabyte_length_allocates_nothing(self):
        self.hub.send(LENGTH.pack(0xFFFFFFFF) + b"\0" * 12)
        self.assertError(self.hub.frames(), ErrorCode.FRAME_TOO_LARGE)
        self.assertLessEqual(self.hub.protocol._decoder.buffered, 16)

    def test_bad_magic_detected_before_the_body_arrives(self):
        header = HEADER.encode(dict(magic=0x1234, version=1, type=3, command=1, table=1, flags=0, request_id=1))
        self.hub.send(LENGTH.pack(4000) + header)
        self.assertError(self.hub.frames(), ErrorCode.BAD_FRAME)

    def test_data_after_close_is_ignored(self):
        self.hub.send(LENGTH.pack(3))
        self.hub.frames()
        self.hub.send(wire.hello())
        self.assertEqual(self.hub.frames(), [])


class RequestErrorTests(SessionCase):
    def setUp(self):
        super().setUp()
        self.hub.handshake()

    def test_permission_denied_stays_open(self):
        self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.ML_MODEL, notes("x"), request_id=3))
        self.assertError(self.hub.frames(), ErrorCode.PERMISSION_DENIED, request_id=3)

    def test_ml_role_may_write_its_tables_and_read_all(self):
        hub = Harness()
        hub.handshake(Role.ML)
        hub.send(wire.request(SQLCommand.INSERT, SQLTable.ML_MODEL, notes("m"), request_id=1))
        hub.send(wire.request(SQLCommand.SELECT, SQLTable.TRADE, notes(), request_id=2))
        hub.send(wire.request(SQLCommand.INSERT, SQLTable.TRADE, notes("t"), request_id=3))
        frames = hub.frames()
        self.assertEqual([h.type for h, _ in frames], [MessageType.RESPONSE] * (1 + BIG_FRAMES) + [MessageType.ERROR])
        self.assertEqual(ErrorCode(frames[-1][1].code), ErrorCode.PERMISSION_DENIED)

    def test_unknown_type_stays_open(self):
        self.hub.send(encode_frame(99, b"", request_id=4))
        self.assertError(self.hub.frames(), ErrorCode.UNKNOWN_TYPE, request_id=4)

    def test_reserved_and_server_only_types_are_unknown_from_clients(self):
        for message_type in (MessageType.SUBSCRIBE, MessageType.HELLO, MessageType.RESPONSE, MessageType.EVENT):
            self.hub.send(encode_frame(message_type, b"", request_id=7))
            self.assertError(self.hub.frames(), ErrorCode.UNKNOWN_TYPE, request_id=7)

    def test_unknown_table_stays_open(self):
        for table in (0, 12, 255):
            self.hub.send(wire.request(SQLCommand.SELECT, table, b"", request_id=8))
            self.assertError(self.hub.frames(), ErrorCode.UNKNOWN_TABLE, request_id=8)

    def test_unknown_command_stays_open(self):
        for command in (0, 6):
            self.hub.send(wire.request(command, SQLTable.TRADE, b"", request_id=9))
            self.assertError(self.hub.frames(), ErrorCode.UNKNOWN_COMMAND, request_id=9)

    def test_malformed_payload_stays_open(self):
        self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.TRADE, notes("x") + b"junk", request_id=10))
        self.assertError(self.hub.frames(), ErrorCode.MALFORMED_PAYLOAD, request_id=10)

    def test_invalid_utf8_is_malformed(self):
        payload = struct.pack("<IH", 1, 2) + b"\xff\xfe"
        self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.TRADE, payload, request_id=11))
        error = self.assertError(self.hub.frames(), ErrorCode.MALFORMED_PAYLOAD, request_id=11)
        self.assertIn("UTF-8", error.message)

    def test_controller_errors_pass_through_with_row_index(self):
        self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.TRADE, notes("ok", "bad"), request_id=12))
        self.assertError(self.hub.frames(), ErrorCode.VALIDATION_FAILED, request_id=12, row_index=1)

    def test_every_open_error_code_from_a_controller_keeps_the_session(self):
        codes = [c for c in ErrorCode if not c.closes]
        controller = Controller()
        hub = Harness(controller)
        hub.handshake()
        for index, code in enumerate(codes):
            hub.send(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, notes(code.name), request_id=100 + index))
            controller.calls[-1][1].errback(ProtocolError(code, f"{code.name} from below"))
            [(header, error)] = hub.frames()
            self.assertEqual((header.request_id, ErrorCode(error.code)), (100 + index, code))
        self.assertFalse(hub.transport.disconnecting)
        self.assertEqual(hub.protocol.state, State.READY)

    def test_unexpected_exception_becomes_internal(self):
        controller = Controller()
        hub = Harness(controller)
        hub.handshake()
        hub.send(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, notes("x"), request_id=5))
        events = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        controller.calls[0][1].errback(ZeroDivisionError("boom"))
        [(header, error)] = hub.frames()
        self.assertEqual(ErrorCode(error.code), ErrorCode.INTERNAL)
        self.assertNotIn("boom", error.message)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        [logged] = [e for e in events if "log_failure" in e]
        self.assertEqual(
            (logged["session_id"], logged["role"], logged["request_id"]), (hub.protocol.session_id, "FRONTEND", 5)
        )

    def test_unregistered_table_is_not_implemented_not_unknown(self):
        self.hub.send(wire.request(SQLCommand.SELECT, SQLTable.POSITION, b"", request_id=13))
        error = self.assertError(self.hub.frames(), ErrorCode.INTERNAL, request_id=13)
        self.assertIn("not implemented", error.message)


class OrderingTests(SessionCase):
    def setUp(self):
        super().setUp()
        self.hub.handshake()
        self.controller = self.hub.controller

    def test_pipelined_requests_run_one_at_a_time_and_answer_in_order(self):
        for request_id in (1, 2, 3):
            self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, notes(str(request_id)), request_id))
        self.assertEqual(len(self.controller.calls), 1)
        self.controller.calls[0][1].callback(notes("one"))
        self.assertEqual(len(self.controller.calls), 2)
        self.controller.calls[1][1].callback(notes("two"))
        self.controller.calls[2][1].callback(notes("three"))
        frames = self.hub.frames()
        self.assertEqual([h.request_id for h, _ in frames], [1, 2, 3])

    def test_error_for_a_later_request_waits_for_earlier_answers(self):
        self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, notes("a"), request_id=1))
        self.hub.send(wire.request(SQLCommand.SELECT, 77, b"", request_id=2))
        self.assertEqual(self.hub.frames(), [])
        self.controller.calls[0][1].callback(notes("a"))
        self.assertEqual([h.request_id for h, _ in self.hub.frames()], [1, 2])

    def test_many_frames_in_one_packet(self):
        packet = b"".join(wire.request(SQLCommand.INSERT, SQLTable.TRADE, notes(str(i)), i) for i in range(1, 51))
        controller = Controller()
        hub = Harness(controller, max_in_flight=100)
        hub.handshake()
        hub.send(packet)
        frames = hub.frames()
        self.assertEqual([h.request_id for h, _ in frames], list(range(1, 51)))

    def test_requests_one_byte_at_a_time(self):
        packet = wire.request(SQLCommand.INSERT, SQLTable.TRADE, notes("x"), 1) + wire.request(
            SQLCommand.INSERT, SQLTable.TRADE, notes("y"), 2
        )
        for byte in packet:
            self.hub.send(bytes([byte]))
        self.assertEqual([h.request_id for h, _ in self.hub.frames()], [1, 2])

    def test_large_result_is_split_over_frames_with_more_flag(self):
        self.hub.send(wire.request(SQLCommand.SELECT, SQLTable.TRADE, notes(), request_id=21))
        frames = self.hub.frames()
        self.assertEqual([(h.request_id, h.flags) for h, _ in frames], [(21, FLAG_MORE)] * (BIG_FRAMES - 1) + [(21, 0)])
        self.assertTrue(all(len(p) <= 4096 - 16 for _, p in frames))
        whole = NOTES.decode(b"".join(p for _, p in frames))
        self.assertEqual(whole["notes"], BIG_NOTES)


class CoalescingTests(SessionCase):
    def setUp(self):
        super().setUp()
        self.hub = Harness(max_in_flight=100)
        self.hub.handshake()
        self.controller = self.hub.controller

    def queue_behind_a_running_request(self, count):
        self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, notes("first"), request_id=1))
        for i in range(count):
            self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.TRADE, notes(f"n{i}"), request_id=10 + i))

    def test_consecutive_inserts_are_served_as_one_group_each_answered(self):
        self.queue_behind_a_running_request(5)
        self.controller.calls[0][1].callback(notes("first"))
        self.assertEqual(self.controller.groups, [[["n0"], ["n1"], ["n2"], ["n3"], ["n4"]]])
        frames = self.hub.frames()
        self.assertEqual([h.request_id for h, _ in frames], [1, 10, 11, 12, 13, 14])
        self.assertEqual([NOTES.decode(p)["notes"] for _, p in frames[1:]], [["n0"], ["n1"], ["n2"], ["n3"], ["n4"]])

    def test_a_groups_answers_leave_in_one_write(self):
        self.queue_behind_a_running_request(5)
        self.controller.calls[0][1].callback(notes("first"))
        self.hub.frames()
        writes = []
        self.hub.transport.write = writes.append
        self.queue_behind_a_running_request(3)
        self.controller.calls[-1][1].callback(notes("first"))
        self.assertEqual(len(writes), 2, "the lone request's answer, then the group's three in one write")
        self.assertEqual([h.request_id for h, _ in wire.Reader().feed(b"".join(writes))], [1, 10, 11, 12])

    def test_failed_group_gives_each_request_its_own_answer(self):
        self.controller.fail_group = True
        self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, notes("first"), request_id=1))
        for i, note in enumerate(["ok", "bad", "ok2"]):
            self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.TRADE, notes(note), request_id=10 + i))
        self.controller.calls[0][1].callback(notes("first"))
        frames = self.hub.frames()
        self.assertEqual(
            [(h.request_id, h.type) for h, _ in frames],
            [
                (1, MessageType.RESPONSE),
                (10, MessageType.RESPONSE),
                (11, MessageType.ERROR),
                (12, MessageType.RESPONSE),
            ],
        )

    def test_groups_never_cross_another_route(self):
        self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, notes("first"), request_id=1))
        self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.TRADE, notes("a"), request_id=2))
        self.hub.send(wire.request(SQLCommand.SELECT, SQLTable.TRADE, notes(), request_id=3))
        self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.TRADE, notes("b"), request_id=4))
        self.controller.calls[0][1].callback(notes("first"))
        self.assertEqual(self.controller.groups, [])
        self.assertEqual([h.request_id for h, _ in self.hub.frames()], [1, 2] + [3] * BIG_FRAMES + [4])


class BackpressureTests(SessionCase):
    def setUp(self):
        super().setUp()
        self.hub = Harness(max_in_flight=4)
        self.hub.handshake()
        self.controller = self.hub.controller

    def send_pending(self, count):
        for i in range(count):
            self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, notes(str(i)), request_id=i + 1))

    def test_reading_pauses_at_max_in_flight_and_resumes_at_low_water(self):
        self.send_pending(3)
        self.assertEqual(self.hub.transport.producerState, "producing")
        self.send_pending(1)
        self.assertEqual(self.hub.transport.producerState, "paused")
        self.controller.calls[0][1].callback(b"")
        self.assertEqual(self.hub.transport.producerState, "paused")
        self.controller.calls[1][1].callback(b"")
        self.assertEqual(self.hub.transport.producerState, "producing")

    def test_reading_pauses_once_unanswered_requests_hold_max_request_bytes(self):
        hub = Harness(max_in_flight=100, max_frame=16_384, max_request=20_000)
        hub.handshake()
        big = notes("x" * 6_000)
        for request_id in (1, 2, 3):
            self.assertEqual(hub.transport.producerState, "producing")
            hub.send(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, big, request_id=request_id))
        self.assertEqual(hub.transport.producerState, "producing", "18 kB of 20 kB held")
        hub.send(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, big, request_id=4))
        self.assertEqual(hub.transport.producerState, "paused", "4 requests, far below max_in_flight")
        hub.controller.calls[0][1].callback(b"")
        self.assertEqual(hub.transport.producerState, "paused", "18 kB still held")
        hub.controller.calls[1][1].callback(b"")
        self.assertEqual(hub.transport.producerState, "paused", "12 kB: above half of max_request")
        hub.controller.calls[2][1].callback(b"")
        self.assertEqual(hub.transport.producerState, "producing", "6 kB: below half")
        hub.send(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, big, request_id=5))
        hub.lose()  # request 5 waits behind 4, and is dropped
        hub.controller.calls[3][1].callback(b"")
        self.assertEqual((hub.protocol.in_flight, hub.protocol.in_flight_bytes), (0, 0))

    def test_full_write_buffer_stops_the_lane(self):
        self.hub.protocol.pauseProducing()
        self.send_pending(1)
        self.assertEqual(self.controller.calls, [])
        self.hub.protocol.resumeProducing()
        self.assertEqual(len(self.controller.calls), 1)


class HeartbeatTests(SessionCase):
    def setUp(self):
        super().setUp()
        self.hub.handshake()

    def test_heartbeat_sent_after_an_idle_interval(self):
        self.hub.clock.advance(0.999)
        self.assertEqual(self.hub.frames(), [])
        self.hub.clock.advance(0.001)
        [(header, _)] = self.hub.frames()
        self.assertEqual((header.type, header.request_id), (MessageType.HEARTBEAT, 0))

    def test_other_frames_postpone_the_heartbeat(self):
        self.hub.clock.advance(0.6)
        self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.TRADE, notes("x"), 1))
        self.hub.frames()
        self.hub.clock.advance(0.6)
        self.assertEqual(self.hub.frames(), [])
        self.hub.clock.advance(0.4)
        self.assertEqual([h.type for h, _ in self.hub.frames()], [MessageType.HEARTBEAT])

    def test_silent_peer_is_told_why_and_half_closed_after_three_intervals(self):
        for _ in range(2):
            self.hub.clock.advance(1)
            self.hub.send(wire.heartbeat())
        self.hub.clock.advance(2.9)
        self.assertFalse(self.hub.transport.disconnecting)
        self.hub.frames()
        self.hub.clock.advance(0.1)
        error = self.assertError(self.hub.frames(), ErrorCode.BAD_FRAME)
        self.assertIn("nothing received for 3.0s", error.message)
        self.assertFalse(self.hub.transport.disconnected, "an abort would send RST and could destroy the ERROR")

    def test_silent_peer_that_never_lets_the_close_finish_is_aborted_after_the_grace(self):
        self.hub.clock.advance(3)
        self.assertTrue(self.hub.transport.disconnecting)
        self.hub.clock.advance(CLOSE_GRACE - 0.1)
        self.assertFalse(self.hub.transport.disconnected)
        self.hub.clock.advance(0.1)
        self.assertTrue(self.hub.transport.disconnected)

    def test_silent_peer_with_running_work_drops_only_what_had_not_started(self):
        hub = Harness(max_in_flight=10)
        hub.handshake()
        for i in (1, 2, 3):
            hub.send(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, notes(str(i)), i))
        hub.clock.advance(3)
        self.assertTrue(hub.transport.disconnecting)
        hub.controller.calls[0][1].callback(b"")
        self.assertEqual(len(hub.controller.calls), 1, "queued requests must not run once the peer is cut")
        hub.lose()
        self.assertEqual(len(hub.factory.sessions), 0)


class HandshakenCase(SessionCase):
    """A session past its handshake that may have ten requests in flight."""

    def setUp(self):
        super().setUp()
        self.hub = Harness(max_in_flight=10)
        self.hub.handshake()
        self.controller = self.hub.controller


class ClosingTests(HandshakenCase):
    def bad_frame(self):
        frame = bytearray(wire.heartbeat())
        frame[4:6] = b"XX"
        return bytes(frame)

    def test_requests_not_started_when_a_closing_error_closes_are_not_executed(self):
        for i in (1, 2):
            self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, notes(str(i)), i))
        self.hub.send(self.bad_frame())
        self.assertError(self.hub.frames(), ErrorCode.BAD_FRAME)
        self.controller.calls[0][1].callback(notes("1"))
        self.assertEqual(len(self.controller.calls), 1, "request 2 could never be answered: it must not run")
        self.assertEqual(self.hub.frames(), [])

    def test_a_session_closed_while_its_client_does_not_read_leaves_the_hub(self):
        self.hub.protocol.pauseProducing()
        self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, notes("1"), 1))
        self.hub.send(self.bad_frame())
        self.hub.lose()
        self.assertEqual(self.controller.calls, [])
        self.assertEqual(len(self.hub.factory.sessions), 0)


class ShutdownTests(HandshakenCase):
    def test_client_shutdown_answers_pending_then_acks_and_closes(self):
        for i in (1, 2):
            self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, notes(str(i)), i))
        self.hub.send(wire.shutdown())
        self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.TRADE, notes("late"), 3))
        self.assertEqual(self.hub.protocol.state, State.DRAINING)
        self.controller.calls[0][1].callback(b"1")
        self.controller.calls[1][1].callback(b"2")
        frames = self.hub.frames()
        self.assertEqual(
            [h.type for h, _ in frames],
            [MessageType.RESPONSE, MessageType.RESPONSE, MessageType.ERROR, MessageType.SHUTDOWN_ACK],
        )
        self.assertEqual(ErrorCode(frames[2][1].code), ErrorCode.SHUTTING_DOWN)
        self.assertEqual(frames[3][1].completed, 3)
        self.assertTrue(self.hub.transport.disconnecting)

    def test_server_shutdown_drains_received_work_and_refuses_later(self):
        self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, notes("1"), 1))
        done = self.hub.factory.drain(5)
        [(header, shutdown)] = self.hub.frames()
        self.assertEqual(
            (header.type, shutdown.reason, shutdown.deadline_ms),
            (MessageType.SHUTDOWN, ShutdownReason.SERVER_STOPPING, 5000),
        )
        self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.TRADE, notes("late"), 2))
        self.controller.calls[0][1].callback(b"1")
        frames = self.hub.frames()
        self.assertEqual(
            [(h.request_id, h.type) for h, _ in frames], [(1, MessageType.RESPONSE), (2, MessageType.ERROR)]
        )
        self.assertEqual(ErrorCode(frames[1][1].code), ErrorCode.SHUTTING_DOWN)
        self.assertTrue(self.hub.transport.disconnecting)
        self.assertNoResult(done)
        self.hub.lose()
        self.successResultOf(done)

    def test_deadline_refuses_unstarted_requests_after_the_running_one_is_answered(self):
        for i in (1, 2, 3):
            self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, notes(str(i)), i))
        done = self.hub.factory.drain(2)
        self.hub.frames()
        self.hub.clock.advance(2)
        self.assertEqual([h.type for h, _ in self.hub.frames()], [MessageType.HEARTBEAT])
        self.assertFalse(self.hub.transport.disconnecting, "the running request must finish first")
        self.controller.calls[0][1].callback(b"1")
        frames = self.hub.frames()
        self.assertEqual(
            [(h.request_id, h.type) for h, _ in frames],
            [(1, MessageType.RESPONSE), (2, MessageType.ERROR), (3, MessageType.ERROR)],
        )
        self.assertEqual({ErrorCode(e.code) for _, e in frames[1:]}, {ErrorCode.SHUTTING_DOWN})
        self.assertEqual(len(self.controller.calls), 1, "refused requests must not run")
        self.assertTrue(self.hub.transport.disconnecting)
        self.hub.lose()
        self.successResultOf(done)

    def test_close_half_closes_and_keeps_reading_so_unread_requests_cause_no_reset(self):
        class HalfClosing(StringTransport):
            write_closed = False

            def loseWriteConnection(self):
                self.write_closed = True

        hub = Harness(max_in_flight=2)
        hub.transport = HalfClosing()
        hub.protocol = hub.factory.buildProtocol(None)
        hub.protocol.makeConnection(hub.transport)
        hub.handshake()
        for i in (1, 2):
            hub.send(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, notes(str(i)), i))
        self.assertEqual(hub.transport.producerState, "paused")
        hub.factory.drain(5)
        hub.controller.calls[0][1].callback(notes("1"))
        hub.controller.calls[1][1].callback(notes("2"))
        self.assertTrue(hub.transport.write_closed)
        self.assertFalse(hub.transport.disconnecting, "a full close with unread data would send RST")
        self.assertEqual(hub.transport.producerState, "producing", "reading must go on to drain the client's data")
        hub.send(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, notes("late"), 3))
        self.assertEqual(len(hub.controller.calls), 2)
        hub.clock.advance(5)
        self.assertTrue(hub.transport.disconnected, "a client that never closes is cut after the grace")

    def insert(self, request_id, table=SQLTable.TRADE):
        return wire.request(SQLCommand.INSERT, table, notes(str(request_id)), request_id)

    def answers(self):
        return [
            (h.request_id, h.type, ErrorCode(p.code) if h.type == MessageType.ERROR else None)
            for h, p in self.hub.frames()
        ]

    def test_server_drain_answers_a_request_whose_first_bytes_came_before_the_queue_emptied(self):
        self.hub.send(self.insert(1, SQLTable.MARKET_TICK))
        self.hub.factory.drain(5)
        self.hub.frames()
        third = self.insert(3)
        self.hub.send(self.insert(2) + third[:10])
        self.controller.calls[0][1].callback(notes("1"))
        self.assertEqual(
            self.answers(), [(1, MessageType.RESPONSE, None), (2, MessageType.ERROR, ErrorCode.SHUTTING_DOWN)]
        )
        self.assertFalse(self.hub.transport.disconnecting, "request 3 is arriving: closing now would drop it")
        self.hub.send(third[10:] + self.insert(4))
        self.assertEqual(
            self.answers(),
            [(3, MessageType.ERROR, ErrorCode.SHUTTING_DOWN), (4, MessageType.ERROR, ErrorCode.SHUTTING_DOWN)],
        )
        self.assertTrue(self.hub.transport.disconnecting)

    def test_server_drain_answers_a_chunked_request_begun_before_the_queue_emptied(self):
        self.hub.send(self.insert(1, SQLTable.MARKET_TICK))
        self.hub.factory.drain(5)
        self.hub.frames()
        chunked = request_frames(notes("x" * 3000), 2, SQLCommand.INSERT, SQLTable.TRADE, 1016)
        first_frame = 4 + 1016
        self.hub.send(chunked[:first_frame])
        self.controller.calls[0][1].callback(notes("1"))
        self.assertEqual(self.answers(), [(1, MessageType.RESPONSE, None)])
        self.assertFalse(self.hub.transport.disconnecting, "request 2 has begun: closing now would drop it")
        self.hub.send(chunked[first_frame:])
        self.assertEqual(self.answers(), [(2, MessageType.ERROR, ErrorCode.SHUTTING_DOWN)])
        self.assertTrue(self.hub.transport.disconnecting)

    def test_past_the_deadline_a_request_partly_in_no_longer_holds_the_session(self):
        self.hub.send(self.insert(1)[:10])
        self.hub.factory.drain(2)
        self.hub.clock.advance(1.9)
        self.assertFalse(self.hub.transport.disconnecting)
        self.hub.clock.advance(0.1)
        self.assertTrue(self.hub.transport.disconnecting)

    def test_client_shutdown_on_an_idle_session_refuses_requests_that_follow_in_the_same_read(self):
        self.hub.send(wire.shutdown() + self.insert(3) + self.insert(4))
        frames = self.hub.frames()
        self.assertEqual(
            [(h.request_id, h.type) for h, _ in frames],
            [(3, MessageType.ERROR), (4, MessageType.ERROR), (0, MessageType.SHUTDOWN_ACK)],
        )
        self.assertEqual({ErrorCode(error.code) for _, error in frames[:2]}, {ErrorCode.SHUTTING_DOWN})
        self.assertEqual(frames[2][1].completed, 2)
        self.assertTrue(self.hub.transport.disconnecting)

    def test_client_shutdown_waits_for_a_request_whose_first_bytes_came_with_it(self):
        request = self.insert(3)
        self.hub.send(wire.shutdown() + request[:5])
        self.assertEqual(self.hub.frames(), [])
        self.hub.send(request[5:])
        self.assertEqual(
            [(h.request_id, h.type) for h, _ in self.hub.frames()],
            [(3, MessageType.ERROR), (0, MessageType.SHUTDOWN_ACK)],
        )

    def test_drain_gives_up_on_work_that_never_finishes(self):
        self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, notes("stuck"), 1))
        done = self.hub.factory.drain(2)
        self.hub.clock.advance(2 + 4.9)
        self.assertNoResult(done)
        self.hub.clock.advance(0.1)
        self.successResultOf(done)
        self.assertTrue(self.hub.transport.disconnected)
        self.assertEqual(len(self.hub.factory.sessions), 0)

    def test_drain_closes_sessions_that_never_said_hello(self):
        hub = Harness()
        done = hub.factory.drain(5)
        self.assertTrue(hub.transport.disconnecting)
        hub.lose()
        self.successResultOf(done)


class ChunkedRequestTests(SessionCase):
    def setUp(self):
        super().setUp()
        self.hub = Harness(max_in_flight=10, max_request=20_000)
        self.hub.handshake()

    def chunked(self, payload, request_id, room=1000):
        return request_frames(payload, request_id, SQLCommand.INSERT, SQLTable.TRADE, room + 16)

    def test_request_split_over_frames_is_joined_and_answered_once(self):
        payload = notes(*(f"note {i}" * 20 for i in range(40)))
        self.assertGreater(len(payload), 3000)
        self.hub.send(self.chunked(payload, 5))
        frames = self.hub.frames()
        self.assertEqual({(h.request_id, h.type) for h, _ in frames}, {(5, MessageType.RESPONSE)})
        answer = b"".join(p for _, p in frames)
        self.assertEqual(NOTES.decode(answer)["notes"], [f"note {i}" * 20 for i in range(40)])

    def test_request_interrupted_by_another_is_malformed_and_the_other_runs(self):
        first = self.chunked(notes("x" * 3000), 5)
        self.hub.send(first[: 4 + 16 + 1000])
        self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.TRADE, notes("y"), 6))
        frames = self.hub.frames()
        self.assertEqual(
            [(h.request_id, h.type) for h, _ in frames], [(5, MessageType.ERROR), (6, MessageType.RESPONSE)]
        )
        self.assertIn("chunked request", frames[0][1].message)

    def test_request_beyond_max_request_is_refused_and_the_session_goes_on(self):
        self.hub.send(self.chunked(notes("z" * 30_000), 7))
        self.hub.send(wire.request(SQLCommand.INSERT, SQLTable.TRADE, notes("ok"), 8))
        frames = self.hub.frames()
        self.assertEqual(
            [(h.request_id, h.type) for h, _ in frames], [(7, MessageType.ERROR), (8, MessageType.RESPONSE)]
        )
        self.assertEqual(ErrorCode(frames[0][1].code), ErrorCode.MALFORMED_PAYLOAD)
        self.assertFalse(self.hub.transport.disconnecting)
