"""
Two versions of the hub in turns, on one database and placed alike: the
hub's CPU per one-row MARKET_TICK frame (pipelined from one connection), per
row of 10,000-row INSERT requests, per one-row ORDER insert (C++ clients,
one request in flight each) and per row of 1000-row SELECT pages (pipelined),
the median of each over the rounds. The base is a git revision (default
main), exported with git archive; the other is this checkout, or --other's
revision. Each round runs both, in alternating order, so that a shared
machine's drift falls on both alike. With --profile DIR, the other hub is
then run once more under cProfile, around each load only, and its functions
are listed by own time per request.

    .venv/bin/python bench/versus.py [--base main] [--other REV] [--rounds 3] [--ticks 20000]
                                     [--big-rows 10000] [--big-requests 2] [--orders-seconds 5]
                                     [--order-connections 16] [--pages 50] [--profile DIR] [--unpinned]
                                     [--json out.json]
"""

import argparse
import shutil
import statistics
import subprocess
import tempfile
from functools import partial
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

from tradehub.client.calls import select_payload
from tradehub.protocol.enums import MessageType, SQLCommand, SQLTable
from tradehub.protocol.messages import encode_frame

LOADS = ("one-row tick", "10,000-row request", "ORDER insert", "1000-row SELECT page")
PAGE = 1000


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
    """The loads, their rows made once; each returns how many requests (or rows) it made."""

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

    def pages(self, daemon, database):
        """The same page of ticks, asked for again and again: each answer encodes its rows anew."""
        payload = select_payload(SQLTable.MARKET_TICK, limit=PAGE)
        frames = [
            encode_frame(MessageType.REQUEST, payload, i + 1, command=SQLCommand.SELECT, table=SQLTable.MARKET_TICK)
            for i in range(self.options.pages)
        ]
        _, errors = run_clients(daemon.frontend_port, [frames])
        assert errors == 0, errors
        return PAGE * self.options.pages

    def before_pages(self, daemon, database):
        big_request(daemon.frontend_port, self.ticks[:PAGE], 1)

    def each(self):
        """(name, what must be stored before, the load) of each load."""
        return zip(
            LOADS,
            (None, None, None, self.before_pages),
            (self.one_row, self.large, self.orders, self.pages),
            strict=True,
        )

    def warm(self, daemon, database):
        """A little of each load first: statements prepared, code imported, caches filled."""
        run_clients(daemon.frontend_port, [frames_for(self.ticks[:500], 1)])
        clear(database.dsn)
        big_request(daemon.frontend_port, self.ticks[:1000], 1)
        cpp_load(self.binary, daemon.frontend_port, 2, 1)
        clear(database.dsn)


def each_load(daemon, database, loads, measured):
    """
    The loads one after the other, after the warm-up: C{measured(run)} around
    each (what it stores first is stored before), the database cleared after.
    Returns the figures by load.
    """
    loads.warm(daemon, database)
    figures = {}
    for name, before, load in loads.each():
        if before is not None:
            before(daemon, database)
        figures[name] = measured(lambda load=load: load(daemon, database))
        clear(database.dsn)
    return figures


def cpu_per_request(daemon, run):
    """Hub CPU microseconds per request (per row for the large requests and pages) of C{run()}."""
    done, cpu = cpu_over(daemon, run)
    return 1e6 * cpu / done


def profiled(daemon, run, limit):
    """The hub's functions by own time per request of C{run()}, under cProfile."""
    done, path = daemon.profiling(run)
    return profile_top(path, done, limit)


def measure(options, placement):
    other = options.other or "this checkout"
    roots = {options.base: export(options.base), other: export(options.other) if options.other else ROOT}
    binary = compile_cpp(ROOT / "bench" / "cpp" / "order_load.cpp")
    database = Database()
    runs = {side: [] for side in roots}
    # As bench/orders.py: a database connection for each ORDER client.
    settings = {"TRADEHUB_DB_POOL_MAX": max(10, options.order_connections)}
    tops = None
    try:
        loads = Loads(options, binary)
        for round_ in range(options.rounds):
            for side in list(roots) if round_ % 2 == 0 else list(reversed(roots)):
                daemon = Daemon(database, placement=placement, root=roots[side], **settings).wait_ready()
                try:
                    runs[side].append(each_load(daemon, database, loads, partial(cpu_per_request, daemon)))
                finally:
                    daemon.stop()
        if options.profile:
            daemon = Daemon(database, placement=placement, root=roots[other], profile=options.profile, **settings)
            try:
                tops = each_load(daemon.wait_ready(), database, loads, partial(profiled, daemon, limit=options.limit))
            finally:
                daemon.stop()
    finally:
        database.close()
        for root in roots.values():
            if root != ROOT:
                shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(binary.parent, ignore_errors=True)
    medians = {side: {name: statistics.median(r[name] for r in runs[side]) for name in LOADS} for side in roots}
    return {
        "placement": str(placement),
        "base": options.base,
        "other": other,
        "runs": runs,
        "medians": medians,
        "profiles": tops,
    }


def report(results):
    base, other = results["base"], results["other"]
    medians = results["medians"]
    print(f"hub CPU us per request (per row for the large requests), median of the rounds; {results['placement']}")
    print(
        table(
            ("load", base, other, "ratio"),
            [
                (
                    name,
                    f"{medians[base][name]:.1f}",
                    f"{medians[other][name]:.1f}",
                    f"{medians[other][name] / medians[base][name]:.2f}x",
                )
                for name in LOADS
            ],
        )
    )
    for side, runs in results["runs"].items():
        print(f"  {side}, each round: " + "; ".join(", ".join(f"{r[n]:.1f}" for n in LOADS) for r in runs))
    for name, top in (results["profiles"] or {}).items():
        print(f"\nprofile of {other}'s hub, {name}: {top['total_own_us_per_event']:.1f} us own time per request")
        print(profile_table(top))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--base", default="main", help="the git revision to compare with")
    parser.add_argument("--other", help="the git revision compared (default: this checkout as it is)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ticks", type=int, default=20_000, help="one-row tick frames per measurement")
    parser.add_argument("--big-rows", type=int, default=10_000, help="rows of each large request")
    parser.add_argument("--big-requests", type=int, default=2)
    parser.add_argument("--orders-seconds", type=float, default=5.0)
    parser.add_argument("--order-connections", type=int, default=16)
    parser.add_argument("--pages", type=int, default=50, help="1000-row SELECT pages per measurement")
    parser.add_argument("--profile", type=Path, help="also profile the other hub (cProfile) into this folder")
    parser.add_argument("--limit", type=int, default=30, help="functions listed per profile")
    return run_placed(parser, argv, measure, report)


if __name__ == "__main__":
    main()
