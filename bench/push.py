"""
Push subscriptions (SUBSCRIBE, then EVENTs): write-to-event latency against
polling and against PostgreSQL's own LISTEN/NOTIFY; the event rate of one
and of 16 subscribers while writers ingest ticks as fast as they can;
catch-up from position 0; and what the change log costs writes (its capture
triggers on against off). Every baseline is measured in the same run.

    .venv/bin/python bench/push.py [--writes 3000] [--ticks 60000] [--fanout 16] [--changes 200000]
                                   [--seconds 3] [--parts latency throughput catchup cost]
                                   [--profile DIR] [--json out.json]

Clocks: every time compared across processes is time.time_ns() (the one
wall clock of the machine), stamped by the sender just before its send and
by the receiver as soon as recv() returns, before any decoding.
"""

import argparse
import json
import multiprocessing
import os
import pstats
import queue
import select
import shutil
import struct
import subprocess
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import psutil
import psycopg2
from common import ROOT, TOKENS, Daemon, Database, compile_cpp, connect, cpu_seconds, table
from ingest import frames_for, ticks
from orders import pgbench

from tradehub.client import BlockingClient
from tradehub.client.calls import decode_event, decode_result, select_payload, subscribe_payload
from tradehub.protocol.enums import FLAG_MORE, MessageType, Role, SQLCommand, SQLTable
from tradehub.protocol.messages import SUBSCRIBED, encode_frame
from tradehub.protocol.tables import LAYOUTS
from tradehub.repositories.changes import ChangeLogRepository
from tradehub.repositories.table import Repository
from tradehub.schema import Timestamp
from tradehub.schema.tables import MARKET_TICK

# The length prefix and the 16-byte header: magic, version, type, command, table, flags, request_id.
FRAME = struct.Struct("<IHBBBBHQ")
EVENT, RESPONSE, ERROR = MessageType.EVENT, MessageType.RESPONSE, MessageType.ERROR
HEARTBEAT_FRAME = encode_frame(MessageType.HEARTBEAT)
# Sessions are closed after 3 silent heartbeat intervals (5 s each by default).
HEARTBEAT_EVERY = 2.0

MODEL_ID = "6c1f0a52-4d0b-4c55-9a51-0f1c5e9a0b11"
# Predictions are told apart by their ts: BASE + their index, in nanoseconds.
PUSH_BASE = 1_700_000_000_000_000_000
POLL_BASE = 1_710_000_000_000_000_000
TRIGGERS = {
    table_name: [f"{table_name}_change_{op}" for op in ("insert", "update", "delete")]
    for table_name in ("market_tick", "order")
}


# Reading frames without FrameDecoder: a subscriber that decoded each EVENT in
# Python would be slower than the hub, so the counters only walk the headers.


def whole_frames(buffer):
    """(type, command, table, flags, request_id, payload) of the whole frames in C{buffer}, which loses them."""
    frames, offset, end = [], 0, len(buffer)
    while end - offset >= FRAME.size:
        length, _, _, kind, command, table_id, flags, request_id = FRAME.unpack_from(buffer, offset)
        stop = offset + 4 + length
        if stop > end:
            break
        frames.append((kind, command, table_id, flags, request_id, bytes(buffer[offset + FRAME.size : stop])))
        offset = stop
    del buffer[:offset]
    return frames


def count_frames(buffer, state):
    """
    Count the EVENTs among the whole frames in C{buffer} (which loses them),
    keeping the first and last EVENT and every other frame in C{state}.
    """
    offset, end, events, last = 0, len(buffer), 0, None
    unpack = FRAME.unpack_from
    while end - offset >= FRAME.size:
        length, _, _, kind, command, table_id, flags, request_id = unpack(buffer, offset)
        stop = offset + 4 + length
        if stop > end:
            break
        if kind == EVENT:
            events += 1
            last = (offset, stop, command, table_id)
            if state["first"] is None:
                state["first"] = (command, table_id, bytes(buffer[offset + FRAME.size : stop]))
        else:
            state["others"].append((kind, flags, request_id, bytes(buffer[offset + FRAME.size : stop])))
        offset = stop
    if last is not None:
        start, stop, command, table_id = last
        state["last"] = (command, table_id, bytes(buffer[start + FRAME.size : stop]))
    del buffer[:offset]
    return events


def subscribe_frame(table_id, from_position=None, request_id=1):
    return encode_frame(
        MessageType.SUBSCRIBE, subscribe_payload(table_id, from_position), request_id, table=SQLTable(table_id)
    )


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def spread(nanos):
    """p50/p90/p99/max of nanosecond latencies, in microseconds."""
    return {
        "p50_us": percentile(nanos, 0.50) / 1e3,
        "p90_us": percentile(nanos, 0.90) / 1e3,
        "p99_us": percentile(nanos, 0.99) / 1e3,
        "max_us": max(nanos) / 1e3,
        "count": len(nanos),
    }


def profiling(folder, name):
    """twistd arguments that profile the hub into C{folder}/C{name}.prof (nothing without a folder)."""
    if folder is None:
        return (), None
    path = Path(folder) / f"{name}.prof"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    return ("--profile", str(path), "--profiler", "cprofile", "--savestats"), path


