"""
MARKET_TICK ingestion against direct psycopg2 inserting the same rows with
unnest, 1000 rows per statement, into the same database in the same run:
one-row INSERT frames pipelined through the hub from 1, 4 (and 16)
connections, and one 10,000-row INSERT request at a time (split over frames
of the session's max_frame when it needs more than one). The hub's CPU per
row next to each figure.

    .venv/bin/python bench/ingest.py [--rows 40000] [--connections 1 4] [--big-rows 10000] [--big-requests 3]
                                     [--unpinned] [--json out.json]
"""

import argparse
import time
from decimal import Decimal

import psycopg2
from common import Daemon, Database, cpu_over, run_clients, run_placed, session, table

from tradehub.client.calls import request_frames
from tradehub.protocol.enums import FLAG_MORE, MessageType, SQLCommand, SQLTable
from tradehub.protocol.framing import FrameDecoder
from tradehub.protocol.messages import ERROR, encode_frame
from tradehub.protocol.tables import LAYOUTS
from tradehub.schema import Timestamp

T0 = 1_700_000_000_000_000_000
SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "SPY"]
BATCH = 1000
# Targets: one-row frames at least this share of direct's rows/s by connections, at most
# this much hub CPU per row; one large request at least this share of direct's rows/s.
TARGET_ONE_ROW = {1: 0.8, 4: 1.0}
TARGET_CPU_US_PER_ROW = 15
TARGET_BIG = 1.5

UNNEST_INSERT = """
INSERT INTO market_tick (symbol, ts, ts_ns, seq, kind, price, size, bid_price, bid_size, ask_price, ask_size,
                         exchange, conditions, tape)
SELECT symbol, ts, ts_ns, seq, kind, price, size, bid_price, bid_size, ask_price, ask_size,
       exchange, conditions::text[], tape
FROM unnest(%s::text[], %s::timestamptz[], %s::smallint[], %s::bigint[], %s::text[], %s::numeric[],
            %s::numeric[], %s::numeric[], %s::numeric[], %s::numeric[], %s::numeric[], %s::text[], %s::text[],
            %s::text[])
  AS u(symbol, ts, ts_ns, seq, kind, price, size, bid_price, bid_size, ask_price, ask_size, exchange,
       conditions, tape)
"""


def ticks(count, offset):
    """Distinct trade ticks: nanosecond timestamps, 9-place prices."""
    for i in range(offset, offset + count):
        yield {
            "symbol": SYMBOLS[i % len(SYMBOLS)],
            "ts": Timestamp(T0 + i * 1_000_003),
            "seq": i,
            "kind": "trade",
            "price": Decimal(100_000_000_000 + i) / 10**9,
            "size": Decimal(i % 500 + 1),
            "bid_price": None,
            "bid_size": None,
            "ask_price": None,
            "ask_size": None,
            "exchange": "V",
            "conditions": ["@", "I"],
            "tape": "C",
        }


def _array_literal(items):
    return "{" + ",".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in items) + "}"


