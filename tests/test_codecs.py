"""Every field type and every session payload: decode(encode(x)) == x, and bad bytes refused."""

import datetime
import decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tradehub.protocol.enums import ErrorCode
from tradehub.protocol.errors import ProtocolError
from tradehub.protocol.framing import FrameDecoder
from tradehub.protocol.messages import (
    ERROR,
    HEADER,
    HELLO,
    HELLO_ACK,
    SHUTDOWN,
    SHUTDOWN_ACK,
    Error,
    Header,
    Hello,
    HelloAck,
    Shutdown,
    ShutdownAck,
    encode_frame,
)
from tradehub.protocol.wire import (
    I64_MAX,
    I64_MIN,
    Field,
    Layout,
    Timestamp,
    blob,
    boolean,
    decimal_,
    f64,
    i32,
    i64,
    list_of,
    opt,
    string,
    text,
    timestamp,
    u8,
    u16,
    u32,
    u64,
)

settings.register_profile("tradehub", max_examples=200, deadline=None)
settings.load_profile("tradehub")


def _ints(bits, signed):
    if signed:
        return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return st.integers(0, 2**bits - 1)


decimals = st.integers(I64_MIN, I64_MAX).map(lambda units: decimal.Decimal(units).scaleb(-9))
timestamps = st.integers(I64_MIN, I64_MAX).map(Timestamp)
short_text = st.text(max_size=50)
STRATEGIES = {
    u8: _ints(8, False),
    u16: _ints(16, False),
    u32: _ints(32, False),
    u64: _ints(64, False),
    i32: _ints(32, True),
    i64: _ints(64, True),
    f64: st.floats(allow_nan=False),
    boolean: st.booleans(),
    timestamp: timestamps,
    decimal_: decimals,
    string: short_text,
    text: st.text(max_size=300),
    blob: st.binary(max_size=300),
}


def single(wire_type):
    return Layout("one", [Field("value", wire_type)])


class FieldRoundTripTests(SynchronousTestCase):
    def check(self, wire_type, strategy):
        layout = single(wire_type)

        @given(strategy)
        def round_trip(value):
            self.assertEqual(layout.decode(layout.encode({"value": value}))["value"], value)

        round_trip()

    def test_every_scalar_type(self):
        for wire_type, strategy in STRATEGIES.items():
            self.check(wire_type, strategy)

    def test_opt_of_every_type(self):
        for wire_type, strategy in STRATEGIES.items():
            self.check(opt(wire_type), st.none() | strategy)

    def test_list_of_every_type(self):
        for wire_type, strategy in STRATEGIES.items():
            self.check(list_of(wire_type), st.lists(strategy, max_size=5))

    def test_nested_list_of_opt(self):
        self.check(list_of(opt(decimal_)), st.lists(st.none() | decimals, max_size=5))


