"""
What a session needs of its connection: the transport's methods it calls,
a name for the peer in logs, and named timers on the session's clock.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any
from typing import Protocol as Interface

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IDelayedCall, IReactorTime


class Connection(Interface):
    """
    What a session needs of its transport: TCP, TLS or a unix socket (the
    first two also half-close and set TCP_NODELAY, looked up by name).
    """

    def write(self, data: bytes) -> None: ...
    def getPeer(self) -> Any: ...
    def registerProducer(self, producer: Any, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def loseConnection(self) -> None: ...
    def abortConnection(self) -> None: ...


class Timers:
    """Named timers on one clock: scheduling a name replaces its earlier call."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._calls: dict[str, IDelayedCall] = {}

    def schedule(self, name: str, delay: float, call: Callable[[], object]) -> None:
        self.cancel(name)
        self._calls[name] = self._clock.callLater(max(delay, 0), call)

    def fired(self, name: str) -> None:
        """Forget a timer whose call is running now."""
        self._calls.pop(name, None)

    def cancel(self, name: str) -> None:
        call = self._calls.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    def cancel_all(self) -> None:
        for name in list(self._calls):
            self.cancel(name)


def bound_send_buffer(transport: Any, size: int) -> None:
    """
    Fix the kernel's send buffer of the connection at C{size} bytes (Linux
    doubles it), so that answers queued for a client that reads slowly stay
    bounded: the session stops producing once Twisted's own buffer fills,
    while an auto-tuned kernel buffer would grow to megabytes first.
    """
    handle = getattr(transport, "getHandle", lambda: None)()
    if isinstance(handle, socket.socket):
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def write_now(transport: Any, data: bytes) -> None:
    """
    Send C{data} at once when nothing waits in the transport's buffer, as
    Twisted would at the next turn of the reactor: an answer leaves without
    that turn and without asking epoll to watch the socket for writing and
    then to stop. What the socket does not take, and any transport that is
    not a plain socket (TLS), goes through C{write} as usual.
    """
    if (
        isinstance(transport, FileDescriptor)
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport.dataBuffer
        and not transport._tempDataLen
    ):
        sent = transport.writeSomeData(data)
        # An error (an exception, returned) sends nothing: write() buffers
        # the data and the reactor's next attempt reports the lost connection.
        if isinstance(sent, int):
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)


def describe(address: Any) -> str:
    """host:port, [v6 host]:port, or a unix socket's path."""
    host = getattr(address, "host", None)
    if host is None:
        return str(getattr(address, "name", None) or address)
    return f"[{host}]:{address.port}" if ":" in host else f"{host}:{address.port}"