def direct_unnest(dsn, rows):
    """The baseline: psycopg2 inserting BATCH rows per statement with unnest, one commit per batch."""
    connection = psycopg2.connect(dsn)
    cursor = connection.cursor()
    start = time.perf_counter()
    for first in range(0, len(rows), BATCH):
        batch = rows[first : first + BATCH]
        columns = [[] for _ in range(14)]
        for row in batch:
            moment, nanos = row["ts"].to_pg()
            values = (
                row["symbol"],
                moment,
                nanos,
                row["seq"],
                row["kind"],
                row["price"],
                row["size"],
                row["bid_price"],
                row["bid_size"],
                row["ask_price"],
                row["ask_size"],
                row["exchange"],
                _array_literal(row["conditions"]),
                row["tape"],
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        cursor.execute(UNNEST_INSERT, columns)
        connection.commit()
    elapsed = time.perf_counter() - start
    connection.close()
    return elapsed


def frames_for(rows, first_id):
    return [
        encode_frame(
            MessageType.REQUEST,
            LAYOUTS[SQLTable.MARKET_TICK].rows_request.encode({"echo": False, "rows": [row]}),
            first_id + i,
            command=SQLCommand.INSERT,
            table=SQLTable.MARKET_TICK,
        )
        for i, row in enumerate(rows)
    ]


def big_request(port, rows, request_id):
    """Seconds from the first byte of one INSERT request of every row to its RESPONSE (encoded beforehand)."""
    sock, ack = session(port)
    payload = LAYOUTS[SQLTable.MARKET_TICK].rows_request.encode({"echo": False, "rows": rows})
    frames = request_frames(payload, request_id, SQLCommand.INSERT, SQLTable.MARKET_TICK, ack.max_frame)
    decoder = FrameDecoder(1 << 30)
    start = time.perf_counter()
    sock.sendall(frames)
    try:
        while True:
            for frame in decoder.feed(sock.recv(1 << 20)):
                if frame.header.type == MessageType.ERROR:
                    raise RuntimeError(f"the hub refused the request: {ERROR.decode(frame.payload)}")
                if frame.header.type == MessageType.RESPONSE and not frame.header.flags & FLAG_MORE:
                    return time.perf_counter() - start
    finally:
        sock.close()


def truncate(dsn):
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    connection.cursor().execute("TRUNCATE market_tick")
    connection.close()


def count(dsn):
    connection = psycopg2.connect(dsn)
    cursor = connection.cursor()
    cursor.execute("SELECT count(*) FROM market_tick")
    (rows,) = cursor.fetchone()
    connection.close()
    return rows


def measure(options, placement):
    database = Database()
    one_row = []
    try:
        rows = list(ticks(options.rows, 0))
        truncate(database.dsn)
        baseline = options.rows / direct_unnest(database.dsn, rows)
        assert count(database.dsn) == options.rows
        daemon = Daemon(database, placement=placement).wait_ready()
        try:
            for connections in options.connections:
                truncate(database.dsn)
                share = options.rows // connections
                frame_sets = [frames_for(rows[i * share : (i + 1) * share], 1) for i in range(connections)]
                (seconds, errors), cpu = cpu_over(
                    daemon, lambda sets=frame_sets: run_clients(daemon.frontend_port, sets)
                )
                stored = count(database.dsn)
                rate = share * connections / seconds
                one_row.append(
                    {
                        "connections": connections,
                        "hub_rows_per_s": rate,
                        "direct_rows_per_s": baseline,
                        "ratio": rate / baseline,
                        "target": TARGET_ONE_ROW.get(connections),
                        "hub_cpu_us_per_row": 1e6 * cpu / stored,
                        "errors": errors,
                        "stored": stored,
                    }
                )
                assert errors == 0 and stored == share * connections, (errors, stored)
            truncate(database.dsn)
            requests = [
                list(ticks(options.big_rows, options.rows + i * options.big_rows)) for i in range(options.big_requests)
            ]
            seconds, cpu = cpu_over(
                daemon, lambda: sum(big_request(daemon.frontend_port, batch, i + 1) for i, batch in enumerate(requests))
            )
            stored = count(database.dsn)
            assert stored == options.big_rows * options.big_requests, stored
        finally:
            daemon.stop()
    finally:
        database.close()
    rate = stored / seconds
    big = {
        "rows_per_request": options.big_rows,
        "requests": options.big_requests,
        "hub_rows_per_s": rate,
        "direct_rows_per_s": baseline,
        "ratio": rate / baseline,
        "target": TARGET_BIG,
        "hub_cpu_us_per_row": 1e6 * cpu / stored,
    }
    return {
        "placement": str(placement),
        "rows": options.rows,
        "direct_rows_per_s": baseline,
        "one_row": one_row,
        "big": big,
    }


def report(results):
    print(
        f"tick ingest; baseline: direct psycopg2 unnest, {BATCH} rows per statement, {results['rows']:,} rows; "
        f"{results['placement']}"
    )
    print(
        f"\n{results['rows']:,} one-row INSERT frames per run, pipelined (targets: "
        + ", ".join(f"{target}x at {n} connection{'s' if n > 1 else ''}" for n, target in TARGET_ONE_ROW.items())
        + f"; hub CPU at most {TARGET_CPU_US_PER_ROW} us per row)"
    )
    print(
        table(
            ("connections", "hub rows/s", "direct rows/s", "ratio", "target", "hub CPU us/row"),
            [
                (
                    r["connections"],
                    f"{r['hub_rows_per_s']:,.0f}",
                    f"{r['direct_rows_per_s']:,.0f}",
                    f"{r['ratio']:.2f}x",
                    f"{r['target']}x" if r["target"] else "-",
                    f"{r['hub_cpu_us_per_row']:.1f}",
                )
                for r in results["one_row"]
            ],
        )
    )
    b = results["big"]
    print(f"\n{b['rows_per_request']:,}-row INSERT requests, {b['requests']} one after another (target: {TARGET_BIG}x)")
    print(
        table(
            ("hub rows/s", "direct rows/s", "ratio", "hub CPU us/row"),
            [
                (
                    f"{b['hub_rows_per_s']:,.0f}",
                    f"{b['direct_rows_per_s']:,.0f}",
                    f"{b['ratio']:.2f}x",
                    f"{b['hub_cpu_us_per_row']:.1f}",
                )
            ],
        )
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rows", type=int, default=40_000, help="ticks per measurement")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--big-rows", type=int, default=10_000, help="rows of each large request")
    parser.add_argument("--big-requests", type=int, default=3, help="large requests, sent one after another")
    return run_placed(parser, argv, measure, report)


if __name__ == "__main__":
    main()
