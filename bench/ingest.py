"""
MARKET_TICK ingestion: one-row INSERT frames pipelined through the hub from
1, 4 (and 16) connections, against direct psycopg2 unnest-batch inserts of
the same rows into the same database, measured in the same run.

    .venv/bin/python bench/ingest.py [--rows 40000] [--connections 1 4] [--json out.json]
"""

import argparse
import json
import time
from decimal import Decimal
from pathlib import Path

import psycopg2
from common import Daemon, Database, run_clients, table

from tradehub.protocol.enums import MessageType, SQLCommand, SQLTable
from tradehub.protocol.messages import encode_frame
from tradehub.protocol.tables import LAYOUTS
from tradehub.schema import Timestamp

T0 = 1_700_000_000_000_000_000
SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "SPY"]
BATCH = 1000

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rows", type=int, default=40_000, help="ticks per measurement")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--json", help="also write the figures to this file")
    options = parser.parse_args(argv)

    database = Database()
    results = []
    try:
        rows = list(ticks(options.rows, 0))
        truncate(database.dsn)
        baseline = options.rows / direct_unnest(database.dsn, rows)
        assert count(database.dsn) == options.rows
        daemon = Daemon(database).wait_ready()
        try:
            for connections in options.connections:
                truncate(database.dsn)
                share = options.rows // connections
                frame_sets = [frames_for(rows[i * share : (i + 1) * share], 1) for i in range(connections)]
                seconds, errors = run_clients(daemon.frontend_port, frame_sets)
                stored = count(database.dsn)
                rate = share * connections / seconds
                results.append(
                    {
                        "connections": connections,
                        "hub_rows_per_s": rate,
                        "direct_rows_per_s": baseline,
                        "ratio": rate / baseline,
                        "errors": errors,
                        "stored": stored,
                    }
                )
                assert errors == 0 and stored == share * connections, (errors, stored)
        finally:
            daemon.stop()
    finally:
        database.close()
    print(
        f"tick ingest, {options.rows} one-row INSERT frames per run; "
        f"baseline: direct psycopg2 unnest, {BATCH} rows per statement"
    )
    print(
        table(
            ("connections", "hub rows/s", "direct rows/s", "ratio"),
            [
                (
                    r["connections"],
                    f"{r['hub_rows_per_s']:,.0f}",
                    f"{r['direct_rows_per_s']:,.0f}",
                    f"{r['ratio']:.2f}x",
                )
                for r in results
            ],
        )
    )
    if options.json:
        Path(options.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
