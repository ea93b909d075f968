"""
Random and mutated frames from several connections at a live hub over
loopback, on real PostgreSQL: afterwards a well-behaved client still gets
correct answers and no request left a partial write behind.
"""

import random
import socket
import struct

from twisted.internet.defer import gatherResults
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tradehub.client import BlockingClient, HubError
from tradehub.protocol.enums import Role, SQLCommand, SQLTable
from tradehub.protocol.messages import encode_frame
from tradehub.protocol.tables import LAYOUTS

from . import rows, wire
from .hub import BATCH, COUNT, NOTES_TABLE, notes_registry, start_hub, table_registry
from .support import blocking_query

CONNECTIONS = 4
FRAMES_EACH = 2500


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
    payload = LAYOUTS[SQLTable.MARKET_TICK].rows_request.encode({"rows": ticks})
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


def fuzz_connection(port, seed, valid_insert=valid_insert):
    """
    Send FRAMES_EACH fuzz frames, reconnecting whenever the hub closes and
    now and then anyway (a corrupted length swallows what follows it);
    returns how many connections were made and the unmutated batches sent.
    """
    rng = random.Random(seed)
    sock = None
    reconnections = 0
    clean = {}
    for _ in range(FRAMES_EACH):
        if sock is not None and rng.random() < 0.1:
            sock.close()
            sock = None
        if sock is None:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            reconnections += 1
            if rng.random() < 0.9:
                sock.sendall(wire.hello(rng.choice([Role.FRONTEND, Role.ML])))
        try:
            frame, batch = fuzz_frame(rng, valid_insert)
            sock.sendall(frame)
            if batch is not None:
                clean[batch[0]] = batch[1]
            if not _drain(sock):
                sock.close()
                sock = None
        except OSError:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()
    return reconnections, clean


def whole_or_absent(test, stored_counts, sent):
    """Every unmutated batch is stored whole or not at all; enough of them were stored."""
    torn = {
        batch: (stored_counts.get(batch, 0), size)
        for batch, size in sent.items()
        if stored_counts.get(batch, 0) not in (0, size)
    }
    test.assertEqual(torn, {}, "batches stored in part: (rows stored, rows sent)")
    whole = sum(1 for batch, size in sent.items() if stored_counts.get(batch) == size)
    test.assertGreater(whole, 50, "the fuzz should also have written valid batches")


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

    async def test_ten_thousand_bad_frames_leave_the_hub_correct_and_the_database_whole(self):
        hub = await start_hub(self, notes_registry, max_in_flight=64)
        await deferToThread(blocking_query, hub.dsn, NOTES_TABLE)
        outcomes = await gatherResults([deferToThread(fuzz_connection, hub.port, seed) for seed in range(CONNECTIONS)])
        self.assertGreater(sum(made for made, _ in outcomes), CONNECTIONS, "the fuzz never provoked a closing error")

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
        self.assertEqual((written, counted), (3, 3))
        self.assertEqual(refused.code, 10)
        counts = await deferToThread(blocking_query, hub.dsn, "SELECT batch, count(*) FROM fuzz_notes GROUP BY batch")
        whole_or_absent(self, dict(counts), {b: n for _, sent in outcomes for b, n in sent.items()})

    async def test_bad_frames_at_the_real_tables_leave_no_partial_batch(self):
        hub = await start_hub(self, table_registry, max_in_flight=64)
        outcomes = await gatherResults(
            [deferToThread(fuzz_connection, hub.port, 100 + seed, tick_batch) for seed in range(CONNECTIONS)]
        )

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
        whole_or_absent(self, dict(counts), {b: n for _, sent in outcomes for b, n in sent.items()})
