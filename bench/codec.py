"""
Compiled construct codecs against hand-written struct codecs of the same
layouts, in one process: encode and decode rates and their ratio. Then the
hot tables' INSERT requests (1 row and 1000 rows) decoded both ways the hub
can, in the same run: the offset decoder (Layout.decode) against the compiled
construct codec reading a stream (Layout.decode_stream), in us per row; and
their rows and written entries encoded both ways: the packing encoder
(Layout.encode) against the construct codec writing a stream.

    .venv/bin/python bench/codec.py [--seconds 1.0] [--json out.json]
"""

import argparse
import decimal
import json
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import rows as examples  # noqa: E402  # the tests' rows of every table
from tradehub.protocol.messages import HEADER, Header  # noqa: E402
from tradehub.protocol.tables import LAYOUTS  # noqa: E402
from tradehub.protocol.wire import Field, Layout, Timestamp, boolean, decimal_, string, timestamp  # noqa: E402
from tradehub.schema.model import SQLTable  # noqa: E402

TICK = Layout(
    "tick-like row",
    [
        Field("symbol", string),
        Field("ts", timestamp),
        Field("price", decimal_),
        Field("size", decimal_),
        Field("is_trade", boolean),
    ],
)

_HEADER = struct.Struct("<HBBBBHQ")
_U16 = struct.Struct("<H")
_TICK_TAIL = struct.Struct("<qqqB")
_SCALE = decimal.Decimal(1).scaleb(9)


class _Positional:
    """The header as every frame encodes it: Layout.pack with the values in field order."""

    def __init__(self, layout):
        self.layout = layout

    def encode(self, h):
        return self.layout.pack(
            h["magic"], h["version"], h["type"], h["command"], h["table"], h["flags"], h["request_id"]
        )

    def decode(self, data):
        return self.layout.decode(data)


def header_encode(h):
    return _HEADER.pack(h["magic"], h["version"], h["type"], h["command"], h["table"], h["flags"], h["request_id"])


def header_decode(data):
    return Header(*_HEADER.unpack(data))


def tick_encode(row):
    symbol = row["symbol"].encode()
    return (
        _U16.pack(len(symbol))
        + symbol
        + _TICK_TAIL.pack(row["ts"].ns, int(row["price"] * _SCALE), int(row["size"] * _SCALE), int(row["is_trade"]))
    )


def tick_decode(data):
    (length,) = _U16.unpack_from(data)
    symbol = data[2 : 2 + length].decode()
    ts, price, size, is_trade = _TICK_TAIL.unpack_from(data, 2 + length)
    return {
        "symbol": symbol,
        "ts": Timestamp(ts),
        "price": decimal.Decimal(price).scaleb(-9),
        "size": decimal.Decimal(size).scaleb(-9),
        "is_trade": is_trade == 1,
    }


def rate(function, argument, seconds, batch=1000):
    """Calls per second of function(argument), over about C{seconds}, timed every C{batch} calls."""
    count = 0
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            function(argument)
        count += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


# The hot tables' INSERT requests: one of their rows, as the tests write them.
ROW_CASES = (
    (SQLTable.MARKET_TICK, examples.tick),
    (SQLTable.ML_PREDICTION, lambda: examples.prediction(examples.new_id())),
    (SQLTable.ORDER, examples.order),
)


def in_turns(functions, argument, seconds, batch):
    """us per call of each function, taken in turns, the best of three each: a shared machine's noise falls on all."""
    best = dict.fromkeys(functions, 0.0)
    for _ in range(3):
        for function in functions:
            best[function] = max(best[function], rate(function, argument, seconds / 3, batch))
    return [1e6 / best[function] for function in functions]


def row_decoding(seconds):
    """us per row of each hot table's INSERT request, decoded by offsets and by the construct stream codec."""
    results = []
    print(f"\n{'INSERT request':<28} {'construct us/row':>17} {'offsets us/row':>15} {'speedup':>8}")
    for table, row in ROW_CASES:
        layout = LAYOUTS[table].rows_request
        for count in (1, 1000):
            payload = layout.encode({"echo": False, "rows": [row() for _ in range(count)]})
            assert layout.decode(payload) == layout.decode_stream(payload), f"{table.name}: the two decoders disagree"
            stream, offsets = (
                us / count for us in in_turns((layout.decode_stream, layout.decode), payload, seconds, 1000 // count)
            )
            name = f"{table.name} x {count}"
            results.append(
                {"request": name, "rows": count, "construct_us_per_row": stream, "offsets_us_per_row": offsets}
            )
            print(f"{name:<28} {stream:>17.2f} {offsets:>15.2f} {stream / offsets:>7.2f}x")
    return results


def row_encoding(seconds):
    """us per row of each hot table's rows and written entries, encoded by packing and by the construct stream codec."""
    results = []
    print(f"\n{'encoded':<28} {'construct us/row':>17} {'packing us/row':>15} {'speedup':>8}")
    for table, row in ROW_CASES:
        for kind in ("row", "written"):
            layout, value = getattr(LAYOUTS[table], kind), row()
            assert layout.encode(value) == layout.encode_stream(value), f"{table.name}: the two encoders disagree"
            stream, packing = in_turns((layout.encode_stream, layout.encode), value, seconds, 1000)
            name = f"{table.name} {kind}"
            results.append({"layout": name, "construct_us_per_row": stream, "packing_us_per_row": packing})
            print(f"{name:<28} {stream:>17.2f} {packing:>15.2f} {stream / packing:>7.2f}x")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--json", help="also write the figures to this file")
    options = parser.parse_args(argv)

    header = {"magic": 0x4854, "version": 1, "type": 3, "command": 1, "table": 6, "flags": 0, "request_id": 42}
    tick = {
        "symbol": "AAPL",
        "ts": Timestamp(1_700_000_000_123_456_789),
        "price": decimal.Decimal("189.120000001"),
        "size": decimal.Decimal("100"),
        "is_trade": True,
    }
    cases = [
        ("header (16 B)", _Positional(HEADER), header, header_encode, header_decode),
        ("tick-like row", TICK, tick, tick_encode, tick_decode),
    ]
    results = []
    print(f"{'layout':<16} {'op':<7} {'construct/s':>13} {'struct/s':>13} {'ratio':>7}")
    for name, layout, value, encode, decode in cases:
        encoded = layout.encode(value)
        assert encoded == encode(value), f"{name}: the two codecs disagree"
        assert layout.decode(encoded) == decode(encoded), f"{name}: the two codecs disagree"
        for op, compiled, baseline, argument in (
            ("encode", layout.encode, encode, value),
            ("decode", layout.decode, decode, encoded),
        ):
            ours = rate(compiled, argument, options.seconds)
            theirs = rate(baseline, argument, options.seconds)
            results.append(
                {"layout": name, "op": op, "construct_per_s": ours, "struct_per_s": theirs, "ratio": ours / theirs}
            )
            print(f"{name:<16} {op:<7} {ours:>13,.0f} {theirs:>13,.0f} {ours / theirs:>6.2f}x")
    figures = {
        "codecs": results,
        "row_decoding": row_decoding(options.seconds),
        "row_encoding": row_encoding(options.seconds),
    }
    if options.json:
        Path(options.json).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
