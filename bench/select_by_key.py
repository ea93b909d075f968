"""
SELECT one ORDER by key, one request in flight per connection: through the
hub and through the floor server (bench/floor.py: the same frames and SQL on
one txpostgres connection), each with the same clients (C++, the frontend's
own, and the Python blocking client), against direct psycopg2 on the same
database, at 1 and at 64 connections. Prints p50/p90/p99, the ratios the
targets name (1 connection: hub p50 vs the floor's; 64: hub p99 vs direct
psycopg2's) and each server's CPU per request.

    .venv/bin/python bench/select_by_key.py [--requests 2000] [--unpinned] [--json out.json]
"""

import argparse
import multiprocessing
import subprocess
import threading
import time
from decimal import Decimal
from functools import partial

import psycopg2
from common import (
    ROOT,
    TOKENS,
    Daemon,
    Database,
    FloorServer,
    compile_cpp,
    cpu_over,
    latency_figures,
    run_placed,
    table,
)

from tradehub.client import BlockingClient
from tradehub.protocol.enums import Role, SQLTable
from tradehub.schema import Timestamp

KEY = "bench-select-order"
# Targets: at 1 connection the hub's p50 at most this times the floor's (same client);
# at 64 connections its p99 at most this times direct psycopg2's.
TARGET_P50_VS_FLOOR = 1.1
TARGET_P99_VS_DIRECT = 2.0


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
    result = subprocess.run(
        [str(binary), "127.0.0.1", str(port), TOKENS["FRONTEND"], str(connections), str(requests), KEY],
        capture_output=True,
        text=True,
        check=True,
    )
    return [float(line) for line in result.stdout.split()]


def through(server, client):
    """The latency figures of C{client()} (one server's), with that server's CPU per request over the run."""
    latencies, cpu = cpu_over(server, client)
    return latency_figures(latencies) | {"cpu_us_per_request": 1e6 * cpu / len(latencies)}


def measure(options, placement):
    binary = compile_cpp(ROOT / "bench" / "cpp" / "select_latency.cpp")
    database = Database()
    results = {"placement": str(placement)}
    try:
        daemon = Daemon(database, placement=placement, TRADEHUB_DB_POOL_MAX=16).wait_ready()
        floor = FloorServer(database, placement).wait_ready()
        try:
            with BlockingClient("127.0.0.1", daemon.frontend_port, Role.FRONTEND, TOKENS["FRONTEND"]) as hub:
                hub.insert(SQLTable.ORDER, [order()])
            servers = (("floor", floor, floor.port), ("hub", daemon, daemon.frontend_port))
            results["direct_1"] = latency_figures(direct(database.dsn, 1, options.requests))
            for name, server, port in servers:
                results[f"{name}_cpp_1"] = through(server, partial(cpp, binary, port, 1, options.requests))
            for name, server, port in servers:
                results[f"{name}_python_1"] = through(server, partial(python_client, port, options.requests))
            per_connection = max(50, options.requests // 16)
            results["direct_64"] = latency_figures(direct(database.dsn, 64, per_connection))
            for name, server, port in servers:
                results[f"{name}_cpp_64"] = through(server, partial(cpp, binary, port, 64, per_connection))
        finally:
            floor.stop()
            daemon.stop()
    finally:
        database.close()
    for client in ("cpp", "python"):
        for name in ("floor", "hub"):
            figures = results[f"{name}_{client}_1"]
            figures["p50_vs_floor"] = figures["p50_us"] / results[f"floor_{client}_1"]["p50_us"]
            figures["p50_vs_direct"] = figures["p50_us"] / results["direct_1"]["p50_us"]
    for name in ("floor", "hub"):
        figures = results[f"{name}_cpp_64"]
        figures["p99_vs_direct"] = figures["p99_us"] / results["direct_64"]["p99_us"]
    return results


def _us(figures):
    return [f"{figures[k]:,.0f}" for k in ("p50_us", "p90_us", "p99_us")]


def _cpu(figures):
    return f"{figures['cpu_us_per_request']:,.0f}"


def report(results):
    print(f"SELECT one ORDER by key, one request in flight per connection; {results['placement']}")
    print(f"\n1 connection, latencies in microseconds (target: hub p50 at most {TARGET_P50_VS_FLOOR}x the floor's)")
    rows = [("direct psycopg2", *_us(results["direct_1"]), "-", "1.00x", "-")]
    for client, label in (("cpp", "C++"), ("python", "Python")):
        for name in ("floor", "hub"):
            f = results[f"{name}_{client}_1"]
            rows.append(
                (f"{name}, {label} client", *_us(f), f"{f['p50_vs_floor']:.2f}x", f"{f['p50_vs_direct']:.2f}x", _cpu(f))
            )
    print(table(("path", "p50", "p90", "p99", "p50 vs floor", "p50 vs direct", "server CPU us/request"), rows))
    print(f"\n64 connections, latencies in microseconds (target: hub p99 at most {TARGET_P99_VS_DIRECT}x direct's)")
    rows = [("direct psycopg2", *_us(results["direct_64"]), "1.00x", "-")]
    for name in ("floor", "hub"):
        f = results[f"{name}_cpp_64"]
        rows.append((f"{name}, C++ client", *_us(f), f"{f['p99_vs_direct']:.2f}x", _cpu(f)))
    print(table(("path", "p50", "p90", "p99", "p99 vs direct", "server CPU us/request"), rows))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per connection")
    return run_placed(parser, argv, measure, report)


if __name__ == "__main__":
    main()