def profile_top(path, events, limit=15):
    """The hub's functions by own time: microseconds and calls per event."""
    stats = pstats.Stats(str(path))
    entries = []
    for (filename, line, name), (_, calls, own, cumulative, _) in stats.stats.items():
        where = filename.replace(str(ROOT) + "/", "")
        if "site-packages/" in where:
            where = where.split("site-packages/", 1)[1]
        entries.append(
            {
                "function": f"{where}:{line}({name})",
                "own_us_per_event": 1e6 * own / events,
                "cumulative_us_per_event": 1e6 * cumulative / events,
                "calls_per_event": calls / events,
            }
        )
    entries.sort(key=lambda e: -e["own_us_per_event"])
    total = sum(e["own_us_per_event"] for e in entries)
    return {"profile": str(path), "events": events, "total_own_us_per_event": total, "top": entries[:limit]}


def profile_table(profile):
    """L{profile_top}'s functions as a table: own and cumulative microseconds and calls per event."""
    return table(
        ("own us/event", "cum us/event", "calls/event", "function"),
        [
            (
                f"{e['own_us_per_event']:.2f}",
                f"{e['cumulative_us_per_event']:.2f}",
                f"{e['calls_per_event']:.2f}",
                e["function"],
            )
            for e in profile["top"]
        ],
    )


def gather(processes, results, seconds):
    """One result from each process (each puts one into C{results}); fails as soon as one of them fails."""
    got, deadline = [], time.monotonic() + seconds
    while len(got) < len(processes):
        try:
            got.append(results.get(timeout=0.5))
        except queue.Empty:
            if any(process.exitcode not in (None, 0) for process in processes):
                raise RuntimeError("a bench process failed: its traceback is above") from None
            if time.monotonic() > deadline:
                raise RuntimeError("bench processes did not finish in time") from None
    for process in processes:
        process.join(10)
    return got


@contextmanager
def fresh_database():
    """A new throwaway database: every part (and every throughput run) starts from an empty change log."""
    database = Database()
    try:
        yield database
    finally:
        database.close()


def analyzed(dsn):
    """How often change_log has been analyzed (autovacuum), and the rows it holds."""
    connection = psycopg2.connect(dsn)
    cursor = connection.cursor()
    cursor.execute(
        "SELECT autoanalyze_count + analyze_count, n_live_tup FROM pg_stat_user_tables WHERE relname = 'change_log'"
    )
    (count, rows) = cursor.fetchone()
    connection.close()
    return count, rows


def others_busy(seconds=1.0):
    """The share of the machine's CPU busy while this bench does nothing (others' load)."""
    before = psutil.cpu_times()
    time.sleep(seconds)
    after = psutil.cpu_times()
    busy = sum(after) - sum(before) - (after.idle - before.idle) - (after.iowait - before.iowait)
    return busy / (sum(after) - sum(before))


# 1. Write-to-event latency


def prediction_frames(count, base):
    """One-row ML_PREDICTION INSERT frames, request_ids 1..count, told apart by ts = base + index."""
    layout = LAYOUTS[SQLTable.ML_PREDICTION].rows_request
    frames = []
    for i in range(count):
        row = {
            "id": str(uuid.uuid4()),
            "model_id": MODEL_ID,
            "symbol": "AAPL",
            "ts": Timestamp(base + i),
            "horizon": 300,
            "value": 0.0123,
            "confidence": 0.87,
            "predicted_side": "buy",
            "created_at": Timestamp(base + i),
        }
        frames.append(
            encode_frame(
                MessageType.REQUEST,
                layout.encode({"echo": False, "rows": [row]}),
                i + 1,
                command=SQLCommand.INSERT,
                table=SQLTable.ML_PREDICTION,
            )
        )
    return frames


def paced_writer(port, frames, interval_ns, start_ns, results):
    """
    Send one frame every C{interval_ns} from C{start_ns}, not waiting for the
    answers (a thread reads them): when each left, when its answer came.
    """
    sock = connect(port, Role.ML)
    count = len(frames)
    sends, acks, errors = [0] * count, [0] * count, []

    def read():
        buffer, answered = bytearray(), 0
        while answered < count:
            data = sock.recv(1 << 20)
            now = time.time_ns()
            if not data:
                break
            buffer += data
            for kind, _, _, flags, request_id, payload in whole_frames(buffer):
                if kind == ERROR:
                    errors.append(payload)
                    answered += 1
                elif kind == RESPONSE and not flags & FLAG_MORE:
                    acks[request_id - 1] = now
                    answered += 1

    reader = threading.Thread(target=read)
    reader.start()
    for i, frame in enumerate(frames):
        wait = (start_ns + i * interval_ns - time.time_ns()) / 1e9
        if wait > 0:
            time.sleep(wait)
        sends[i] = time.time_ns()
        sock.sendall(frame)
    reader.join(60)
    sock.close()
    results.put({"sends": sends, "acks": acks, "errors": len(errors)})


def push_receiver(port, count, base, ready, results, seconds):
    """Subscribe to ML_PREDICTION; when each prediction's EVENT arrived, by index."""
    sock = connect(port, Role.FRONTEND)
    sock.sendall(subscribe_frame(SQLTable.ML_PREDICTION))
    buffer, got, sent = bytearray(), {}, time.monotonic()
    deadline = time.monotonic() + seconds
    while len(got) < count and time.monotonic() < deadline:
        if select.select([sock], [], [], 0.5)[0]:
            data = sock.recv(1 << 20)
            now = time.time_ns()
            if not data:
                break
            buffer += data
            for kind, command, table_id, _, _, payload in whole_frames(buffer):
                if kind == EVENT:
                    event = decode_event(command, table_id, payload)
                    got.setdefault(event.row["ts"].ns - base, now)
                elif kind == RESPONSE:
                    ready.set()
                elif kind == ERROR:
                    raise RuntimeError(f"subscription failed: {payload!r}")
        if time.monotonic() - sent > HEARTBEAT_EVERY:
            sock.sendall(HEARTBEAT_FRAME)
            sent = time.monotonic()
    sock.close()
    results.put(got)


