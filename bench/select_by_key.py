"""
SELECT one ORDER by key, one request in flight per connection: through the
hub (C++ client, the frontend's own, and the Python blocking client) against
direct psycopg2 on the same database, at 1 and at 64 connections. Prints
p50 and p99 latencies and their ratios.

    .venv/bin/python bench/select_by_key.py [--requests 2000] [--json out.json]
"""

import argparse
import json
import multiprocessing
import threading
import time
from decimal import Decimal
from pathlib import Path

import psycopg2
from common import ROOT, TOKENS, Daemon, Database, compile_cpp, table

from tradehub.client import BlockingClient
from tradehub.protocol.enums import Role, SQLTable
from tradehub.schema import Timestamp

KEY = "bench-select-order"


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summary(latencies):
    return {"p50_us": percentile(latencies, 0.50), "p99_us": percentile(latencies, 0.99), "n": len(latencies)}


def order():
    now = Timestamp(time.time_ns())
    return {
        "client_order_id": KEY,
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
        "qty": Decimal("10"),
        "notional": None,
        "limit_price": Decimal("189.12"),
        "stop_price": None,
        "trail_price": None,
        "trail_percent": None,
        "hwm": None,
        "extended_hours": False,
        "submit": False,
        "status": "new",
        "status_message": None,
        "filled_qty": Decimal("0"),
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


def direct_thread(dsn, requests, latencies):
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    cursor = connection.cursor()
    mine = []
    for _ in range(requests):
        start = time.perf_counter()
        cursor.execute('SELECT * FROM "order" WHERE client_order_id = %s', (KEY,))
        assert len(cursor.fetchall()) == 1
        mine.append((time.perf_counter() - start) * 1e6)
    connection.close()
    latencies.extend(mine)


def direct_process(dsn, threads, requests, results, index):
    latencies = []
    workers = [threading.Thread(target=direct_thread, args=(dsn, requests, latencies)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results[index] = latencies


def direct(dsn, connections, requests):
    """psycopg2 from up to 4 processes of threads (psycopg2 releases the GIL while it waits)."""
    processes = min(4, connections)
    manager = multiprocessing.Manager()
    results = manager.dict()
    jobs = [
        multiprocessing.Process(target=direct_process, args=(dsn, connections // processes, requests, results, i))
        for i in range(processes)
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    return [value for latencies in results.values() for value in latencies]


def python_client(port, requests):
    latencies = []
    with BlockingClient("127.0.0.1", port, Role.FRONTEND, TOKENS["FRONTEND"]) as hub:
        for _ in range(requests):
            start = time.perf_counter()
            assert len(hub.select(SQLTable.ORDER, keys=[{"client_order_id": KEY}]).rows) == 1
            latencies.append((time.perf_counter() - start) * 1e6)
    return latencies


def cpp(binary, port, connections, requests):
    import subprocess

    result = subprocess.run(
        [str(binary), "127.0.0.1", str(port), TOKENS["FRONTEND"], str(connections), str(requests), KEY],
        capture_output=True,
        text=True,
        check=True,
    )
    return [float(line) for line in result.stdout.split()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per connection")
    parser.add_argument("--json", help="also write the figures to this file")
    options = parser.parse_args(argv)
    binary = compile_cpp(ROOT / "bench" / "cpp" / "select_latency.cpp")
    database = Database()
    results = {}
    try:
        daemon = Daemon(database, TRADEHUB_DB_POOL_MAX=16).wait_ready()
        try:
            with BlockingClient("127.0.0.1", daemon.frontend_port, Role.FRONTEND, TOKENS["FRONTEND"]) as hub:
                hub.insert(SQLTable.ORDER, [order()])
            results["direct_1"] = summary(direct(database.dsn, 1, options.requests))
            results["hub_cpp_1"] = summary(cpp(binary, daemon.frontend_port, 1, options.requests))
            results["hub_python_1"] = summary(python_client(daemon.frontend_port, options.requests))
            per_connection = max(50, options.requests // 16)
            results["direct_64"] = summary(direct(database.dsn, 64, per_connection))
            results["hub_cpp_64"] = summary(cpp(binary, daemon.frontend_port, 64, per_connection))
        finally:
            daemon.stop()
    finally:
        database.close()
    rows = []
    for label, key, baseline in (
        ("direct psycopg2, 1 connection", "direct_1", "direct_1"),
        ("hub, C++ client, 1 connection", "hub_cpp_1", "direct_1"),
        ("hub, Python client, 1 connection", "hub_python_1", "direct_1"),
        ("direct psycopg2, 64 connections", "direct_64", "direct_64"),
        ("hub, C++ client, 64 connections", "hub_cpp_64", "direct_64"),
    ):
        figures = results[key]
        ratio = figures["p50_us"] / results[baseline]["p50_us"]
        figures["p50_ratio"] = ratio
        rows.append((label, f"{figures['p50_us']:,.0f}", f"{figures['p99_us']:,.0f}", f"{ratio:.2f}x"))
    print("SELECT one ORDER by key, one request in flight per connection (latencies in microseconds)")
    print(table(("path", "p50", "p99", "p50 vs direct"), rows))
    if options.json:
        Path(options.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
