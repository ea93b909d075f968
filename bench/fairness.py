"""
A normal client's SELECT by key next to flooding clients: its p50/p99
latency alone (the baseline, same run), then while 50 clients each keep
1000-row page requests pipelined (and read their answers). The pool serves
the client that held connections least lately first, so the flood should
slow itself, not the lookup. Also prints the hub's CPU per request.

    .venv/bin/python bench/fairness.py [--flooders 50] [--lookups 400] [--window 8] [--json out.json]
"""

import argparse
import json
import multiprocessing
import time
from pathlib import Path

from common import Daemon, Database, connect, cpu_seconds, table
from ingest import direct_unnest, ticks

from tradehub.client.calls import select_payload
from tradehub.protocol.enums import MessageType, SQLCommand, SQLTable
from tradehub.protocol.framing import FrameDecoder
from tradehub.protocol.messages import encode_frame

PAGE = 1000


def load(dsn, count):
    """Store C{count} ticks; returns one of them to look up."""
    rows = list(ticks(count, 0))
    direct_unnest(dsn, rows)
    return rows[count // 2]


def request(payload, request_id):
    return encode_frame(MessageType.REQUEST, payload, request_id, command=SQLCommand.SELECT, table=SQLTable.MARKET_TICK)


def answered(decoder, sock):
    """Frames of whole answers (the last frame of each) read from C{sock}."""
    return [f for f in decoder.feed(sock.recv(1 << 20)) if not f.header.flags & 1]


def flooder(port, window, stop, sent_total):
    """Keep C{window} page requests in flight until C{stop} is set; count the answers."""
    sock = connect(port)
    page = request(select_payload(SQLTable.MARKET_TICK, limit=PAGE), 1)
    sock.sendall(page * window)
    decoder = FrameDecoder(1 << 30)
    done = 0
    while not stop.is_set():
        finished = len(answered(decoder, sock))
        done += finished
        sock.sendall(page * finished)
    with sent_total.get_lock():
        sent_total.value += done
    sock.close()


def lookups(port, key, count):
    """Latencies (microseconds) of C{count} SELECTs by key, one at a time."""
    sock = connect(port)
    payload = select_payload(SQLTable.MARKET_TICK, keys=[{name: key[name] for name in ("symbol", "ts", "seq")}])
    frame = request(payload, 7)
    decoder = FrameDecoder(1 << 30)
    latencies = []
    for _ in range(count):
        begin = time.perf_counter()
        sock.sendall(frame)
        [answer] = answered(decoder, sock)
        while not answer:
            [answer] = answered(decoder, sock)
        assert answer.header.type == MessageType.RESPONSE, answer.header
        latencies.append((time.perf_counter() - begin) * 1e6)
    sock.close()
    return latencies


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(flooders, lookup_count, window):
    database = Database()
    try:
        key = load(database.dsn, 5 * PAGE)
        daemon = Daemon(database).wait_ready()
        try:
            lookups(daemon.frontend_port, key, 50)  # warm up
            quiet = lookups(daemon.frontend_port, key, lookup_count)
            stop = multiprocessing.Event()
            pages = multiprocessing.Value("q", 0)
            processes = [
                multiprocessing.Process(target=flooder, args=(daemon.ml_port, window, stop, pages))
                for _ in range(flooders)
            ]
            for process in processes:
                process.start()
            time.sleep(2.0)  # every flooder connected and pipelining
            cpu_before = cpu_seconds(daemon.process.pid)
            began = time.perf_counter()
            flooded = lookups(daemon.frontend_port, key, lookup_count)
            seconds = time.perf_counter() - began
            cpu = cpu_seconds(daemon.process.pid) - cpu_before
            stop.set()
            for process in processes:
                process.join()
        finally:
            daemon.stop()
    finally:
        database.close()
    quiet_p50, quiet_p99 = percentile(quiet, 0.5), percentile(quiet, 0.99)
    flood_p50, flood_p99 = percentile(flooded, 0.5), percentile(flooded, 0.99)
    return {
        "flooders": flooders,
        "window": window,
        "quiet_p50_us": quiet_p50,
        "quiet_p99_us": quiet_p99,
        "flooded_p50_us": flood_p50,
        "flooded_p99_us": flood_p99,
        "p50_vs_quiet": flood_p50 / quiet_p50,
        "p99_vs_quiet_p50": flood_p99 / quiet_p50,
        "pages_per_s": pages.value / seconds,
        "hub_cpu_ms_per_page": 1000 * cpu / max(1, pages.value),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flooders", type=int, default=50)
    parser.add_argument("--lookups", type=int, default=400)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = run(args.flooders, args.lookups, args.window)
    print(
        table(
            ["", "p50 us", "p99 us", "x quiet p50 (p50, p99)"],
            [
                ["alone", f"{result['quiet_p50_us']:.0f}", f"{result['quiet_p99_us']:.0f}", "1.0"],
                [
                    f"next to {args.flooders} flooders",
                    f"{result['flooded_p50_us']:.0f}",
                    f"{result['flooded_p99_us']:.0f}",
                    f"{result['p50_vs_quiet']:.1f}, {result['p99_vs_quiet_p50']:.1f}",
                ],
            ],
        )
    )
    print(
        f"flood: {result['pages_per_s']:.0f} pages/s of {PAGE} rows; "
        f"hub CPU {result['hub_cpu_ms_per_page']:.2f} ms per page"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
