"""
A client that pipelines large pages and never reads holds a bounded amount
of the hub's memory: the kernel's send buffer is fixed, so the session stops
answering once it is full instead of queueing megabytes per socket.
"""

import fcntl
import socket
import struct
import termios

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tradehub.client import BlockingClient
from tradehub.client.calls import select_payload
from tradehub.protocol.enums import HEADER_SIZE, Role, SQLCommand, SQLTable
from tradehub.server.connection import write_now

from . import wire
from .hub import start_hub, table_registry
from .rows import tick

SEND_BUFFER = 64 * 1024
PAGE = 1000


class SendBufferTests(TestCase):
    async def test_answers_queued_for_a_client_that_does_not_read_stay_bounded(self):
        hub = await start_hub(self, table_registry, send_buffer=SEND_BUFFER)
        ticks = hub.factory.registry.route(SQLCommand.INSERT, SQLTable.MARKET_TICK).handle.__self__.controller
        await ticks.insert([tick(seq) for seq in range(PAGE)])
        page = wire.request(SQLCommand.SELECT, SQLTable.MARKET_TICK, select_payload(SQLTable.MARKET_TICK, limit=PAGE))
        answer_size = await deferToThread(_one_answer_size, hub.port)
        while hub.factory.sessions:
            await deferLater(reactor, 0.01, lambda: None)

        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", hub.port))
        self.addCleanup(client.close)
        client.sendall(wire.hello(Role.FRONTEND))
        client.sendall(page * 100)
        session = await _the_session(hub)
        # Wait until the session stops answering: its unanswered count holds still.
        settled, last = 0, None
        while settled < 20:
            await deferLater(reactor, 0.02, lambda: None)
            settled = settled + 1 if session.in_flight == last else 0
            last = session.in_flight
        self.assertGreater(session.in_flight, 0, "the client's reads were expected to stall the session")
        queued = _unsent(session.transport)
        bound = 2 * SEND_BUFFER + session.transport.bufferSize + answer_size
        self.assertLess(queued, bound, f"{queued} bytes queued for one client")
        client.close()
        while hub.factory.sessions:
            await deferLater(reactor, 0.01, lambda: None)


def _unsent(transport):
    """Bytes of answers not yet taken by the client: the kernel's send queue and Twisted's buffer."""
    handle = transport.getHandle()
    kernel = struct.unpack("i", fcntl.ioctl(handle.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    twisted = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    return kernel + twisted


def _one_answer_size(port):
    """Bytes of one page's answer on the wire (its frames' payloads and headers)."""
    with BlockingClient("127.0.0.1", port, Role.FRONTEND, wire.FRONTEND_TOKEN) as client:
        request_id = client.send_request(
            SQLCommand.SELECT, SQLTable.MARKET_TICK, select_payload(SQLTable.MARKET_TICK, limit=PAGE)
        )
        frames = client.read_answer(request_id)
        return sum(len(payload) + HEADER_SIZE for payload in frames)


async def _the_session(hub):
    while not hub.factory.sessions:
        await deferLater(reactor, 0.01, lambda: None)
    [session] = list(hub.factory.sessions)
    while session._lane is None:
        await deferLater(reactor, 0.01, lambda: None)
    return session


class WriteNowTests(TestCase):
    """An answer leaves at once when nothing waits before it; otherwise it queues behind what waits."""

    async def connected(self):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.addCleanup(listener.close)
        made = Deferred()

        class Remembers(Protocol):
            def connectionMade(self):
                made.callback(self.transport)

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", listener.getsockname()[1])
        protocol = await endpoint.connect(Factory.forProtocol(Remembers))
        self.addCleanup(protocol.transport.abortConnection)
        transport = await made
        peer, _ = listener.accept()
        peer.setblocking(False)
        self.addCleanup(peer.close)
        return transport, peer

    async def test_with_an_empty_buffer_the_bytes_are_sent_before_the_reactor_turns(self):
        transport, peer = await self.connected()
        write_now(transport, b"answer")
        self.assertEqual(peer.recv(100), b"answer")

    async def test_behind_buffered_bytes_it_keeps_their_order(self):
        transport, peer = await self.connected()
        transport.write(b"first ")  # buffered until the reactor turns
        write_now(transport, b"second")
        self.assertRaises(BlockingIOError, peer.recv, 100)
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(peer.recv(100), b"first second")
