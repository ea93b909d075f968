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

from . import wire
from .hub import BATCH, COUNT, NOTES_TABLE, notes_registry, start_hub
from .support import blocking_query

CONNECTIONS = 4
FRAMES_EACH = 2500


def valid_insert(rng):
    notes = [rng.choice(["", "x" * rng.randint(1, 30)]) if rng.random() < 0.2 else f"n{rng.randint(0, 99)}" for _ in range(rng.randint(1, 5))]
    payload = BATCH.encode({"batch": f"b{rng.getrandbits(48)}", "notes": notes})
    return wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, payload, rng.getrandbits(64))


def fuzz_frame(rng):
    roll = rng.random()
    if roll < 0.3:
        return valid_insert(rng)
    if roll < 0.55:
        frame = bytearray(valid_insert(rng))
        for _ in range(rng.randint(1, 3)):
            frame[rng.randrange(len(frame))] = rng.getrandbits(8)
        return bytes(frame)
    if roll < 0.65:
        frame = valid_insert(rng)
        return frame[: rng.randrange(len(frame))] + valid_insert(rng)
    if roll < 0.85:
        payload = rng.randbytes(rng.randint(0, 64))
        return encode_frame(rng.randint(0, 12), payload, rng.getrandbits(64), rng.randint(0, 7), rng.randint(0, 13), rng.getrandbits(16))
    if roll < 0.9:
        return rng.randbytes(rng.randint(1, 40))
    return rng.choice([wire.hello(), wire.heartbeat(), wire.shutdown(), struct.pack("<I", rng.getrandbits(32))])


def fuzz_connection(port, seed):
    """
    Send FRAMES_EACH fuzz frames, reconnecting whenever the hub closes and
    now and then anyway (a corrupted length swallows what follows it);
    returns how many connections were made.
    """
    rng = random.Random(seed)
    sock = None
    reconnections = 0
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
            sock.sendall(fuzz_frame(rng))
            if not _drain(sock):
                sock.close()
                sock = None
        except OSError:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()
    return reconnections


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
        reconnections = await gatherResults(
            [deferToThread(fuzz_connection, hub.port, seed) for seed in range(CONNECTIONS)]
        )
        self.assertGreater(sum(reconnections), CONNECTIONS, "the fuzz never provoked a closing error")

        def well_behaved():
            with BlockingClient("127.0.0.1", hub.port, Role.FRONTEND, wire.FRONTEND_TOKEN) as client:
                [written] = client.call(SQLCommand.INSERT, SQLTable.MARKET_TICK, BATCH.encode({"batch": "final", "notes": ["a", "b", "c"]}))
                [counted] = client.call(SQLCommand.SELECT, SQLTable.MARKET_TICK, BATCH.encode({"batch": "final", "notes": []}))
                with self.assertRaises(HubError) as refused:
                    client.call(SQLCommand.INSERT, SQLTable.MARKET_TICK, BATCH.encode({"batch": "half", "notes": ["ok", ""]}))
                return COUNT.decode(written)["rows"], COUNT.decode(counted)["rows"], refused.exception

        written, counted, refused = await deferToThread(well_behaved)
        self.assertEqual((written, counted), (3, 3))
        self.assertEqual(refused.code, 10)
        partial = await deferToThread(
            blocking_query, hub.dsn, "SELECT batch FROM fuzz_notes GROUP BY batch HAVING count(*) <> max(size)"
        )
        self.assertEqual(partial, [])
        total = await deferToThread(blocking_query, hub.dsn, "SELECT count(DISTINCT batch) FROM fuzz_notes")
        self.assertGreater(total[0][0], 50, "the fuzz should also have written valid batches")