def poller(port, count, base, interval_ns, ready, results, seconds):
    """
    What clients do without push: SELECT the predictions newer than the
    newest seen, every C{interval_ns}; when each was first seen, by index.
    """
    sock = connect(port, Role.FRONTEND)
    buffer, got, newest, polls, request_id = bytearray(), {}, base - 1, 0, 0
    deadline = time.monotonic() + seconds
    due = time.time_ns()
    ready.set()
    while len(got) < count and time.monotonic() < deadline:
        wait = (due - time.time_ns()) / 1e9
        if wait > 0:
            time.sleep(wait)
        due = max(due + interval_ns, time.time_ns())
        request_id += 1
        payload = select_payload(SQLTable.ML_PREDICTION, since=Timestamp(newest + 1), limit=1000)
        sock.sendall(
            encode_frame(
                MessageType.REQUEST, payload, request_id, command=SQLCommand.SELECT, table=SQLTable.ML_PREDICTION
            )
        )
        parts, now = [], None
        while now is None:
            data = sock.recv(1 << 20)
            stamp = time.time_ns()
            buffer += data
            for kind, _, _, flags, answered, part in whole_frames(buffer):
                if kind == ERROR:
                    raise RuntimeError(f"poll failed: {part!r}")
                if kind == RESPONSE and answered == request_id:
                    parts.append(part)
                    if not flags & FLAG_MORE:
                        now = stamp
        polls += 1
        for row in decode_result(SQLTable.ML_PREDICTION, b"".join(parts)).rows:
            got.setdefault(row["ts"].ns - base, now)
            newest = max(newest, row["ts"].ns)
    sock.close()
    results.put({"got": got, "polls": polls})


def notify_listener(dsn, channel, count, ready, results, seconds):
    """LISTEN on C{channel}; when each NOTIFY (payload: its index) arrived."""
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    connection.cursor().execute(f"LISTEN {channel}")
    ready.set()
    got = {}
    deadline = time.monotonic() + seconds
    while len(got) < count and time.monotonic() < deadline:
        if select.select([connection], [], [], 0.5)[0]:
            connection.poll()
            now = time.time_ns()
            while connection.notifies:
                got.setdefault(int(connection.notifies.pop(0).payload), now)
    connection.close()
    results.put(got)


def notify_sender(dsn, channel, count, interval_ns, start_ns, with_insert):
    """NOTIFY C{count} times, paced; with C{with_insert}, each in the transaction of an INSERT. Send times."""
    connection = psycopg2.connect(dsn)
    connection.autocommit = not with_insert
    cursor = connection.cursor()
    sends = [0] * count
    for i in range(count):
        wait = (start_ns + i * interval_ns - time.time_ns()) / 1e9
        if wait > 0:
            time.sleep(wait)
        sends[i] = time.time_ns()
        if with_insert:
            cursor.execute("INSERT INTO bench_floor (n) VALUES (%s)", (i,))
            cursor.execute("SELECT pg_notify(%s, %s)", (channel, str(i)))
            connection.commit()
        else:
            cursor.execute("SELECT pg_notify(%s, %s)", (channel, str(i)))
    connection.close()
    return sends


def _started(process_target, args):
    ready = multiprocessing.Event()
    results = multiprocessing.Queue()
    process = multiprocessing.Process(target=process_target, args=(*args[:-1], ready, results, args[-1]))
    process.start()
    deadline = time.monotonic() + 30
    while not ready.wait(0.5):
        if process.exitcode is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process_target.__name__} did not start")
    return process, results


def _finish(process, results, seconds):
    [value] = gather([process], results, seconds)
    return value


def hub_path(daemon, count, rate, base, receiver):
    """Paced writes through the hub, seen by C{receiver} (push_receiver or poller): per-write times."""
    interval = int(1e9 / rate)
    frames = prediction_frames(count, base)
    seconds = count / rate + 20
    if receiver is push_receiver:
        process, seen = _started(push_receiver, (daemon.frontend_port, count, base, seconds))
    else:
        process, seen = _started(poller, (daemon.frontend_port, count, base, 10_000_000, seconds))
    hub = daemon.process.pid
    cpu = cpu_seconds(hub)
    writes = multiprocessing.Queue()
    writer = multiprocessing.Process(
        target=paced_writer, args=(daemon.ml_port, frames, interval, time.time_ns() + 300_000_000, writes)
    )
    writer.start()
    [written] = gather([writer], writes, seconds)
    got = _finish(process, seen, seconds)
    cpu = cpu_seconds(hub) - cpu
    if receiver is poller:
        got, polls = got["got"], got["polls"]
    else:
        polls = None
    return written, got, cpu, polls


