"""
The Twisted client, for services: pipelined requests answered by Deferreds,
chunked answers joined or streamed, heartbeats, clean shutdown, and a
ClientService that reconnects with backoff.
"""

from __future__ import annotations

import itertools
from typing import Any, cast

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectionClosed
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..protocol.enums import FLAG_MORE, MessageType, Role, ShutdownReason, SQLCommand, SQLTable
from ..protocol.errors import ProtocolError
from ..protocol.framing import FrameDecoder
from ..protocol.messages import ERROR, HELLO, HELLO_ACK, SHUTDOWN, SHUTDOWN_ACK, HelloAck, Shutdown, encode_frame
from .calls import Result, TableCalls, decode_result, request_frames
from .errors import HubError, raise_for_error, shutting_down

SILENT_INTERVALS = 3


def _typed(error_payload):
    try:
        raise_for_error(ERROR.decode(error_payload))
    except HubError as error:
        return error


class HubClientProtocol(Protocol, TableCalls):
    """
    One connection. C{ready} fires with the HELLO_ACK; every call returns a
    Deferred that fires with its answer, or fails with a typed L{HubError}.
    Calls may be pipelined: answers come back in order. C{hub_shutdown} is
    the hub's own SHUTDOWN once one has come: calls after it fail with
    L{ShuttingDown}, and so do those the hub closes without answering.
    """

    log = Logger()
    transport: ITCPTransport

    def __init__(self, role: Role, token: str, client_name: str, clock: IReactorTime) -> None:
        self.role = Role(role)
        self._token = token
        self.client_name = client_name
        self.clock = clock
        self.ready: Deferred[HelloAck] = Deferred()
        self.session: HelloAck | None = None
        self.hub_shutdown: Shutdown | None = None
        self.closed: Deferred[None] = Deferred()
        self._decoder = FrameDecoder(1 << 31)
        self._pending: dict[int, tuple[Deferred[bytes], list[bytes]]] = {}
        self._ids = itertools.count(1)
        self._shutdown: Deferred[int] | None = None
        self._heartbeat: IDelayedCall | None = None
        self._last_sent = self._last_received = 0.0

    def connectionMade(self):
        payload = HELLO.encode(
            {
                "role": self.role,
                "min_version": 1,
                "max_version": 1,
                "client_name": self.client_name,
                "token": self._token,
            }
        )
        self._write(encode_frame(MessageType.HELLO, payload))
        self._last_received = self.clock.seconds()

    def dataReceived(self, data):
        self._last_received = self.clock.seconds()
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as error:
            self._fail_all(HubError(error.code, error.message))
            self.transport.abortConnection()
            return
        for frame in frames:
            self._on_frame(frame.header, frame.payload)

    def _on_frame(self, header, payload):
        kind = header.type
        if kind == MessageType.HELLO_ACK:
            self.session = HELLO_ACK.decode(payload)
            self._heartbeat = self.clock.callLater(self.session.heartbeat_ms / 1000, self._tick)
            self.ready.callback(self.session)
        elif kind == MessageType.RESPONSE:
            waiter, parts = self._pending[header.request_id]
            parts.append(payload)
            if not header.flags & FLAG_MORE:
                del self._pending[header.request_id]
                waiter.callback(b"".join(parts))
        elif kind == MessageType.ERROR:
            error = _typed(payload)
            pending = self._pending.pop(header.request_id, None)
            if pending is not None:
                pending[0].errback(error)
            elif not self.ready.called:
                self.ready.errback(error)
            else:
                self.log.error("hub error for no request: {error}", error=str(error))
        elif kind == MessageType.SHUTDOWN:
            self.hub_shutdown = SHUTDOWN.decode(payload)
            self.log.info("the hub is stopping: {message}", message=self.hub_shutdown.message)
        elif kind == MessageType.SHUTDOWN_ACK and self._shutdown is not None:
            self._shutdown.callback(SHUTDOWN_ACK.decode(payload).completed)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._heartbeat is not None and self._heartbeat.active():
            self._heartbeat.cancel()
        if self.hub_shutdown is not None:
            error: Exception = shutting_down(self.hub_shutdown)
        elif isinstance(reason.value, ConnectionClosed):
            error = reason.value
        else:
            error = ConnectionError(str(reason.value))
        if not self.ready.called:
            self.ready.errback(error)
        self._fail_all(error)
        if self._shutdown is not None and not self._shutdown.called:
            self._shutdown.errback(error)
        self.closed.callback(None)

    def _fail_all(self, error):
        pending, self._pending = self._pending, {}
        for waiter, _ in pending.values():
            waiter.errback(Failure(error))

    # Heartbeats: send one when idle, cut a silent hub.

    def _tick(self):
        interval = self._handshaken().heartbeat_ms / 1000
        now = self.clock.seconds()
        if now - self._last_received >= interval * SILENT_INTERVALS:
            self.log.warn(
                "the hub has been silent for {seconds:.1f}s; disconnecting", seconds=now - self._last_received
            )
            self.transport.abortConnection()
            return
        if now - self._last_sent >= interval:
            self._write(encode_frame(MessageType.HEARTBEAT))
        self._heartbeat = self.clock.callLater(interval / 2, self._tick)

    def _write(self, data):
        self._last_sent = self.clock.seconds()
        self.transport.write(data)

    # Calls

    def call(self, command: SQLCommand, table: SQLTable, payload: bytes) -> Deferred[bytes]:
        """Send one REQUEST; the Deferred fires with its RESPONSE payload (joined when chunked)."""
        max_frame = self._handshaken().max_frame
        if self.hub_shutdown is not None:
            return fail(shutting_down(self.hub_shutdown))
        request_id = next(self._ids)
        waiter: Deferred[bytes] = Deferred()
        self._pending[request_id] = (waiter, [])
        self._write(request_frames(payload, request_id, command, table, max_frame))
        return waiter

    def _handshaken(self) -> HelloAck:
        if self.session is None:
            raise ConnectionError("the handshake with the hub is not done")
        return self.session

    def execute(self, command: SQLCommand, table: SQLTable, payload: bytes) -> Deferred[Result]:
        return self.call(command, table, payload).addCallback(lambda answer: decode_result(table, answer))

    async def select_all(self, table, page_size=1000, **query):
        """Every matching row, streamed page by page (an async generator)."""
        after = None
        while True:
            page = await self.select(table, limit=page_size, after=after, **query)
            for row in page.rows:
                yield row
            if page.next_cursor is None:
                return
            after = page.next_cursor

    def shutdown(self, message: str = "done") -> Deferred[int]:
        """SHUTDOWN, then wait for SHUTDOWN_ACK and the close; fires with the ack's completed count."""
        if self._shutdown is None:
            self._shutdown = Deferred()
            payload = SHUTDOWN.encode({"reason": ShutdownReason.CLIENT_DONE, "deadline_ms": 10000, "message": message})
            self._write(encode_frame(MessageType.SHUTDOWN, payload))
        completed = self._shutdown

        def closed(count):
            self.transport.loseConnection()
            return self.closed.addCallback(lambda _: count)

        return completed.addCallback(closed)


