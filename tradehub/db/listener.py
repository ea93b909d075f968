"""
One connection of its own, kept open for as long as the daemon runs: the
one that LISTENs on a channel, or the one that holds a lock.

NOTIFYs sent while it is away are lost, and a session lock goes with its
session, so after each (re)connection it calls C{connected()}: its user
catches up by reading what it missed, or takes its lock again; C{lost()}
tells it the session ended. A lost connection is opened again, the waits
doubling from C{retry} to L{MAX_WAIT} seconds, until L{Listener.stop}.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime
from twisted.logger import Logger

from .pool import WatchedConnection

MAX_WAIT = 5.0


class Listener:
    log = Logger()

    def __init__(
        self,
        dsn: str,
        channel: str | None,
        *,
        reactor: IReactorFDSet,
        clock: IReactorTime,
        notified: Callable[[Any], None] = lambda notify: None,
        connected: Callable[[], object],
        lost: Callable[[], None] = lambda: None,
        connect_timeout: float,
        retry: float = 0.1,
        purpose: str = "LISTEN for changes",
    ) -> None:
        self._dsn = dsn
        self._channel = channel
        self._reactor = reactor
        self._clock = clock
        self._notified = notified
        self._connected = connected
        self._on_lost = lost
        self._purpose = purpose
        self._connect_timeout = connect_timeout
        self._retry = retry
        self._wait = retry
        self._connection: WatchedConnection | None = None
        self._next: IDelayedCall | None = None
        self._stopped = False
        # Counts the sessions opened: what one session did (a lock) is not another's.
        self.generation = 0

    @property
    def listening(self) -> bool:
        return self._connection is not None

    async def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = (), *, timeout: float) -> list[tuple]:
        """
        Run C{sql} on this connection. A server that does not answer within
        C{timeout} seconds loses the connection (its session ends with it).
        """
        connection = self._connection
        if connection is None:
            raise ConnectionError(f"not connected to {self._purpose}")
        timer = self._clock.callLater(timeout, connection.stall)
        try:
            return await connection.runQuery(sql, params)
        except Exception:
            if connection.stalled or not connection.usable:
                connection.close()
                self._lost(connection)
            raise
        finally:
            if timer.active():
                timer.cancel()

    def start(self) -> Deferred[None]:
        """Fires once the first LISTEN is in place (or failed: it is tried again in the background)."""
        self._stopped = False
        return ensureDeferred(self._listen())

    def reset(self) -> None:
        """End this session (and what it holds) and open another."""
        connection = self._connection
        if connection is not None:
            connection.close()
            self._lost(connection)

    def stop(self) -> None:
        self._stopped = True
        if self._next is not None and self._next.active():
            self._next.cancel()
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def _listen(self) -> None:
        self._next = None
        connection = WatchedConnection(self._reactor, self._lost)
        timer = self._clock.callLater(self._connect_timeout, connection.stall)
        try:
            await connection.connect(self._dsn)
            if self._channel is not None:
                connection.addNotifyObserver(self._notified)
                # The channel is a constant of the code, never input.
                await connection.runOperation(f"LISTEN {self._channel}")
        except Exception as error:
            connection.close()
            self.log.warn(
                "cannot {purpose} ({error}); retrying in {wait:.1f}s",
                purpose=self._purpose,
                error=str(error).strip(),
                wait=self._wait,
            )
            self._again()
            return
        finally:
            if timer.active():
                timer.cancel()
        if self._stopped:
            connection.close()
            return
        self._connection = connection
        self.generation += 1
        self._wait = self._retry
        self._connected()

    def _lost(self, connection: WatchedConnection) -> None:
        if connection is self._connection and not self._stopped:
            self._connection = None
            self.log.warn("the connection to {purpose} was lost; reconnecting", purpose=self._purpose)
            self._on_lost()
            self._again()

    def _again(self) -> None:
        if self._stopped:
            return
        self._next = self._clock.callLater(self._wait, lambda: ensureDeferred(self._listen()))
        self._wait = min(self._wait * 2, MAX_WAIT)
