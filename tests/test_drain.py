"""
A server-initiated shutdown under load, over loopback on real PostgreSQL:
every request the hub received is answered (RESPONSE or SHUTTING_DOWN), in
order, and the database holds exactly the acknowledged writes.
"""

import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tradehub.protocol.enums import ErrorCode, MessageType, Role, ShutdownReason, SQLCommand, SQLTable

from . import wire
from .hub import BATCH, NOTES_TABLE, notes_registry, start_hub
from .support import blocking_query

REQUESTS = 3000


def pipeline_and_collect(port, started):
    """Send REQUESTS one-row inserts at once; once the first is answered, say so; read until the hub closes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(wire.hello(Role.FRONTEND))
    reader = wire.Reader()
    answers = []
    while not answers:
        answers += reader.feed(sock.recv(65536))
    frames = b"".join(
        wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, BATCH.encode({"batch": f"b{i}", "notes": ["x"]}), i)
        for i in range(1, REQUESTS + 1)
    )
    sock.sendall(frames)
    # Drain once the hub has answered a request: some writes are then
    # acknowledged before it, whatever the machine's speed.
    while not any(header.type == MessageType.RESPONSE for header, _ in answers):
        answers += reader.feed(sock.recv(65536))
    reactor.callFromThread(started.callback, None)
    while True:
        data = sock.recv(65536)
        if not data:
            break
        answers += reader.feed(data)
    sock.close()
    return answers


class DrainTests(TestCase):
    timeout = 120

    async def test_drain_under_load_answers_every_received_request_and_loses_no_acknowledged_write(self):
        hub = await start_hub(self, notes_registry, max_in_flight=64)
        await deferToThread(blocking_query, hub.dsn, NOTES_TABLE)
        started = Deferred()
        answers = deferToThread(pipeline_and_collect, hub.port, started)
        await started
        drained = hub.factory.drain(deadline=0.5)
        frames = await answers
        await drained

        kinds = [header.type for header, _ in frames]
        self.assertEqual(kinds[0], MessageType.HELLO_ACK)
        shutdown = [payload for header, payload in frames if header.type == MessageType.SHUTDOWN]
        self.assertEqual([s.reason for s in shutdown], [ShutdownReason.SERVER_STOPPING])
        answered = [(header.request_id, header.type, payload) for header, payload in frames if header.request_id]
        ids = [request_id for request_id, _, _ in answered]
        self.assertEqual(ids, list(range(1, len(ids) + 1)), "answers must be a gap-free prefix, in order")
        acknowledged = {f"b{request_id}" for request_id, kind, _ in answered if kind == MessageType.RESPONSE}
        refused = [payload for _, kind, payload in answered if kind == MessageType.ERROR]
        self.assertTrue(acknowledged, "some requests should have completed before the drain")
        self.assertTrue(all(ErrorCode(error.code) == ErrorCode.SHUTTING_DOWN for error in refused))
        stored = await deferToThread(blocking_query, hub.dsn, "SELECT batch FROM fuzz_notes")
        self.assertEqual({row[0] for row in stored}, acknowledged)