def latency_figures(written, got):
    sends, acks = written["sends"], written["acks"]
    seen = [i for i in range(len(sends)) if i in got]
    figures = {
        "writes": len(sends),
        "seen": len(seen),
        "errors": written["errors"],
        "write_to_event": spread([got[i] - sends[i] for i in seen]),
        "ack_to_event": spread([got[i] - acks[i] for i in seen if acks[i]]),
        "write_to_ack": spread([acks[i] - sends[i] for i in range(len(sends)) if acks[i]]),
        "rate_per_s": (len(sends) - 1) / ((sends[-1] - sends[0]) / 1e9),
        # The slowest writes: when they were sent (ms into the run) and where their time went (ms).
        "worst": [
            {
                "sent_at_ms": (sends[i] - sends[0]) / 1e6,
                "write_to_ack_ms": (acks[i] - sends[i]) / 1e6,
                "ack_to_event_ms": (got[i] - acks[i]) / 1e6,
            }
            for i in sorted(seen, key=lambda i: got[i] - sends[i])[-5:]
        ],
    }
    return figures


def floor_path(dsn, count, rate, with_insert):
    channel = "bench_floor"
    interval = int(1e9 / rate)
    seconds = count / rate + 20
    process, arrivals = _started(notify_listener, (dsn, channel, count, seconds))
    sends = notify_sender(dsn, channel, count, interval, time.time_ns() + 100_000_000, with_insert)
    got = _finish(process, arrivals, seconds)
    seen = [i for i in range(count) if i in got]
    return {
        "writes": count,
        "seen": len(seen),
        "write_to_event": spread([got[i] - sends[i] for i in seen]),
        "worst": [
            {"sent_at_ms": (sends[i] - sends[0]) / 1e6, "write_to_event_ms": (got[i] - sends[i]) / 1e6}
            for i in sorted(seen, key=lambda i: got[i] - sends[i])[-5:]
        ],
    }


def latency(writes, rate, profile=None):
    with fresh_database() as database:
        return _latency(database, writes, rate, profile)


def _latency(database, writes, rate, profile):
    connection = psycopg2.connect(database.dsn)
    connection.autocommit = True
    connection.cursor().execute("CREATE TABLE bench_floor (n bigint)")
    connection.close()
    results = {"rate": rate}
    results["notify"] = floor_path(database.dsn, writes, rate, with_insert=False)
    results["insert_notify"] = floor_path(database.dsn, writes, rate, with_insert=True)
    twistd_args, profile_path = profiling(profile, "latency")
    daemon = Daemon(database, twistd_args=twistd_args).wait_ready()
    try:
        with BlockingClient("127.0.0.1", daemon.ml_port, Role.ML, TOKENS["ML"], "bench-push") as ml:
            ml.insert(
                SQLTable.ML_MODEL,
                [
                    {
                        "id": MODEL_ID,
                        "name": "bench",
                        "version": "1",
                        "framework": "none",
                        "hyperparameters": "{}",
                        "metrics": "{}",
                        "artifact": None,
                        "artifact_uri": None,
                        "status": "ready",
                        "created_at": None,
                    }
                ],
            )
        # A few writes first, so neither path pays a cold start.
        hub_path(daemon, 200, rate, PUSH_BASE - 10_000, push_receiver)
        written, got, cpu, _ = hub_path(daemon, writes, rate, PUSH_BASE, push_receiver)
        results["push"] = latency_figures(written, got) | {"hub_cpu_us_per_write": 1e6 * cpu / writes}
        if profile_path is None:
            written, got, cpu, polls = hub_path(daemon, writes, rate, POLL_BASE, poller)
            results["poll"] = latency_figures(written, got) | {
                "hub_cpu_us_per_write": 1e6 * cpu / writes,
                "polls": polls,
            }
    finally:
        daemon.stop()
    if profile_path is not None:
        # Profiled, the run is the push path alone (its warm-up writes included).
        results["profile"] = profile_top(profile_path, writes + 200)
    return results


# 2. Throughput and fan-out


def counting_subscriber(port, role, table_id, from_position, expected, ready, results, index, seconds):
    """
    Subscribe and count EVENT frames until C{expected} came (or C{seconds}
    passed): the count, when the first and last came, and the first and
    last decoded (to check them).
    """
    sock = connect(port, role)
    cpu = time.process_time()
    subscribed_at = time.time()
    sock.sendall(subscribe_frame(table_id, from_position))
    buffer, state = bytearray(), {"first": None, "last": None, "others": []}
    count, first_at, last_at, position = 0, None, None, None
    sent = time.monotonic()
    deadline = time.monotonic() + seconds
    while count < expected and time.monotonic() < deadline:
        if select.select([sock], [], [], 0.5)[0]:
            data = sock.recv(1 << 20)
            now = time.time()
            if not data:
                break
            buffer += data
            events = count_frames(buffer, state)
            if events:
                count += events
                first_at = first_at or now
                last_at = now
            for kind, _, _, payload in state["others"]:
                if kind == RESPONSE and position is None:
                    position = SUBSCRIBED.decode(payload).position
                    ready.set()
                elif kind == ERROR:
                    raise RuntimeError(f"subscription failed: {payload!r}")
            state["others"].clear()
        if time.monotonic() - sent > HEARTBEAT_EVERY:
            sock.sendall(HEARTBEAT_FRAME)
            sent = time.monotonic()
    sock.close()
    ends = {}
    for end in ("first", "last"):
        if state[end] is not None:
            event = decode_event(*state[end])
            ends[end] = {"position": event.position, "seq": event.row.get("seq"), "table": event.table.name}
    results.put(
        {
            "index": index,
            "count": count,
            "subscribed_at": subscribed_at,
            "first_at": first_at,
            "last_at": last_at,
            "position": position,
            "cpu_s": time.process_time() - cpu,
            **ends,
        }
    )


