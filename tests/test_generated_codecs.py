"""
The generated codecs (what Layout.decode and Layout.encode run) against the
compiled construct codecs they replace on the hot path, layout by layout.
Decoding: valid payloads give identical values (types, decimal exponents and
float bits included), and any bytes the construct codec refuses the offset
decoder refuses too, so that Layout.decode answers them with the construct
codec's own error. Encoding: valid values give the same bytes, and a value
the construct codec refuses the packing encoder refuses too. Random payloads
and values come from fixed seeds.
"""

import copy
import decimal
import math
import random
import struct

from construct import ListContainer
from twisted.trial.unittest import SynchronousTestCase

from tradehub.protocol.enums import ErrorCode
from tradehub.protocol.errors import ProtocolError
from tradehub.protocol.messages import ERROR, HEADER, HELLO, HELLO_ACK, SHUTDOWN, SHUTDOWN_ACK, SUBSCRIBED
from tradehub.protocol.tables import LAYOUTS
from tradehub.protocol.wire import I64_MAX, I64_MIN, Field, Layout, Timestamp, decimal_, list_of, opt, string
from tradehub.schema.model import SQLTable

from . import rows
from .test_codecs import STRATEGIES

_TABLE_LAYOUTS = (
    "row",
    "key_row",
    "cursor",
    "written",
    "rows_request",
    "keys_request",
    "select_request",
    "response",
    "subscribe",
    "event",
    "deleted_event",
)
# Every field type, inside options and lists: what no table declares yet is covered too.
_EVERY_TYPE = tuple(STRATEGIES)
MIXED = Layout(
    "every type",
    [Field(f"{kind}_{t.name}", wrap(t)) for t in _EVERY_TYPE for kind, wrap in (("plain", lambda t: t), ("opt", opt))]
    + [Field(f"list_{t.name}", list_of(t)) for t in _EVERY_TYPE]
    + [Field("list_opt_decimal", list_of(opt(decimal_))), Field("opt_list_str", opt(list_of(string)))],
)


def every_layout():
    for table, layouts in LAYOUTS.items():
        for name in _TABLE_LAYOUTS:
            yield f"{table.name}.{name}", getattr(layouts, name)
    for layout in (HEADER, HELLO, HELLO_ACK, ERROR, SHUTDOWN, SHUTDOWN_ACK, SUBSCRIBED, MIXED):
        yield layout.name, layout


_INTS = {"u8": (0, 2**8 - 1), "u16": (0, 2**16 - 1), "u32": (0, 2**32 - 1), "u64": (0, 2**64 - 1)}
_INTS.update({"i32": (-(2**31), 2**31 - 1), "i64": (I64_MIN, I64_MAX)})


def _i64(rng):
    """Extremes as often as anything else: every i64 is a valid decimal and timestamp."""
    return rng.choice([I64_MIN, I64_MAX, 0, -1, 1, rng.randint(I64_MIN, I64_MAX), rng.randint(-(10**12), 10**12)])


def _text(rng):
    alphabet = "AaZz09 _-\"\\'{},é€𝄞\x7f"
    return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 3, 12])))


def random_value(wire_type, rng):
    """A valid value of a wire type, drawn from rng."""
    if wire_type.layout is not None:
        return {f.name: random_value(f.type, rng) for f in wire_type.layout.fields}
    if wire_type.name.startswith("opt<"):
        return None if rng.random() < 0.4 else random_value(wire_type.item, rng)
    if wire_type.name.startswith("list<"):
        return [random_value(wire_type.item, rng) for _ in range(rng.choice([0, 1, 2, 3]))]
    name = wire_type.name
    if name in _INTS:
        low, high = _INTS[name]
        return rng.choice([low, high, rng.randint(low, high)])
    if name == "f64":
        # Any bits: NaNs with payloads, -0.0 and the infinities too.
        return struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
    if name == "bool":
        return rng.random() < 0.5
    if name == "timestamp":
        return Timestamp(_i64(rng))
    if name == "decimal":
        return decimal.Decimal(_i64(rng)).scaleb(-9)
    if name in ("str", "text"):
        return _text(rng)
    assert name == "bytes", name
    return rng.randbytes(rng.choice([0, 1, 5]))