class _HubClientFactory(Factory):
    noisy = False

    def __init__(self, role, token, client_name, clock):
        self.role, self.token, self.client_name, self.clock = role, token, client_name, clock

    def buildProtocol(self, addr):
        return HubClientProtocol(self.role, self.token, self.client_name, self.clock)


async def connect(reactor, description, role, token, client_name="python-twisted"):
    """Connect with a client endpoint string and complete the handshake; returns the protocol."""
    factory = _HubClientFactory(role, token, client_name, reactor)
    protocol = await clientFromString(reactor, description).connect(factory)
    await protocol.ready
    return protocol


class HubClientService(ClientService):
    """
    A connection kept up for a long-running service: reconnects with
    exponential backoff. C{session()} fires with a handshaken protocol.
    """

    def __init__(
        self, reactor: Any, description: str, role: Role, token: str, client_name: str = "python-service"
    ) -> None:
        factory = _HubClientFactory(role, token, client_name, reactor)
        super().__init__(
            clientFromString(reactor, description),
            factory,
            retryPolicy=backoffPolicy(initialDelay=0.2, maxDelay=10.0),
            clock=reactor,
            prepareConnection=lambda protocol: cast(HubClientProtocol, protocol).ready,
        )

    def session(self) -> Deferred[HubClientProtocol]:
        return cast("Deferred[HubClientProtocol]", self.whenConnected(failAfterFailures=None))
