"""
Random and mutated frames from several connections at a live hub over
loopback, on real PostgreSQL: afterwards a well-behaved client still gets
correct answers and no request left a partial write behind. A seed decides
every byte thrown, whatever the hub answers: the fixed seeds throw the same
frames on every run, and one test draws new seeds each run and prints them
so that a failure can be replayed.
"""

import os
import random
import socket
import struct

from twisted.internet.defer import gatherResults
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from tradehub.client import BlockingClient, HubError
from tradehub.protocol.enums import ErrorCode, Role, SQLCommand, SQLTable
from tradehub.protocol.messages import encode_frame
from tradehub.protocol.tables import LAYOUTS

from . import rows, wire
from .hub import BATCH, COUNT, NOTES_TABLE, notes_registry, start_hub, table_registry
from .support import blocking_query

CONNECTIONS = 4
FRAMES_EACH = 2500
CLOSING_CODES = {code.name for code in ErrorCode if code.closes}


def valid_insert(rng):
    """A multi-row notes INSERT and its (batch, size)."""
    notes = [
        rng.choice(["", "x" * rng.randint(1, 30)]) if rng.random() < 0.2 else f"n{rng.randint(0, 99)}"
        for _ in range(rng.randint(1, 5))
    ]
    batch = f"b{rng.getrandbits(48)}"
    payload = BATCH.encode({"batch": batch, "notes": notes})
    return wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, payload, rng.getrandbits(64)), (batch, len(notes))


def tick_batch(rng):
    """A multi-row tick INSERT; its rows carry their batch (exchange) and its size (tape)."""
    batch = f"b{rng.getrandbits(40)}"
    size = rng.randint(1, 6)
    ticks = [
        rows.tick(rng.getrandbits(40), exchange=batch, tape=str(size), symbol=rng.choice(["AAPL", "msft"]))
        for _ in range(size)
    ]
    if rng.random() < 0.2:
        ticks[rng.randrange(size)]["price"] = None
    payload = LAYOUTS[SQLTable.MARKET_TICK].rows_request.encode({"echo": False, "rows": ticks})
    return wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, payload, rng.getrandbits(64)), (batch, size)


def fuzz_frame(rng, valid_insert=valid_insert):
    """
    One frame to throw, and the (batch, size) of the valid insert it is when
    it was sent unmutated (None otherwise: a mutated frame may still decode
    into some other valid request).
    """
    roll = rng.random()
    if roll < 0.3:
        return valid_insert(rng)
    if roll < 0.55:
        frame = bytearray(valid_insert(rng)[0])
        for _ in range(rng.randint(1, 3)):
            frame[rng.randrange(len(frame))] = rng.getrandbits(8)
        return bytes(frame), None
    if roll < 0.65:
        frame = valid_insert(rng)[0]
        return frame[: rng.randrange(len(frame))] + valid_insert(rng)[0], None
    if roll < 0.85:
        payload = rng.randbytes(rng.randint(0, 64))
        return encode_frame(
            rng.randint(0, 12), payload, rng.getrandbits(64), rng.randint(0, 7), rng.randint(0, 13), rng.getrandbits(16)
        ), None
    if roll < 0.9:
        return rng.randbytes(rng.randint(1, 40)), None
    return rng.choice([wire.hello(), wire.heartbeat(), wire.shutdown(), struct.pack("<I", rng.getrandbits(32))]), None


def fuzz_plan(seed, valid_insert=valid_insert):
    """
    What to throw, drawn from the seed alone so that a seed always throws the
    same bytes whatever the hub answers: connections of FRAMES_EACH frames in
    all (each opened with a HELLO or not), and the (batch, size) of every
    unmutated insert among them.
    """
    rng = random.Random(seed)
    connections = []
    clean = {}
    for _ in range(FRAMES_EACH):
        if not connections or rng.random() < 0.1:
            says_hello = rng.random() < 0.9
            connections.append([wire.hello(rng.choice([Role.FRONTEND, Role.ML]))] if says_hello else [])
        frame, batch = fuzz_frame(rng, valid_insert)
        connections[-1].append(frame)
        if batch is not None:
            clean[batch[0]] = batch[1]
    return connections, clean


def fuzz_connection(port, seed, valid_insert=valid_insert):
    """
    Throw the seed's plan at the hub, a connection at a time, reading what
    it answers; once the hub has closed a connection the rest of its frames
    are not sent (the hub would drop them). Returns the plan's unmutated batches.
    """
    connections, clean = fuzz_plan(seed, valid_insert)
    for frames in connections:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            try:
                for frame in frames:
                    sock.sendall(frame)
                    if not _drain(sock):
                        break
            except OSError:
                pass
    return clean


def closing_errors(test):
    """The codes of the closing errors the hub logs from now on, in a list that fills as they come."""
    codes = []

    def observe(event):
        if event.get("code") in CLOSING_CODES:
            codes.append(event["code"])

    globalLogPublisher.addObserver(observe)
    test.addCleanup(globalLogPublisher.removeObserver, observe)
    return codes