class ExtremeValueTests(SynchronousTestCase):
    def round_trip(self, wire_type, value):
        layout = single(wire_type)
        return layout.decode(layout.encode({"value": value}))["value"]

    def test_empty_and_maximal_str(self):
        self.assertEqual(self.round_trip(string, ""), "")
        longest = "é" * 32767 + "x"
        self.assertEqual(len(longest.encode()), 65535)
        self.assertEqual(self.round_trip(string, longest), longest)

    def test_str_over_65535_bytes_refused(self):
        with self.assertRaises(ProtocolError) as caught:
            single(string).encode({"value": "x" * 65536})
        self.assertEqual(caught.exception.code, ErrorCode.VALIDATION_FAILED)

    def test_negative_and_maximal_decimals(self):
        for value in ("-9223372036.854775808", "9223372036.854775807", "-0.000000001", "0", "1.5"):
            self.assertEqual(self.round_trip(decimal_, decimal.Decimal(value)), decimal.Decimal(value))

    def test_decimal_is_exact_units(self):
        self.assertEqual(single(decimal_).encode({"value": decimal.Decimal("1.5")}), (1500000000).to_bytes(8, "little"))

    def test_decimals_that_do_not_fit_are_refused(self):
        for value in ("0.0000000001", "9223372036.854775808", "NaN", "Infinity", "1.0000000000000000000000000001"):
            self.assertRaises(ProtocolError, single(decimal_).encode, {"value": decimal.Decimal(value)})

    def test_timestamps_before_1970_and_at_the_extremes(self):
        for ns in (-1, -(10**18), I64_MIN, I64_MAX, 0):
            self.assertEqual(self.round_trip(timestamp, Timestamp(ns)), Timestamp(ns))

    def test_timestamp_keeps_nanoseconds_and_converts_to_utc(self):
        moment = datetime.datetime(1969, 7, 20, 20, 17, 40, 123456, tzinfo=datetime.UTC)
        stamp = Timestamp.from_datetime(moment)
        self.assertEqual(stamp.to_datetime(), moment)
        self.assertEqual(str(Timestamp(stamp.ns + 789)), "1969-07-20T20:17:40.123456789Z")
        self.assertRaises(ValueError, Timestamp.from_datetime, datetime.datetime(2020, 1, 1))

    def test_bool_bytes_other_than_0_and_1_refused(self):
        self.assertRaises(ProtocolError, single(boolean).decode, b"\x02")

    def test_invalid_utf8_refused(self):
        self.assertRaises(ProtocolError, single(string).decode, b"\x02\x00\xc3\x28")
        self.assertRaises(ProtocolError, single(text).decode, b"\x01\x00\x00\x00\xff")

    def test_truncated_and_trailing_bytes_refused(self):
        layout = single(list_of(u32))
        encoded = layout.encode({"value": [1, 2, 3]})
        for bad in (encoded[:-1], encoded + b"\0", b"\xff\xff\xff\xff"):
            with self.assertRaises(ProtocolError) as caught:
                layout.decode(bad)
            self.assertEqual(caught.exception.code, ErrorCode.MALFORMED_PAYLOAD)

    def test_huge_list_count_fails_fast(self):
        self.assertRaises(ProtocolError, single(list_of(u64)).decode, b"\xff\xff\xff\xff")


class SessionPayloadTests(SynchronousTestCase):
    def check(self, layout, strategy):
        @given(strategy)
        def round_trip(value):
            self.assertEqual(layout.decode(layout.encode(value)), value)

        round_trip()

    def test_header(self):
        self.check(
            HEADER,
            st.builds(
                Header,
                _ints(16, False),
                _ints(8, False),
                _ints(8, False),
                _ints(8, False),
                _ints(8, False),
                _ints(16, False),
                _ints(64, False),
            ),
        )
        self.assertEqual(HEADER.size, 16)

    def test_hello(self):
        self.check(HELLO, st.builds(Hello, _ints(8, False), _ints(8, False), _ints(8, False), short_text, short_text))

    def test_hello_ack(self):
        self.check(
            HELLO_ACK,
            st.builds(
                HelloAck,
                _ints(8, False),
                _ints(64, False),
                _ints(32, False),
                _ints(32, False),
                _ints(32, False),
                short_text,
            ),
        )

    def test_error(self):
        self.check(ERROR, st.builds(Error, _ints(16, False), _ints(32, True), short_text))

    def test_shutdown(self):
        self.check(SHUTDOWN, st.builds(Shutdown, _ints(8, False), _ints(32, False), short_text))

    def test_shutdown_ack(self):
        self.check(SHUTDOWN_ACK, st.builds(ShutdownAck, _ints(32, False)))

    def test_header_bytes_match_the_contract(self):
        frame = encode_frame(3, b"xyz", request_id=0x0102030405060708, command=1, table=6, flags=1)
        self.assertEqual(frame[:4], (19).to_bytes(4, "little"))
        self.assertEqual(frame[4:6], b"\x54\x48")
        self.assertEqual(frame[6:12], bytes([1, 3, 1, 6, 1, 0]))
        self.assertEqual(frame[12:20], bytes([8, 7, 6, 5, 4, 3, 2, 1]))


class FrameDecoderTests(SynchronousTestCase):
    @given(st.lists(st.binary(max_size=40), max_size=8), st.integers(1, 64))
    def test_any_split_yields_the_same_frames(self, payloads, chunk):
        stream = b"".join(encode_frame(3, p, request_id=i) for i, p in enumerate(payloads))
        decoder = FrameDecoder(1024)
        frames = []
        for start in range(0, len(stream), chunk):
            frames += decoder.feed(stream[start : start + chunk])
        self.assertEqual([f.payload for f in frames], payloads)
        self.assertEqual([f.header.request_id for f in frames], list(range(len(payloads))))
        self.assertEqual(decoder.buffered, 0)
