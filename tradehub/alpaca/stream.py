"""
One of Alpaca's WebSocket streams, held open for as long as the hub runs.

A L{Stream} connects (TLS for wss://, through Twisted's endpoints), hands
each JSON message to its L{StreamHandler}, and lets the handler speak first
(authentication, then listen or subscribe). When the connection ends, or
cannot be made, it connects again after an exponential backoff with jitter;
a handler told by Alpaca to stay away (406 connection limit) asks for a
longer wait. It pings at an interval and drops a connection whose pong does
not come in time: a healthy TCP connection that stops delivering is
noticed, not trusted. Every change of state is logged and counted.
"""

from __future__ import annotations

import enum
import json
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger


class StreamState(enum.Enum):
    DOWN = "down"  # not connected; the next attempt is scheduled
    CONNECTING = "connecting"  # the TCP, TLS and WebSocket handshakes
    OPEN = "open"  # connected: the handler authenticates and subscribes
    STREAMING = "streaming"  # the handler said its stream is flowing
    STOPPED = "stopped"  # the hub stopped it


class StreamHandler(Protocol):
    """What a stream's messages mean: the trading stream's, or the market data's."""

    def opened(self, stream: Stream) -> None:
        """The WebSocket is open: send what comes first (auth)."""

    def received(self, stream: Stream, message: Any) -> None:
        """One decoded JSON message (an object or, from the market-data stream, an array)."""

    def closed(self, stream: Stream) -> None:
        """The connection ended: whatever was live is not any more."""