def pipelined_writer(port, frames, rows, start_at, results):
    """Send every frame at once while a thread reads the answers: (first send, last answer, rows, errors)."""
    sock = connect(port)
    expected = len(frames)
    outcome = {"errors": 0}

    def read():
        buffer, answered = bytearray(), 0
        while answered < expected:
            buffer += sock.recv(1 << 20)
            for kind, _, _, flags, _, _ in whole_frames(buffer):
                if kind == ERROR:
                    outcome["errors"] += 1
                    answered += 1
                elif kind == RESPONSE and not flags & FLAG_MORE:
                    answered += 1
        outcome["end"] = time.time()

    reader = threading.Thread(target=read)
    while time.time() < start_at:
        time.sleep(0.001)
    reader.start()
    begin = time.time()
    sock.sendall(b"".join(frames))
    reader.join()
    sock.close()
    results.put((begin, outcome["end"], rows, outcome["errors"]))


def tick_frames(rows, per_insert):
    """INSERT frames of C{per_insert} ticks each."""
    if per_insert == 1:
        return frames_for(rows, 1)
    layout = LAYOUTS[SQLTable.MARKET_TICK].rows_request
    return [
        encode_frame(
            MessageType.REQUEST,
            layout.encode({"echo": False, "rows": rows[first : first + per_insert]}),
            first // per_insert + 1,
            command=SQLCommand.INSERT,
            table=SQLTable.MARKET_TICK,
        )
        for first in range(0, len(rows), per_insert)
    ]


def pipeline_ticks(port, frame_sets, rows_each):
    """Pipeline each frame set from its own process, together: (first send, last answer, rows, errors)."""
    results = multiprocessing.Queue()
    start_at = time.time() + 0.3
    processes = [
        multiprocessing.Process(target=pipelined_writer, args=(port, frames, rows, start_at, results))
        for frames, rows in zip(frame_sets, rows_each, strict=True)
    ]
    for process in processes:
        process.start()
    spans = gather(processes, results, 600)
    return (
        min(s[0] for s in spans),
        max(s[1] for s in spans),
        sum(s[2] for s in spans),
        sum(s[3] for s in spans),
    )


def truncate_ticks(dsn):
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    connection.cursor().execute("TRUNCATE market_tick")
    connection.close()


def start_subscribers(port, count, expected, seconds, from_position=None):
    results = multiprocessing.Queue()
    readies, processes = [], []
    for index in range(count):
        ready = multiprocessing.Event()
        process = multiprocessing.Process(
            target=counting_subscriber,
            args=(port, Role.ML, SQLTable.MARKET_TICK, from_position, expected, ready, results, index, seconds),
        )
        process.start()
        readies.append(ready)
        processes.append(process)
    return processes, readies, results


def collect(processes, results, seconds):
    got = gather(processes, results, seconds)
    return sorted(got, key=lambda r: r["index"])


def throughput_run(database, frame_sets, rows_each, subscribers, per_insert, log, profile):
    """
    One run: C{subscribers} follow MARKET_TICK while the frame sets are
    pipelined. C{log} is the change log's state: "new" (empty, never
    analyzed) or "analyzed" (it holds earlier changes and planner statistics).
    """
    truncate_ticks(database.dsn)
    if log == "analyzed":
        connection = psycopg2.connect(database.dsn)
        connection.autocommit = True
        connection.cursor().execute("ANALYZE change_log")
        connection.close()
    rows = sum(rows_each)
    twistd_args, profile_path = profiling(profile, f"throughput-{log}-{subscribers}-subscribers-{per_insert}-rows")
    daemon = Daemon(database, twistd_args=twistd_args).wait_ready()
    try:
        hub = daemon.process.pid
        seconds = 300
        processes, readies, results = start_subscribers(daemon.ml_port, subscribers, rows, seconds)
        deadline = time.monotonic() + 60
        while not all(ready.wait(0.1) for ready in readies):
            if any(p.exitcode is not None for p in processes) or time.monotonic() > deadline:
                raise RuntimeError("a subscriber did not subscribe")
        cpu = cpu_seconds(hub)
        begin, end, stored, errors = pipeline_ticks(daemon.frontend_port, frame_sets, rows_each)
        got = collect(processes, results, seconds)
        cpu = cpu_seconds(hub) - cpu
    finally:
        daemon.stop()
    analyzes, _ = analyzed(database.dsn)
    assert errors == 0 and stored == rows, (errors, stored)
    events = sum(g["count"] for g in got)
    figures = {
        "change_log": log,
        "subscribers": subscribers,
        "rows_per_insert": per_insert,
        "connections": len(frame_sets),
        "rows": rows,
        "ingest_rows_per_s": rows / (end - begin),
        "events": events,
        "hub_cpu_s": cpu,
        "hub_cpu_us_per_row": 1e6 * cpu / rows,
        "change_log_analyzes": analyzes,
    }
    if subscribers:
        for g in got:
            assert g["count"] == rows, g
            assert g["last"]["position"] - g["first"]["position"] + 1 == rows, g
        last = max(g["last_at"] for g in got)
        # Each subscriber's events over the writers' span: from the first write sent to its last event.
        each = [rows / (g["last_at"] - begin) for g in got]
        steady = [(rows - 1) / (g["last_at"] - g["first_at"]) for g in got]
        figures.update(
            events_per_s_first_to_last_min=min(steady),
            subscriber_cpu_us_per_event=1e6 * sum(g["cpu_s"] for g in got) / events,
            events_per_s_each_min=min(each),
            events_per_s_each_mean=sum(each) / len(each),
            events_per_s_total=events / (last - begin),
            events_vs_ingest=min(each) / figures["ingest_rows_per_s"],
            last_event_after_last_answer_ms=1000 * (last - end),
            hub_cpu_us_per_event=1e6 * cpu / events,
            check=got[0]["first"] | {"last": got[0]["last"]},
        )
    if profile_path is not None:
        figures["profile"] = profile_top(profile_path, max(events, rows))
    return figures


