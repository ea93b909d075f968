"""
Alpaca's streams through the hub (the real daemon, against the fake Alpaca
of tests/fake_alpaca.py on a reactor in a thread of this process):

- fill latency: the fake's trading stream sends a fill; the time until a
  frontend's ORDER subscription receives the filled order, against the
  REST-polling path it replaces (a fill waits for the next sync: half the
  sync interval on average);
- market-data ingest: trades and quotes from one fake stream, in messages
  of --batch as Alpaca batches them, stored by the hub and delivered to an
  ML subscriber of MARKET_TICK: messages per second, and the lag from a
  message's send to its EVENT.

    .venv/bin/python bench/alpaca.py [--fills 400] [--rate 100] [--messages 200000] [--batch 100]
                                     [--parts fills ingest] [--json out.json]

Clocks: time.time_ns() on both sides, stamped by the fake just before it
sends and by the subscriber as soon as recv() returns.
"""

import argparse
import json
import multiprocessing
import select
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg2
from common import ROOT, Daemon, Database, connect, cpu_seconds, table
from push import (
    ERROR,
    EVENT,
    HEARTBEAT_EVERY,
    HEARTBEAT_FRAME,
    RESPONSE,
    count_frames,
    profile_top,
    profiling,
    spread,
    subscribe_frame,
    whole_frames,
)
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import blockingCallFromThread

from tradehub.client.calls import decode_event
from tradehub.protocol.enums import Role, SQLTable
from tradehub.schema import Timestamp

sys.path.insert(0, str(ROOT))
from tests import fake_alpaca  # noqa: E402  # the fake the tests use

SYMBOLS = [f"S{index:02d}" for index in range(50)]
# Ticks are told apart by their time: BASE + their index, in nanoseconds.
TICK_BASE = 1_760_000_000_000_000_000


class FakeAlpaca:
    """The tests' fake Alpaca, on a reactor running in a thread of its own."""

    def __init__(self):
        self._cleanups = []
        threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True).start()
        self.fake = self.call(lambda: ensureDeferred(fake_alpaca.start_fake_alpaca(self)))

    def addCleanup(self, function, *args):
        self._cleanups.append((function, args))

    def call(self, function, *args):
        return blockingCallFromThread(reactor, function, *args)

    def close(self):
        for function, args in reversed(self._cleanups):
            try:
                self.call(function, *args)
            except Exception:
                pass
        reactor.callFromThread(reactor.stop)


def ready_parts(daemon):
    """/readyz's parts, ready or not (503 has the same body)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.ops_port}/readyz", timeout=5) as answer:
            return json.load(answer)["parts"]
    except urllib.error.HTTPError as not_ready:
        return json.load(not_ready)["parts"]


def wait_for(check, what, seconds=60):
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def count(dsn, statement):
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(statement)
        return cursor.fetchone()[0]


# Fill latency


def order_receiver(port, expected, ready, results, seconds):
    """Subscribe to ORDER; when each order's filled EVENT arrived, by client_order_id."""
    sock = connect(port, Role.FRONTEND)
    sock.sendall(subscribe_frame(SQLTable.ORDER))
    buffer, got, sent = bytearray(), {}, time.monotonic()
    deadline = time.monotonic() + seconds
    while len(got) < expected and time.monotonic() < deadline:
        if select.select([sock], [], [], 0.5)[0]:
            data = sock.recv(1 << 20)
            now = time.time_ns()
            if not data:
                break
            buffer += data
            for kind, command, table_id, _, _, payload in whole_frames(buffer):
                if kind == EVENT:
                    row = decode_event(command, table_id, payload).row
                    if row["status"] == "filled":
                        got.setdefault(row["client_order_id"], now)
                elif kind == RESPONSE:
                    ready.set()
                elif kind == ERROR:
                    raise RuntimeError(f"subscription failed: {payload!r}")
        if time.monotonic() - sent > HEARTBEAT_EVERY:
            sock.sendall(HEARTBEAT_FRAME)
            sent = time.monotonic()
    sock.close()
    results.put(got)