def endpoint_for(reactor: Any, url: str) -> IStreamClientEndpoint:
    """The endpoint of a ws:// or wss:// URL: TLS, checking the server's certificate, for wss://."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a WebSocket URL: {url!r}")
    secure = parts.scheme == "wss"
    endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, parts.hostname, parts.port or (443 if secure else 80))
    if secure:
        endpoint = wrapClientTLS(optionsForClientTLS(parts.hostname), endpoint)
    return endpoint


class _Connection(WebSocketClientProtocol):
    """
    One connection. Its timers (handshake, pings, closing) are the
    stream's, on the stream's clock: autobahn's own would outlive the
    connection in its batched timers.
    """

    factory: _Factory

    @property
    def stream(self) -> Stream:
        return self.factory.stream

    def connectionMade(self) -> None:
        super().connectionMade()
        self.stream._made(self)

    def onOpen(self) -> None:
        self.stream._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        # Alpaca's paper trading stream sends its JSON in binary frames.
        self.stream._received(self, payload)

    def onPong(self, payload: bytes) -> None:
        self.stream._heard(self)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.stream._closed(self, code, reason)


class _Factory(WebSocketClientFactory):
    protocol = _Connection  # type: ignore[assignment]  # autobahn calls it with no arguments
    stream: Stream


class Stream(Service):
    """
    C{name} (its C{label}) names it in logs and metrics. C{backoff} is the first and the
    longest wait between attempts; each wait is the last one doubled, then
    a random part of it (jitter) is taken, so hubs restarted together do not
    reconnect together. C{on_state(name, state)} hears every change of state
    (the metrics).
    """

    log = Logger()

    def __init__(
        self,
        name: str,
        url: str,
        handler: StreamHandler,
        *,
        reactor: Any,
        endpoint: IStreamClientEndpoint | None = None,
        ping_interval: float = 10.0,
        ping_timeout: float = 5.0,
        open_timeout: float = 10.0,
        backoff: tuple[float, float] = (1.0, 60.0),
        jitter: Callable[[], float] = random.random,
        on_state: Callable[[str, StreamState], None] = lambda name, state: None,
    ) -> None:
        self.label = name
        self.url = url
        self.handler = handler
        self.state = StreamState.DOWN
        self.attempts = 0
        self._reactor = reactor
        self._endpoint = endpoint if endpoint is not None else endpoint_for(reactor, url)
        self._backoff = backoff
        self._jitter = jitter
        self._on_state = on_state
        self._hold_off = 0.0
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._open_timeout = open_timeout
        self._connection: _Connection | None = None
        self._open = False
        self._next: IDelayedCall | None = None
        self._connecting: Deferred[Any] | None = None
        self._timer: IDelayedCall | None = None
        self._gone: list[Deferred[None]] = []
        self._factory = _Factory(url)
        self._factory.stream = self
        self._factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0)

    # The service

    def startService(self) -> None:
        super().startService()
        # A stream started again (this hub leads again) starts afresh.
        self.state = StreamState.DOWN
        self.attempts = 0
        self._hold_off = 0.0
        self._connect()

    def stopService(self) -> Deferred[None]:
        """
        Close the connection (dropped when the server does not close it
        within the ping timeout); fires once it is gone.
        """
        super().stopService()
        self._set(StreamState.STOPPED)
        _cancel(self._next)
        if self._connecting is not None:
            self._connecting.cancel()
        if self._connection is None:
            return succeed(None)
        gone: Deferred[None] = Deferred()
        self._gone.append(gone)
        if self._open:
            self._connection.sendClose()
            self._after(self._ping_timeout, lambda: self.drop("the server did not close in time"))
        else:
            self._connection.dropConnection(abort=True)
        return gone

    # What the handler may do

    def send(self, message: Any) -> None:
        """Send one JSON message on the open connection (dropped when there is none, or it is closing)."""
        if self._connection is not None and self._connection.state == _Connection.STATE_OPEN:
            self._connection.sendMessage(json.dumps(message).encode())

    def streaming(self) -> None:
        """The handler's stream flows (authenticated and subscribed): the backoff starts over."""
        if self.state is StreamState.STOPPED:
            return
        self.attempts = 0
        self._set(StreamState.STREAMING)

    def hold_off(self, seconds: float) -> None:
        """Wait at least C{seconds} before the next attempt (Alpaca said to stay away)."""
        self._hold_off = max(self._hold_off, seconds)

    def pause(self) -> None:
        """Read nothing more for now (what was read cannot be stored as fast as it comes)."""
        if self._connection is not None:
            IPushProducer(self._connection.transport).pauseProducing()

    def resume(self) -> None:
        if self._connection is not None:
            IPushProducer(self._connection.transport).resumeProducing()

    def drop(self, reason: str) -> None:
        """End the connection (it is reconnected as any other that ends)."""
        self.log.warn("alpaca {name} stream: {reason}; dropping the connection", name=self.label, reason=reason)
        if self._connection is not None:
            self._connection.dropConnection(abort=True)

    # Connecting

    def _connect(self) -> None:
        self._next = None
        if self.state is StreamState.STOPPED:
            return
        self._set(StreamState.CONNECTING)
        self.attempts += 1
        self._connecting = self._endpoint.connect(self._factory)
        self._connecting.addBoth(self._connect_ended).addErrback(self._failed)

    def _connect_ended(self, result: Any) -> Any:
        self._connecting = None
        return result

    def _failed(self, failure: Any) -> None:
        if self.state is StreamState.STOPPED:
            return
        self.log.warn(
            "alpaca {name} stream: cannot connect: {reason}", name=self.label, reason=failure.getErrorMessage()
        )
        self._again()

    def _again(self) -> None:
        if self.state is StreamState.STOPPED:
            return
        self._set(StreamState.DOWN)
        first, longest = self._backoff
        # The exponent stops growing long after the ceiling is reached (a float would overflow).
        ceiling = min(longest, first * 2 ** min(max(self.attempts - 1, 0), 32))
        # Half the wait is fixed, half is random: never zero, never all together.
        delay = max(ceiling / 2 + self._jitter() * ceiling / 2, self._hold_off)
        self._hold_off = 0.0
        self.log.info("alpaca {name} stream: connecting again in {delay:.1f}s", name=self.label, delay=delay)
        self._next = self._reactor.callLater(delay, self._connect)

    # The connection's events

    def _made(self, connection: _Connection) -> None:
        """TCP (and TLS) is up: the WebSocket handshake must end within the open timeout."""
        self._connection = connection
        if self.state is StreamState.STOPPED:
            connection.dropConnection(abort=True)
            return
        self._after(self._open_timeout, lambda: self.drop("no WebSocket handshake in time"))

    def _opened(self, connection: _Connection) -> None:
        self._open = True
        self._set(StreamState.OPEN)
        self._heard(connection)
        self.handler.opened(self)

    def _received(self, connection: _Connection, payload: bytes) -> None:
        if self.state is StreamState.STOPPED:
            return  # what was on its way when the hub stopped the stream
        self._heard(connection)
        try:
            message = json.loads(payload, parse_float=Decimal)  # prices exact, as Alpaca wrote them
        except ValueError:
            self.drop(f"a message that is not JSON ({payload[:80]!r})")
            return
        self.handler.received(self, message)

    def _heard(self, connection: _Connection) -> None:
        """The server is alive: the next ping is due one interval from now."""
        if self.state is not StreamState.STOPPED and connection is self._connection:
            self._after(self._ping_interval, self._ping)

    def _ping(self) -> None:
        if self._connection is not None:
            self._connection.sendPing()
            self._after(self._ping_timeout, lambda: self.drop("no pong in time"))

    def _closed(self, connection: _Connection, code: int | None, reason: str | None) -> None:
        if connection is not self._connection:
            return
        was_open, self._open, self._connection = self._open, False, None
        _cancel(self._timer)
        if was_open:
            self.log.warn(
                "alpaca {name} stream closed (code {code}, {reason})", name=self.label, code=code, reason=reason or "-"
            )
            self.handler.closed(self)
        gone, self._gone = self._gone, []
        for waiting in gone:
            waiting.callback(None)
        self._again()

    def _after(self, delay: float, call: Callable[[], None]) -> None:
        """The connection's one timer: handshake, next ping, pong or close, whichever is due."""
        _cancel(self._timer)
        self._timer = self._reactor.callLater(delay, call)

    def _set(self, state: StreamState) -> None:
        if state is not self.state:
            self.log.info("alpaca {name} stream: {state}", name=self.label, state=state.value)
            self.state = state
            self._on_state(self.label, state)


def _cancel(call: IDelayedCall | None) -> None:
    if call is not None and call.active():
        call.cancel()
