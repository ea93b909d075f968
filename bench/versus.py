"""
Two versions of the hub in turns, on one database and placed alike: the
hub's CPU per one-row MARKET_TICK frame (pipelined from one connection), per
row of 10,000-row INSERT requests, and per one-row ORDER insert (C++
clients, one request in flight each), the median of each over the rounds.
The base is a git revision (default main), exported with git archive; the
other is this checkout. Each round runs both, in alternating order, so that a
shared machine's drift falls on both alike. With --profile DIR, this
checkout's hub is then run once more under cProfile, around each load only,
and its functions are listed by own time per request.

    .venv/bin/python bench/versus.py [--base main] [--rounds 3] [--ticks 20000] [--big-rows 10000]
                                     [--big-requests 2] [--orders-seconds 5] [--order-connections 16]
                                     [--profile DIR] [--unpinned] [--json out.json]
"""

import argparse
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

import psycopg2
from common import (
    ROOT,
    Daemon,
    Database,
    compile_cpp,
    cpu_over,
    run_clients,
    run_placed,
    table,
)
from ingest import big_request, count, frames_for, ticks
from orders import cpp_load
from push import profile_table, profile_top

LOADS = ("one-row tick", "10,000-row request", "ORDER insert")


def export(revision):
    """The tree of a git revision in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="tradehub-base-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def clear(dsn):
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    connection.cursor().execute('TRUNCATE market_tick, "order" CASCADE')
    connection.close()


class Loads:
    """The three loads, their rows made once; each returns (requests or rows done, what they stand for)."""

    def __init__(self, options, binary):
        self.options = options
        self.binary = binary
        self.ticks = list(ticks(options.ticks, 0))
        first = options.ticks
        self.big = [list(ticks(options.big_rows, first + i * options.big_rows)) for i in range(options.big_requests)]

    def one_row(self, daemon, database):
        _, errors = run_clients(daemon.frontend_port, [frames_for(self.ticks, 1)])
        assert errors == 0 and count(database.dsn) == len(self.ticks), errors
        return len(self.ticks)

    def large(self, daemon, database):
        for i, rows in enumerate(self.big):
            big_request(daemon.frontend_port, rows, i + 1)
        return sum(map(len, self.big))

    def orders(self, daemon, database):
        o = self.options
        tps, _ = cpp_load(self.binary, daemon.frontend_port, o.order_connections, o.orders_seconds)
        return round(tps * o.orders_seconds)

    def each(self):
        return zip(LOADS, (self.one_row, self.large, self.orders), strict=True)

    def warm(self, daemon, database):
        """A little of each load first: statements prepared, code imported, caches filled."""
        run_clients(daemon.frontend_port, [frames_for(self.ticks[:500], 1)])
        clear(database.dsn)
        big_request(daemon.frontend_port, self.ticks[:1000], 1)
        cpp_load(self.binary, daemon.frontend_port, 2, 1)
        clear(database.dsn)


def cpu_per_request(daemon, database, loads):
    """Hub CPU microseconds per request (per row for the large requests) of each load."""
    loads.warm(daemon, database)
    figures = {}
    for name, load in loads.each():
        done, cpu = cpu_over(daemon, lambda load=load: load(daemon, database))
        figures[name] = 1e6 * cpu / done
        clear(database.dsn)
    return figures


def profiles(database, placement, loads, folder, limit, settings):
    daemon = Daemon(database, placement=placement, profile=folder, **settings).wait_ready()
    tops = {}
    try:
        loads.warm(daemon, database)
        for name, load in loads.each():
            done, path = daemon.profiling(lambda load=load: load(daemon, database))
            tops[name] = profile_top(path, done, limit)
            clear(database.dsn)
    finally:
        daemon.stop()
    return tops


def measure(options, placement):
    base_root = export(options.base)
    binary = compile_cpp(ROOT / "bench" / "cpp" / "order_load.cpp")
    database = Database()
    sides = {options.base: base_root, "this checkout": ROOT}
    runs = {side: [] for side in sides}
    # As bench/orders.py: a database connection for each ORDER client.
    settings = {"TRADEHUB_DB_POOL_MAX": max(10, options.order_connections)}
    try:
        loads = Loads(options, binary)
        for round_ in range(options.rounds):
            order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            for side in order:
                daemon = Daemon(database, placement=placement, root=sides[side], **settings).wait_ready()
                try:
                    runs[side].append(cpu_per_request(daemon, database, loads))
                finally:
                    daemon.stop()
        if options.profile:
            tops = profiles(database, placement, loads, options.profile, options.limit, settings)
        else:
            tops = None
    finally:
        database.close()
        shutil.rmtree(base_root, ignore_errors=True)
        shutil.rmtree(binary.parent, ignore_errors=True)
    medians = {side: {name: statistics.median(r[name] for r in runs[side]) for name in LOADS} for side in sides}
    return {"placement": str(placement), "base": options.base, "runs": runs, "medians": medians, "profiles": tops}


def report(results):
    base = results["base"]
    medians = results["medians"]
    print(f"hub CPU us per request (per row for the large requests), median of the rounds; {results['placement']}")
    print(
        table(
            ("load", base, "this checkout", "ratio"),
            [
                (
                    name,
                    f"{medians[base][name]:.1f}",
                    f"{medians['this checkout'][name]:.1f}",
                    f"{medians['this checkout'][name] / medians[base][name]:.2f}x",
                )
                for name in LOADS
            ],
        )
    )
    for side, runs in results["runs"].items():
        print(f"  {side}, each round: " + "; ".join(", ".join(f"{r[n]:.1f}" for n in LOADS) for r in runs))
    for name, top in (results["profiles"] or {}).items():
        print(f"\nprofile of this checkout's hub, {name}: {top['total_own_us_per_event']:.1f} us own time per request")
        print(profile_table(top))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--base", default="main", help="the git revision to compare this checkout with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ticks", type=int, default=20_000, help="one-row tick frames per measurement")
    parser.add_argument("--big-rows", type=int, default=10_000, help="rows of each large request")
    parser.add_argument("--big-requests", type=int, default=2)
    parser.add_argument("--orders-seconds", type=float, default=5.0)
    parser.add_argument("--order-connections", type=int, default=16)
    parser.add_argument("--profile", type=Path, help="also profile this checkout's hub (cProfile) into this folder")
    parser.add_argument("--limit", type=int, default=30, help="functions listed per profile")
    return run_placed(parser, argv, measure, report)


if __name__ == "__main__":
    main()