def whole_or_absent(test, stored_counts, sent, replay):
    """Every unmutated batch is stored whole or not at all; enough of them were stored."""
    torn = {
        batch: (stored_counts.get(batch, 0), size)
        for batch, size in sent.items()
        if stored_counts.get(batch, 0) not in (0, size)
    }
    test.assertEqual(torn, {}, f"batches stored in part: (rows stored, rows sent) ({replay})")
    whole = sum(1 for batch, size in sent.items() if stored_counts.get(batch) == size)
    test.assertGreater(whole, 20, f"the fuzz should also have written valid batches ({replay})")


def _drain(sock):
    """Read whatever the hub sent; False once it closed the connection."""
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return False
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)


class FuzzTests(TestCase):
    timeout = 240

    async def fuzz_notes(self, seeds):
        """Throw the plans of C{seeds} at the stand-in table, then check the hub and the database."""
        replay = f"seeds {seeds[0]}..{seeds[-1]}"
        hub = await start_hub(self, notes_registry, max_in_flight=64)
        await deferToThread(blocking_query, hub.dsn, NOTES_TABLE)
        closing = closing_errors(self)
        outcomes = await gatherResults([deferToThread(fuzz_connection, hub.port, seed) for seed in seeds])
        self.assertTrue(closing, f"the fuzz never provoked a closing error ({replay})")

        def well_behaved():
            with BlockingClient("127.0.0.1", hub.port, Role.FRONTEND, wire.FRONTEND_TOKEN) as client:
                [written] = client.call(
                    SQLCommand.INSERT, SQLTable.MARKET_TICK, BATCH.encode({"batch": "final", "notes": ["a", "b", "c"]})
                )
                [counted] = client.call(
                    SQLCommand.SELECT, SQLTable.MARKET_TICK, BATCH.encode({"batch": "final", "notes": []})
                )
                with self.assertRaises(HubError) as refused:
                    client.call(
                        SQLCommand.INSERT, SQLTable.MARKET_TICK, BATCH.encode({"batch": "half", "notes": ["ok", ""]})
                    )
                return COUNT.decode(written)["rows"], COUNT.decode(counted)["rows"], refused.exception

        written, counted, refused = await deferToThread(well_behaved)
        self.assertEqual((written, counted, refused.code), (3, 3, 10), replay)
        counts = await deferToThread(blocking_query, hub.dsn, "SELECT batch, count(*) FROM fuzz_notes GROUP BY batch")
        sent = {batch: size for clean in outcomes for batch, size in clean.items()}
        whole_or_absent(self, dict(counts), sent, replay)

    async def test_ten_thousand_bad_frames_leave_the_hub_correct_and_the_database_whole(self):
        await self.fuzz_notes(range(CONNECTIONS))

    async def test_frames_of_a_new_seed_each_run_leave_the_hub_correct_and_the_database_whole(self):
        """Explores beyond the fixed seeds; the seed is printed, and TRADEHUB_TEST_FUZZ_SEED replays it."""
        first = int(os.environ.get("TRADEHUB_TEST_FUZZ_SEED") or random.SystemRandom().randrange(1 << 32))
        print(f"\nfuzz: seeds {first}..{first + CONNECTIONS - 1}; replay with TRADEHUB_TEST_FUZZ_SEED={first}")
        await self.fuzz_notes(range(first, first + CONNECTIONS))

    async def test_bad_frames_at_the_real_tables_leave_no_partial_batch(self):
        seeds = range(100, 100 + CONNECTIONS)
        hub = await start_hub(self, table_registry, max_in_flight=64)
        outcomes = await gatherResults([deferToThread(fuzz_connection, hub.port, seed, tick_batch) for seed in seeds])

        def well_behaved():
            with BlockingClient("127.0.0.1", hub.port, Role.FRONTEND, wire.FRONTEND_TOKEN) as client:
                written = client.insert(
                    SQLTable.MARKET_TICK, [rows.tick(i, exchange="final", tape="3") for i in (1, 2, 3)]
                )
                found = client.select(
                    SQLTable.MARKET_TICK, keys=[{"symbol": "AAPL", "ts": rows.ts(i), "seq": i} for i in (1, 2, 3)]
                )
                return written.affected, found.rows

        written, found = await deferToThread(well_behaved)
        self.assertEqual(written, 3)
        self.assertEqual([row["exchange"] for row in found], ["final"] * 3)
        counts = await deferToThread(
            blocking_query, hub.dsn, "SELECT exchange, count(*) FROM market_tick GROUP BY exchange"
        )
        sent = {batch: size for clean in outcomes for batch, size in clean.items()}
        whole_or_absent(self, dict(counts), sent, f"seeds {seeds[0]}..{seeds[-1]}")