def throughput(rows_count, fanout, profile, seed=100_000):
    """
    The runs on a change log that has run a while ({seed} changes, analyzed),
    then one subscriber on a new change log (never analyzed).
    """
    rows = list(ticks(rows_count, 0))
    connections = 4
    share = rows_count // connections
    parts = [rows[i * share : (i + 1) * share] for i in range(connections)]
    runs = []
    frame_sets = {per_insert: [tick_frames(part, per_insert) for part in parts] for per_insert in (1, 100)}
    with fresh_database() as database:
        preload(database.dsn, seed)
        for per_insert, configurations in ((1, (0, 1, fanout)), (100, (0, 1))):
            for subscribers in configurations:
                run = throughput_run(
                    database,
                    frame_sets[per_insert],
                    [share] * connections,
                    subscribers,
                    per_insert,
                    "analyzed",
                    profile,
                )
                if subscribers == 0:
                    alone = run
                else:
                    # The hub's CPU beyond what the same ingest cost it with nobody subscribed.
                    run["hub_cpu_us_per_event_beyond_ingest"] = (
                        1e6 * (run["hub_cpu_s"] - alone["hub_cpu_s"]) / run["events"]
                    )
                runs.append(run)
    with fresh_database() as database:
        run = throughput_run(database, frame_sets[1], [share] * connections, 1, 1, "new", profile)
        run["hub_cpu_us_per_event_beyond_ingest"] = 1e6 * (run["hub_cpu_s"] - runs[0]["hub_cpu_s"]) / run["events"]
        runs.append(run)
    return runs


# 3. Catch-up


PRELOAD = """
INSERT INTO market_tick (symbol, ts, ts_ns, seq, kind, price, size, exchange, conditions, tape)
SELECT (ARRAY['AAPL', 'MSFT', 'NVDA', 'AMZN', 'GOOG', 'META', 'TSLA', 'SPY'])[1 + i %% 8],
       to_timestamp(1700000000) + i * interval '1 microsecond', (i %% 1000)::smallint, i, 'trade',
       100 + i / 1e9, i %% 500 + 1, 'V', '{@,I}', 'C'
FROM generate_series(%s, %s) AS i
"""


def preload(dsn, changes, batch=100_000):
    """C{changes} tick INSERTs in the change log, numbered (as a hub's relay would have): seconds taken."""
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    cursor = connection.cursor()
    begin = time.perf_counter()
    for first in range(0, changes, batch):
        cursor.execute(PRELOAD, (first, min(changes, first + batch) - 1))
    last = 0
    while last < changes:
        cursor.execute("SELECT change_log_relay(%s)", (batch,))
        (last,) = cursor.fetchone()
    cursor.execute("VACUUM ANALYZE change_log")
    cursor.execute("VACUUM ANALYZE market_tick")
    connection.close()
    return time.perf_counter() - begin


def direct_read(dsn, changes, page):
    """The floor: psycopg2 reading the same changes with the hub's own statement, a page at a time."""
    repository = ChangeLogRepository({SQLTable.MARKET_TICK: Repository(MARKET_TICK)})
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    cursor = connection.cursor()
    position, read = 0, 0
    begin = time.perf_counter()
    while position < changes:
        statement, params = repository.changes_statement(SQLTable.MARKET_TICK, position, changes, {}, page)
        cursor.execute(statement, params)
        records = cursor.fetchall()
        read += len(records)
        position = records[-1][0]
    seconds = time.perf_counter() - begin
    connection.close()
    assert read == changes, read
    return changes / seconds


def catch_up(changes, profile):
    with fresh_database() as database:
        preload_seconds = preload(database.dsn, changes)
        direct = direct_read(database.dsn, changes, 500)
        twistd_args, profile_path = profiling(profile, "catch-up")
        daemon = Daemon(database, twistd_args=twistd_args).wait_ready()
        try:
            hub = daemon.process.pid
            cpu = cpu_seconds(hub)
            processes, readies, results = start_subscribers(daemon.ml_port, 1, changes, 600, from_position=0)
            [got] = collect(processes, results, 600)
            cpu = cpu_seconds(hub) - cpu
        finally:
            daemon.stop()
    assert got["count"] == changes and got["first"]["position"] == 1 and got["last"]["position"] == changes, got
    seconds = got["last_at"] - got["subscribed_at"]
    figures = {
        "changes": changes,
        "preload_s": preload_seconds,
        "seconds": seconds,
        "events_per_s": changes / seconds,
        "direct_changes_per_s": direct,
        "vs_direct": changes / seconds / direct,
        "hub_cpu_us_per_event": 1e6 * cpu / changes,
    }
    if profile_path is not None:
        figures["profile"] = profile_top(profile_path, changes)
    return figures


# 4. What the change log costs writes