def random_payload(layout, rng):
    return layout.encode({f.name: random_value(f.type, rng) for f in layout.fields})


def identical(a, b):
    """Equal, and of the same types throughout: a bool is not 1, 1.0 is not 1.00, and a float's bits count."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, decimal.Decimal):
        return a.as_tuple() == b.as_tuple()
    return a == b


def mutations(payload, rng):
    """Bytes near a valid payload: cut short, extended, a byte changed, a byte added or removed."""
    yield payload[: rng.randrange(len(payload))] if payload else b""
    yield payload + rng.randbytes(rng.choice([1, 2, 9]))
    if not payload:
        return
    for _ in range(6):
        at = rng.randrange(len(payload))
        byte = rng.choice([0, 1, 2, 0x7F, 0x80, 0xC3, 0xFF, rng.randrange(256)])
        yield payload[:at] + bytes([byte]) + payload[at + 1 :]
    at = rng.randrange(len(payload))
    yield payload[:at] + bytes([rng.randrange(256)]) + payload[at:]
    yield payload[:at] + payload[at + 1 :]


def refuses(function, given):
    """Whether a generated codec alone refuses what it is given (it need not say why)."""
    try:
        function(given)
    except Exception:
        return True
    return False


class AgainstConstruct:
    """
    One input to a generated codec and to the construct codec it stands for,
    both alone (C{generated}, C{reference}) and as the layout runs them
    (C{public}): the same result, or both refuse, with the construct codec's error.
    """

    reference = generated = public = ""
    code = ErrorCode.INTERNAL

    def result(self, layout, values):
        """What the layout's public method returns for the reference's values."""
        return values

    def check(self, name, layout, given):
        """Returns whether the input was valid."""
        reference, generated, public = (getattr(layout, n) for n in (self.reference, self.generated, self.public))
        context = f"{name}: {given!r}"
        try:
            expected = reference(given)
        except ProtocolError as error:
            self.assertTrue(refuses(generated, given), f"{context} taken")
            with self.assertRaises(ProtocolError) as caught:
                public(given)
            self.assertEqual(caught.exception.code, self.code)
            if layout.size is None:
                # (Fixed-size layouts go through one struct.Struct, which words its refusals its own way.)
                self.assertEqual(caught.exception.message, error.message, context)
            return False
        for actual, wanted in ((generated(given), expected), (public(given), self.result(layout, expected))):
            if not identical(actual, wanted):
                self.fail(f"{context}: {actual!r} != {wanted!r}")
        return True


class IdenticalTests(AgainstConstruct, SynchronousTestCase):
    reference, generated, public = "decode_stream", "decode_offsets", "decode"
    code = ErrorCode.MALFORMED_PAYLOAD

    def result(self, layout, values):
        return layout.cls(**values) if layout.cls is not None else values

    def test_valid_and_mutated_payloads_of_every_layout(self):
        rng = random.Random(20240613)
        valid = refused = 0
        for name, layout in every_layout():
            for _ in range(12):
                payload = random_payload(layout, rng)
                self.assertTrue(self.check(name, layout, payload), f"{name}: a valid payload was refused")
                valid += 1
                for bad in mutations(payload, rng):
                    refused += not self.check(name, layout, bad)
        # The seed reaches both sides of every decoder.
        self.assertGreater(valid, 1000)
        self.assertGreater(refused, 5000)

    def test_the_tables_own_rows(self):
        model_id = rows.new_id()
        examples = {
            SQLTable.ACCOUNT: rows.account(),
            SQLTable.ASSET: rows.asset(),
            SQLTable.ORDER: rows.order(),
            SQLTable.POSITION: rows.position(),
            SQLTable.TRADE: rows.trade("order-1"),
            SQLTable.MARKET_TICK: rows.tick(),
            SQLTable.ML_MODEL: rows.model(artifact=b"\x00\x01weights"),
            SQLTable.ML_PREDICTION: rows.prediction(model_id),
            SQLTable.LABELED_DATA: rows.label(),
            SQLTable.FEATURE_SET: rows.features(),
            SQLTable.TECHNICAL_INDICATOR: rows.indicator(),
        }
        self.assertEqual(set(examples), set(SQLTable))
        for table, row in examples.items():
            layout = LAYOUTS[table].rows_request
            for batch in ([row], [row, rows.quote(2)] if table is SQLTable.MARKET_TICK else [row, row]):
                payload = layout.encode({"echo": True, "rows": batch})
                self.assertTrue(self.check(table.name, layout, payload))
                for cut in range(len(payload)):
                    self.check(table.name, layout, payload[:cut])


# Values a field may be given by mistake: each is wrong for some field type, and right for others.
BAD_VALUES = [
    None,
    "x",
    "x" * 65536,
    "\ud800",
    b"x",
    0,
    -1,
    2**64,
    -(2**63) - 1,
    1.5,
    True,
    decimal.Decimal("0.1"),
    decimal.Decimal("1E-10"),
    decimal.Decimal("NaN"),
    decimal.Decimal("1E+20"),
    Timestamp(0),
    [],
    ["x", None],
    {},
]


def slots(value):
    """Every (container, key) inside a value: where a field or an item can be given something else."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.append((value, key))
            found += slots(item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.append((value, index))
            found += slots(item)
    return found


class EncodingTests(AgainstConstruct, SynchronousTestCase):
    reference, generated, public = "encode_stream", "encode_packing", "encode"
    code = ErrorCode.VALIDATION_FAILED

    def test_valid_and_wrong_values_of_every_layout(self):
        rng = random.Random(90125)
        valid = refused = 0
        for name, layout in every_layout():
            for _ in range(12):
                value = {f.name: random_value(f.type, rng) for f in layout.fields}
                self.assertTrue(self.check(name, layout, value), f"{name}: a valid value was refused")
                valid += 1
                places = slots(value)
                for _ in range(8):
                    wrong = copy.deepcopy(value)
                    container, key = rng.choice(slots(wrong)) if places else (wrong, "missing")
                    if rng.random() < 0.1 and isinstance(container, dict):
                        del container[key]
                    else:
                        container[key] = copy.deepcopy(rng.choice(BAD_VALUES))
                    refused += not self.check(name, layout, wrong)
        self.assertGreater(valid, 1000)
        self.assertGreater(refused, 4000)

    def test_answers_are_the_responses_bytes(self):
        """TableLayouts.answer, from rows and written entries encoded one by one, is response.encode's bytes."""
        rng = random.Random(2112)
        for table, layouts in LAYOUTS.items():
            for _ in range(20):
                rows = [random_value(layouts.response.fields[1].type.item, rng) for _ in range(rng.randint(0, 2))]
                written = [random_value(layouts.response.fields[2].type.item, rng) for _ in range(rng.randint(0, 2))]
                affected = rng.choice([0, 1, 7, 2**32 - 1])
                cursor = rng.choice([None, b"", rng.randbytes(9)])
                answer = layouts.answer(
                    affected,
                    [layouts.row.encode(r) for r in rows],
                    cursor,
                    [layouts.written.encode(w) for w in written],
                )
                expected = layouts.response.encode(
                    {"affected": affected, "rows": rows, "written": written, "next_cursor": cursor}
                )
                self.assertEqual(answer, expected, table.name)


def tick_payload(**changes):
    return LAYOUTS[SQLTable.MARKET_TICK].rows_request.encode({"echo": False, "rows": [rows.tick(**changes)]})


class MalformedTests(SynchronousTestCase):
    """Each way a payload can be wrong, refused by both decoders with the same error."""

    layout = LAYOUTS[SQLTable.MARKET_TICK].rows_request

    def refused(self, payload, reason, layout=None):
        layout = layout or self.layout
        self.assertTrue(refuses(layout.decode_offsets, payload))
        for decode in (layout.decode, layout.decode_stream):
            with self.assertRaises(ProtocolError) as caught:
                decode(payload)
            self.assertEqual(caught.exception.code, ErrorCode.MALFORMED_PAYLOAD)
            self.assertEqual(caught.exception.message, f"{layout.name}: {reason}")

    def test_truncated_at_every_byte(self):
        payload = tick_payload()
        for cut in range(len(payload)):
            self.refused(payload[:cut], "payload ended early")

    def test_trailing_bytes(self):
        self.refused(tick_payload() + b"\x00", "trailing bytes after the payload")

    def test_bad_bool_byte(self):
        self.refused(b"\x02" + tick_payload()[1:], "bool byte 2 is neither 0 nor 1")

    def test_bad_presence_byte(self):
        # The tick's price is the first optional field: after echo, count, symbol, ts, seq and kind.
        payload = tick_payload(symbol="AAPL", kind="trade")
        at = 1 + 4 + 2 + 4 + 16 + 2 + 5
        self.assertEqual(payload[at], 1)
        self.refused(payload[:at] + b"\x02" + payload[at + 1 :], "presence byte 2 is neither 0 nor 1")

    def test_bad_utf8(self):
        payload = tick_payload(symbol="AAPL")
        self.refused(payload[:7] + b"\xc3\x28PL" + payload[11:], "invalid UTF-8")

    def test_string_longer_than_the_payload(self):
        payload = tick_payload(symbol="AAPL")
        self.refused(payload[:5] + b"\xff\xff" + payload[7:], "payload ended early")

    def test_over_long_counts(self):
        payload = tick_payload()
        self.refused(payload[:1] + b"\xff\xff\xff\xff" + payload[5:], "payload ended early")
        features = LAYOUTS[SQLTable.FEATURE_SET].rows_request
        encoded = features.encode({"echo": False, "rows": [rows.features(features=[1.5, 2.5])]})
        count = (2).to_bytes(4, "little") + struct.pack("<2d", 1.5, 2.5)
        at = encoded.index(count)
        for huge in (3, 2**32 - 1):
            bad = encoded[:at] + huge.to_bytes(4, "little") + encoded[at + 4 :]
            self.refused(bad, "payload ended early", features)

    def test_extreme_decimals_and_timestamps_are_values(self):
        """On the wire every i64 is a decimal and a timestamp: both decoders take the extremes alike."""
        for units in (I64_MIN, I64_MAX, 0, -1):
            payload = tick_payload(ts=Timestamp(units), price=decimal.Decimal(units).scaleb(-9))
            offsets = self.layout.decode_offsets(payload)
            self.assertTrue(identical(offsets, self.layout.decode_stream(payload)))
            self.assertEqual(offsets["rows"][0]["ts"], Timestamp(units))
            self.assertEqual(offsets["rows"][0]["price"].as_tuple().exponent, -9)


class IdenticalHelperTests(SynchronousTestCase):
    """The comparison the tests above rely on tells apart what == does not."""

    def test_it_tells_types_exponents_and_bits_apart(self):
        self.assertFalse(identical(True, 1))
        self.assertFalse(identical(decimal.Decimal("1.5"), decimal.Decimal("1.500000000")))
        self.assertFalse(identical(0.0, -0.0))
        self.assertTrue(identical(math.nan, math.nan))
        self.assertFalse(identical({"a": 1, "b": 2}, {"b": 2, "a": 1}))
        self.assertTrue(identical(ListContainer([1]), [1]))
        self.assertFalse(identical([1], [1, 2]))
