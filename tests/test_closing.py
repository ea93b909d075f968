"""
How the hub ends a connection, over real loopback: a peer that has gone
silent is told why, then half-closed, so it reads the reason and an orderly
end of stream instead of a reset.
"""

import socket

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tradehub.protocol.enums import ErrorCode, MessageType, Role

from . import wire
from .hub import start_hub, table_registry


def stay_silent(port):
    """Handshake, then send nothing and read until the hub ends the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(wire.hello(Role.FRONTEND))
        reader = wire.Reader()
        frames = []
        while data := sock.recv(65536):
            frames += reader.feed(data)
        return frames


class SilentPeerTests(TestCase):
    timeout = 60

    async def test_silent_peer_reads_the_error_then_end_of_stream_not_a_reset(self):
        hub = await start_hub(self, table_registry, heartbeat_ms=100)
        frames = await deferToThread(stay_silent, hub.port)
        kinds = [header.type for header, _ in frames]
        self.assertEqual(kinds[0], MessageType.HELLO_ACK)
        self.assertLessEqual(set(kinds[1:-1]), {MessageType.HEARTBEAT})
        header, error = frames[-1]
        self.assertEqual(
            (header.type, header.request_id, ErrorCode(error.code)), (MessageType.ERROR, 0, ErrorCode.BAD_FRAME)
        )
        self.assertIn("3 heartbeat intervals", error.message)