def set_capture(dsn, on):
    """Enable or disable the change log's capture triggers of market_tick and order (only those)."""
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    cursor = connection.cursor()
    for table_name, triggers in TRIGGERS.items():
        for trigger in triggers:
            cursor.execute(f'ALTER TABLE "{table_name}" {"ENABLE" if on else "DISABLE"} TRIGGER {trigger}')
    connection.close()


def order_load(binary, port, connections, seconds):
    result = subprocess.run(
        [str(binary), "127.0.0.1", str(port), TOKENS["FRONTEND"], str(connections), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(result.stdout.split()[0]) / seconds


def write_cost(rows_count, seconds, rounds=2, connections=16):
    with fresh_database() as database:
        return _write_cost(database, rows_count, seconds, rounds, connections)


def _write_cost(database, rows_count, seconds, rounds, connections):
    connection = psycopg2.connect(database.dsn)
    connection.autocommit = True
    connection.cursor().execute("CREATE SEQUENCE IF NOT EXISTS bench_order_ids")
    connection.close()
    rows = list(ticks(rows_count, 0))
    share = rows_count // 4
    frame_sets = [frames_for(rows[i * share : (i + 1) * share], 1) for i in range(4)]
    binary = compile_cpp(ROOT / "bench" / "cpp" / "order_load.cpp")
    samples = {True: [], False: []}
    daemon = Daemon(database, TRADEHUB_DB_POOL_MAX=connections).wait_ready()
    try:
        for _ in range(rounds):
            for on in (True, False):
                set_capture(database.dsn, on)
                truncate_ticks(database.dsn)
                begin, end, stored, errors = pipeline_ticks(daemon.frontend_port, frame_sets, [share] * 4)
                assert errors == 0, errors
                samples[on].append(
                    {
                        "ingest_rows_per_s": stored / (end - begin),
                        "order_tps": order_load(binary, daemon.frontend_port, connections, seconds),
                        "pgbench_order_tps": pgbench(database, connections, seconds),
                    }
                )
    finally:
        daemon.stop()
        set_capture(database.dsn, True)
        shutil.rmtree(binary.parent, ignore_errors=True)
    mean = {on: {k: sum(s[k] for s in runs) / len(runs) for k in runs[0]} for on, runs in samples.items()}
    return {
        "rounds": rounds,
        "connections": connections,
        "ingest_rows": rows_count,
        "on": mean[True],
        "off": mean[False],
        "ratio": {k: mean[True][k] / mean[False][k] for k in mean[True]},
        "samples": {"on": samples[True], "off": samples[False]},
    }


# Output


def _spread_row(name, figure):
    f = figure["write_to_event"]
    return (name, f"{f['p50_us']:,.0f}", f"{f['p90_us']:,.0f}", f"{f['p99_us']:,.0f}", f"{f['max_us']:,.0f}")


def report(results):
    if "latency" in results:
        lat = results["latency"]
        push = lat["push"]
        poll = lat.get("poll")
        print(
            f"write-to-event latency, {push['writes']} one-row ML_PREDICTION INSERTs paced at {lat['rate']}/s "
            f"(sent {push['rate_per_s']:,.0f}/s), microseconds, time.time_ns() at send and at recv"
        )
        print(
            table(
                ("path", "p50", "p90", "p99", "max"),
                [
                    _spread_row("hub push: INSERT -> EVENT", push),
                    *([_spread_row("hub poll every 10 ms: INSERT -> SELECT", poll)] if poll else []),
                    _spread_row("psycopg2 NOTIFY -> LISTEN (floor)", lat["notify"]),
                    _spread_row("psycopg2 INSERT+NOTIFY commit -> LISTEN", lat["insert_notify"]),
                ],
            )
        )
        for name, figure in (("push", push), ("poll", poll)):
            if figure is None:
                continue
            ack, after = figure["write_to_ack"], figure["ack_to_event"]
            print(
                f"  {name}: INSERT -> its answer p50 {ack['p50_us']:,.0f} p99 {ack['p99_us']:,.0f} us; "
                f"answer -> event p50 {after['p50_us']:,.0f} p99 {after['p99_us']:,.0f} us; "
                f"{figure['seen']}/{figure['writes']} seen; hub CPU {figure['hub_cpu_us_per_write']:,.0f} us per write"
                + (f" ({figure['polls']} polls)" if name == "poll" else "")
            )
        slowest = "; ".join(
            f"at {w['sent_at_ms']:,.0f} ms: answer {w['write_to_ack_ms']:.1f} + event {w['ack_to_event_ms']:.1f}"
            for w in push["worst"]
        )
        print(f"  slowest push writes (ms): {slowest}")
    if "throughput" in results:
        print(
            "\nevent rate while FRONTEND writers pipeline MARKET_TICK INSERTs from 4 connections as fast as they can; "
            "each subscriber's events/s are over the writers' span (first write sent to its last event), "
            "steady = its first to its last event; lag = last event after the last write's answer"
        )
        rows = []
        for r in results["throughput"]:
            if r["subscribers"]:
                push = (
                    f"{r['events_per_s_each_min']:,.0f}",
                    f"{r['events_vs_ingest']:.2f}x",
                    f"{r['events_per_s_first_to_last_min']:,.0f}",
                    f"{r['events_per_s_total']:,.0f}",
                    f"{r['last_event_after_last_answer_ms']:,.0f}",
                    f"{r['hub_cpu_us_per_event']:,.1f}",
                    f"{r['hub_cpu_us_per_event_beyond_ingest']:,.1f}",
                    f"{r['subscriber_cpu_us_per_event']:,.1f}",
                )
            else:
                push = ("-",) * 8
            rows.append(
                (
                    r["change_log"],
                    r["rows_per_insert"],
                    r["subscribers"],
                    f"{r['ingest_rows_per_s']:,.0f}",
                    *push,
                    f"{r['hub_cpu_us_per_row']:,.0f}",
                )
            )
        print(
            table(
                (
                    "change log",
                    "rows/INSERT",
                    "subs",
                    "ingest rows/s",
                    "events/s each",
                    "vs ingest",
                    "steady each",
                    "events/s total",
                    "lag ms",
                    "hub us/event",
                    "beyond ingest",
                    "client us/event",
                    "hub us/row",
                ),
                rows,
            )
        )
    if "catchup" in results:
        c = results["catchup"]
        print(
            f"\ncatch-up: one subscriber from position 0 over {c['changes']:,} preloaded tick changes "
            f"(preloaded in {c['preload_s']:.0f} s)"
        )
        print(
            table(
                ("path", "changes/s", "vs direct", "hub CPU us/event"),
                [
                    (
                        "hub SUBSCRIBE from_position=0",
                        f"{c['events_per_s']:,.0f}",
                        f"{c['vs_direct']:.2f}x",
                        f"{c['hub_cpu_us_per_event']:.1f}",
                    ),
                    ("psycopg2, the hub's statement, 500/page", f"{c['direct_changes_per_s']:,.0f}", "1.00x", "-"),
                ],
            )
        )
    if "cost" in results:
        w = results["cost"]
        print(
            f"\nwhat the change log costs writes: capture triggers on vs off (ALTER TABLE ... DISABLE TRIGGER "
            f"of the <table>_change_* triggers), {w['rounds']} interleaved rounds, means"
        )
        print(
            table(
                ("load", "triggers on", "triggers off", "on / off"),
                [
                    ("tick ingest, 4 pipelined connections, rows/s", *_cost(w, "ingest_rows_per_s")),
                    (f"ORDER inserts via hub, {w['connections']} C++ clients, tps", *_cost(w, "order_tps")),
                    (f"ORDER inserts, pgbench -c {w['connections']}, tps", *_cost(w, "pgbench_order_tps")),
                ],
            )
        )
    for name, profile in results.get("profiles", {}).items():
        print(
            f"\nprofile ({name}): hub's own time {profile['total_own_us_per_event']:.1f} us per event "
            f"under cProfile, top functions"
        )
        print(profile_table(profile))


def _cost(figures, key):
    return f"{figures['on'][key]:,.0f}", f"{figures['off'][key]:,.0f}", f"{figures['ratio'][key]:.2f}x"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--writes", type=int, default=3000, help="paced writes per latency path")
    parser.add_argument("--rate", type=int, default=1000, help="writes per second for latency")
    parser.add_argument("--ticks", type=int, default=60_000, help="ticks ingested per throughput run")
    parser.add_argument("--fanout", type=int, default=16, help="subscribers of the fan-out run")
    parser.add_argument("--changes", type=int, default=200_000, help="preloaded changes to catch up on")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per ORDER load in the write cost")
    parser.add_argument("--cost-ticks", type=int, default=40_000, help="ticks per ingest in the write cost")
    parser.add_argument(
        "--parts", nargs="+", default=["latency", "throughput", "catchup", "cost"], help="which parts to run"
    )
    parser.add_argument("--profile", help="profile the hub (cProfile) in the throughput and catch-up runs into DIR")
    parser.add_argument("--json", help="also write the figures to this file")
    options = parser.parse_args(argv)
    if options.profile:
        Path(options.profile).mkdir(parents=True, exist_ok=True)

    results = {
        "others_busy_before": others_busy(),
        "load_average_before": os.getloadavg(),
        "placement": "unpinned: hub, PostgreSQL and every client process share the machine's cores",
        "profiled": bool(options.profile),
    }
    began = time.monotonic()
    if "catchup" in options.parts:
        results["catchup"] = catch_up(options.changes, options.profile)
    if "latency" in options.parts:
        results["latency"] = latency(options.writes, options.rate, options.profile)
    if "throughput" in options.parts:
        results["throughput"] = throughput(options.ticks, options.fanout, options.profile)
    if "cost" in options.parts:
        results["cost"] = write_cost(options.cost_ticks, options.seconds)
    results["seconds"] = time.monotonic() - began
    results["load_average_after"] = os.getloadavg()
    profiles = {}
    for run in results.get("throughput", []):
        if "profile" in run:
            name = f"{run['change_log']} log, {run['subscribers']} subscribers, {run['rows_per_insert']} rows/INSERT"
            profiles[name] = run.pop("profile")
    if "latency" in results and "profile" in results["latency"]:
        profiles["latency, one write at a time"] = results["latency"].pop("profile")
    if "catchup" in results and "profile" in results["catchup"]:
        profiles["catch-up"] = results["catchup"].pop("profile")
    if profiles:
        results["profiles"] = profiles
    report(results)
    print(
        f"\n{results['seconds']:.0f} s; others' load before the run {100 * results['others_busy_before']:.0f}% "
        f"of {os.cpu_count()} cores, load average {results['load_average_before'][0]:.1f} before, "
        f"{results['load_average_after'][0]:.1f} after; processes unpinned"
        + ("; PROFILED (figures slowed by cProfile)" if options.profile else "")
    )
    if options.json:
        Path(options.json).write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
