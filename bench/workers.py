"""
TRADEHUB_WORKERS=1 against 2 in the same run, on the same database, with
every process on every CPU (one hub process cannot use a second core, so
pinning would hide what the workers are for): one-row ORDER inserts from
16 C++ connections with pgbench -c 16 as the baseline, and one-row ticks
pipelined from 4 connections. The hub's CPU is summed over all its processes.

    .venv/bin/python bench/workers.py [--seconds 10] [--connections 16] [--rows 40000] [--json out.json]
"""

import argparse
import json
import shutil
from pathlib import Path

import ingest
import orders
import psycopg2
from common import ROOT, Daemon, Database, Placement, compile_cpp, cpu_over, run_clients, table

COUNTS = (1, 2)
TICK_CONNECTIONS = 4


def measure(options):
    placement = Placement(pinned=False)
    n, seconds = options.connections, options.seconds
    binary = compile_cpp(ROOT / "bench" / "cpp" / "order_load.cpp")
    with placement:
        database = Database()
        try:
            connection = psycopg2.connect(database.dsn)
            connection.autocommit = True
            connection.cursor().execute("CREATE SEQUENCE bench_order_ids")
            connection.close()
            baseline = orders.pgbench(database, n, seconds)
            rows = list(ingest.ticks(options.rows, 0))
            share = options.rows // TICK_CONNECTIONS
            frame_sets = [ingest.frames_for(rows[i * share : (i + 1) * share], 1) for i in range(TICK_CONNECTIONS)]
            runs = {}
            for workers in COUNTS:
                # The pool in all as in orders.py (one connection per client connection), shared out among the workers.
                daemon = Daemon(database, TRADEHUB_DB_POOL_MAX=n, TRADEHUB_WORKERS=workers).wait_ready()
                try:
                    (tps, _), order_cpu = cpu_over(
                        daemon, lambda d=daemon: orders.cpp_load(binary, d.frontend_port, n, seconds)
                    )
                    ingest.truncate(database.dsn)
                    (tick_seconds, errors), tick_cpu = cpu_over(
                        daemon, lambda d=daemon: run_clients(d.frontend_port, frame_sets)
                    )
                    stored = ingest.count(database.dsn)
                    assert errors == 0 and stored == share * TICK_CONNECTIONS, (errors, stored)
                finally:
                    daemon.stop()
                runs[workers] = {
                    "order_tps": tps,
                    "order_vs_pgbench": tps / baseline,
                    "hub_cpu_us_per_order": 1e6 * order_cpu / (tps * seconds),
                    "tick_rows_per_s": stored / tick_seconds,
                    "hub_cpu_us_per_row": 1e6 * tick_cpu / stored,
                }
        finally:
            database.close()
            shutil.rmtree(binary.parent, ignore_errors=True)
    for workers in COUNTS[1:]:
        runs[workers]["order_vs_one_worker"] = runs[workers]["order_tps"] / runs[1]["order_tps"]
        runs[workers]["ticks_vs_one_worker"] = runs[workers]["tick_rows_per_s"] / runs[1]["tick_rows_per_s"]
    return {
        "placement": str(placement),
        "connections": n,
        "seconds": seconds,
        "tick_connections": TICK_CONNECTIONS,
        "rows": options.rows,
        "pgbench_tps": baseline,
        "runs": {str(workers): figures for workers, figures in runs.items()},
    }


def report(r):
    print(
        f"TRADEHUB_WORKERS 1 vs 2; ORDER: one-row inserts from {r['connections']} C++ connections for "
        f"{r['seconds']:g}s, baseline pgbench -c {r['connections']} = {r['pgbench_tps']:,.0f} tps; ticks: "
        f"{r['rows']:,} one-row frames pipelined from {r['tick_connections']} connections; {r['placement']}"
    )
    one = r["runs"]["1"]
    rows = []
    for workers, f in r["runs"].items():
        rows.append(
            (
                workers,
                f"{f['order_tps']:,.0f}",
                f"{f['order_vs_pgbench']:.2f}x",
                f"{f['order_tps'] / one['order_tps']:.2f}x",
                f"{f['hub_cpu_us_per_order']:,.0f}",
                f"{f['tick_rows_per_s']:,.0f}",
                f"{f['tick_rows_per_s'] / one['tick_rows_per_s']:.2f}x",
                f"{f['hub_cpu_us_per_row']:,.1f}",
            )
        )
    headings = (
        "workers",
        "ORDER tps",
        "vs pgbench",
        "vs 1 worker",
        "hub CPU us/order",
        "ticks rows/s",
        "vs 1 worker",
        "hub CPU us/row",
    )
    print(table(headings, rows))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rows", type=int, default=40_000, help="ticks per measurement")
    parser.add_argument("--json", help="also write the figures to this file")
    options = parser.parse_args(argv)
    results = measure(options)
    report(results)
    if options.json:
        Path(options.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