def fills(alpaca, daemon, database, count_, rate, sync_seconds):
    fake = alpaca.fake
    wait_for(lambda: "degraded" not in ready_parts(daemon).get("alpaca_trade_stream", {"degraded": 1}), "the stream")

    def place():
        orders = []
        for index in range(count_):
            order = fake.order_json(
                {
                    "client_order_id": f"bench-{index}",
                    "symbol": "AAPL",
                    "qty": "10",
                    "side": "buy",
                    "type": "market",
                    "time_in_force": "day",
                },
                status="new",
            )
            fake.orders.append(order)
            fake.move(order, "new")
            orders.append(order)
        return orders

    orders = alpaca.call(place)
    wait_for(lambda: count(database.dsn, "SELECT count(*) FROM \"order\" WHERE status = 'new'") == count_, "orders")
    ready, results = multiprocessing.Event(), multiprocessing.Queue()
    receiver = multiprocessing.Process(target=order_receiver, args=(daemon.frontend_port, count_, ready, results, 120))
    receiver.start()
    ready.wait(30)

    def fill_now(order):
        at = time.time_ns()
        fake.fill(order, "10", "189.5")
        return at

    hub = daemon.process.pid
    cpu = cpu_seconds(hub)
    sent, interval = {}, 1 / rate
    start = time.monotonic()
    for index, order in enumerate(orders):
        time.sleep(max(0.0, start + index * interval - time.monotonic()))
        sent[order["client_order_id"]] = alpaca.call(fill_now, order)
    got = results.get(timeout=150)
    receiver.join(10)
    cpu = cpu_seconds(hub) - cpu
    latencies = [got[name] - at for name, at in sent.items() if name in got]
    return {
        "fills": count_,
        "rate": rate,
        "received": len(latencies),
        "stream": spread(latencies),
        "hub_cpu_us_per_fill": cpu / count_ * 1e6,
        "rest_polling_mean_us": sync_seconds / 2 * 1e6,
        "sync_seconds": sync_seconds,
    }


# Market-data ingest


def tick_receiver(port, expected, ready, results, seconds):
    """Count MARKET_TICK EVENTs; the last of each read is decoded: (when it came, its tick index)."""
    sock = connect(port, Role.ML)
    sock.sendall(subscribe_frame(SQLTable.MARKET_TICK))
    buffer, state = bytearray(), {"first": None, "last": None, "others": []}
    got, first_at, last_at, samples = 0, None, None, []
    sent = time.monotonic()
    deadline = time.monotonic() + seconds
    while got < expected and time.monotonic() < deadline:
        if select.select([sock], [], [], 0.5)[0]:
            data = sock.recv(1 << 20)
            now = time.time_ns()
            if not data:
                break
            buffer += data
            state["last"] = None
            events = count_frames(buffer, state)
            if events:
                got += events
                first_at, last_at = first_at or now, now
                samples.append((now, decode_event(*state["last"]).row["ts"].ns - TICK_BASE))
            for kind, _, _, payload in state["others"]:
                if kind == RESPONSE:
                    ready.set()
                elif kind == ERROR:
                    raise RuntimeError(f"subscription failed: {payload!r}")
            state["others"].clear()
        if time.monotonic() - sent > HEARTBEAT_EVERY:
            sock.sendall(HEARTBEAT_FRAME)
            sent = time.monotonic()
    sock.close()
    results.put({"count": got, "first_at": first_at, "last_at": last_at, "samples": samples})


def message_frames(messages, batch):
    """Alpaca-shaped arrays of trades and quotes, pre-encoded: tick i is at TICK_BASE + i ns."""
    frames = []
    for start in range(0, messages, batch):
        items = []
        for index in range(start, min(messages, start + batch)):
            symbol, at = SYMBOLS[index % len(SYMBOLS)], Timestamp(TICK_BASE + index).to_rfc3339()
            if index % 2:
                items.append(fake_alpaca.quote(symbol, at, "189.11", "189.13"))
            else:
                items.append(fake_alpaca.trade(symbol, at, "189.12", i=index))
        frames.append(json.dumps(items).replace('"@@', "").replace('@@"', "").encode())
    return frames


def ingest(alpaca, daemon, messages, batch):
    fake = alpaca.fake
    wait_for(lambda: fake.stocks.subscribed() == set(SYMBOLS), "the market-data subscription")
    frames = message_frames(messages, batch)
    ready, results = multiprocessing.Event(), multiprocessing.Queue()
    receiver = multiprocessing.Process(target=tick_receiver, args=(daemon.ml_port, messages, ready, results, 300))
    receiver.start()
    ready.wait(30)
    sent_at = [0] * len(frames)

    def send_all():
        """Each frame as the connection takes it: a few per reactor turn, so that the turn also writes."""
        [connection] = fake.stocks.connections
        done = threading.Event()

        def more(index):
            for number in range(index, min(len(frames), index + 20)):
                sent_at[number] = time.time_ns()
                connection.sendMessage(frames[number])
            if index + 20 < len(frames):
                reactor.callLater(0, more, index + 20)
            else:
                done.set()

        more(0)
        return done

    hub = daemon.process.pid
    cpu = cpu_seconds(hub)
    alpaca.call(send_all).wait(300)
    outcome = results.get(timeout=320)
    receiver.join(10)
    cpu = cpu_seconds(hub) - cpu
    span = (outcome["last_at"] - sent_at[0]) / 1e9
    lags = [now - sent_at[index // batch] for now, index in outcome["samples"]]
    return {
        "messages": messages,
        "batch": batch,
        "received": outcome["count"],
        "msgs_per_s": outcome["count"] / span,
        "sent_per_s": len(frames) * batch / ((sent_at[-1] - sent_at[0]) / 1e9 or 1),
        "lag": spread(lags),
        "hub_cpu_us_per_msg": cpu / messages * 1e6,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fills", type=int, default=400)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--parts", nargs="+", default=["fills", "ingest"], choices=["fills", "ingest"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profile", type=Path, help="profile the hub (cProfile) into this folder")
    options = parser.parse_args(argv)
    sync_seconds = 15
    twistd_args, profile = profiling(options.profile, "alpaca")
    alpaca = FakeAlpaca()
    database = Database()
    figures = {}
    try:
        daemon = Daemon(
            database,
            APCA_API_KEY_ID=fake_alpaca.KEY_ID,
            APCA_API_SECRET_KEY=fake_alpaca.SECRET,
            APCA_API_BASE_URL=alpaca.fake.url,
            APCA_API_DATA_URL=alpaca.fake.url,
            APCA_API_DATA_STREAM_URL=alpaca.fake.data_stream_url,
            TRADEHUB_ALPACA_SYMBOLS=",".join(SYMBOLS),
            TRADEHUB_ALPACA_SYNC_SECONDS=sync_seconds,
            twistd_args=twistd_args,
        ).wait_ready()
        try:
            if "fills" in options.parts:
                figures["fills"] = fills(alpaca, daemon, database, options.fills, options.rate, sync_seconds)
            if "ingest" in options.parts:
                figures["ingest"] = ingest(alpaca, daemon, options.messages, options.batch)
        finally:
            daemon.stop()
    finally:
        database.close()
        alpaca.close()
    report(figures)
    if profile is not None:
        events = sum(figures[part].get("fills", figures[part].get("messages", 0)) for part in figures)
        for entry in profile_top(profile, events, 25)["top"]:
            print(f"{entry['own_us_per_event']:8.1f} us {entry['calls_per_event']:6.1f} calls  {entry['function']}")
    if options.json:
        options.json.write_text(json.dumps(figures, indent=2, default=str))
    return figures


def report(figures):
    if "fills" in figures:
        f, s = figures["fills"], figures["fills"]["stream"]
        print(
            f"\nFill latency: {f['received']:,} of {f['fills']:,} fills at {f['rate']}/s,"
            " from the fake stream's send to the ORDER EVENT"
        )
        print(
            table(
                ["path", "p50 us", "p90 us", "p99 us", "max us", "hub CPU us/fill"],
                [
                    [
                        "trading stream",
                        f"{s['p50_us']:,.0f}",
                        f"{s['p90_us']:,.0f}",
                        f"{s['p99_us']:,.0f}",
                        f"{s['max_us']:,.0f}",
                        f"{f['hub_cpu_us_per_fill']:,.0f}",
                    ],
                    [
                        "REST polling (mean: half the sync interval)",
                        f"{f['rest_polling_mean_us']:,.0f}",
                        "",
                        "",
                        "",
                        "",
                    ],
                ],
            )
        )
        print(f"ratio: REST polling mean / stream p50 = {f['rest_polling_mean_us'] / s['p50_us']:,.0f}x")
    if "ingest" in figures:
        i, lag = figures["ingest"], figures["ingest"]["lag"]
        print(
            f"\nMarket-data ingest: {i['received']:,} of {i['messages']:,} trades and quotes in messages of "
            f"{i['batch']}, sent at {i['sent_per_s']:,.0f}/s"
        )
        print(
            table(
                ["stored and delivered msgs/s", "lag p50 us", "lag p99 us", "hub CPU us/msg"],
                [
                    [
                        f"{i['msgs_per_s']:,.0f}",
                        f"{lag['p50_us']:,.0f}",
                        f"{lag['p99_us']:,.0f}",
                        f"{i['hub_cpu_us_per_msg']:,.1f}",
                    ]
                ],
            )
        )


if __name__ == "__main__":
    main()
