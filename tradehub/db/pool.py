"""
The one PostgreSQL connection pool of a daemon, handed to every controller.

txpostgres's own ConnectionPool has a fixed size; this one grows from
C{size_min} towards C{size_max} while every connection is busy, closes
connections idle longer than C{idle_timeout} back down to C{size_min}, and
retries transient failures on a fresh connection with exponential backoff.
"""

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg2
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime
from twisted.logger import Logger
from txpostgres.txpostgres import Connection

from ..retry import retrying
from .failures import CommitOutcomeUnknown, FailureObserver, PoolClosed, connection_is_gone, is_transient


class _PooledConnection(Connection):
    """
    A txpostgres connection that tells the pool when the server closes it
    while it sits idle, instead of raising into the reactor.
    """

    def __init__(self, reactor, on_lost):
        super().__init__(reactor=reactor)
        self._on_lost = on_lost

    def doRead(self):
        try:
            super().doRead()
        except psycopg2.Error:
            self.close()
            self._on_lost(self)


class Pool:
    """
    Connections to one database. Work is a function of a txpostgres cursor
    that returns a Deferred or a coroutine; it runs inside one transaction.
    The connections run on C{reactor} (which txpostgres also uses as a
    clock); C{clock} times idle connections and the waits between retries.
    C{metrics}, when given, hears of each retry and of each final failure.
    """

    log = Logger()

    def __init__(
        self,
        dsn: str,
        *,
        reactor: IReactorFDSet,
        clock: IReactorTime,
        size_min: int,
        size_max: int,
        idle_timeout: float,
        retry_attempts: int,
        retry_backoff: float,
        metrics: FailureObserver | None = None,
    ) -> None:
        self._dsn = dsn
        self._reactor = reactor
        self._clock = clock
        self.size_min = size_min
        self.size_max = size_max
        self._idle_timeout = idle_timeout
        self._retry_attempts = retry_attempts
        self._retry_backoff = retry_backoff
        self._idle: list[_PooledConnection] = []
        self._idle_timers: dict[_PooledConnection, IDelayedCall] = {}
        self._busy: set[_PooledConnection] = set()
        self._opening = 0
        self._waiters: deque[Deferred[_PooledConnection]] = deque()
        self._closed = False
        self._metrics = metrics

    @property
    def size(self) -> int:
        """Connections open or opening."""
        return len(self._idle) + len(self._busy) + self._opening

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def busy(self) -> int:
        """Connections running work."""
        return len(self._busy)

    @property
    def waiting(self) -> int:
        """Work waiting for a connection, all C{size_max} being busy."""
        return len(self._waiters)

    async def start(self) -> None:
        """Open the minimum number of connections; fails if the database is unreachable."""
        connections = await gatherResults([self._open() for _ in range(self.size_min)], consumeErrors=True)
        for connection in connections:
            self._make_idle(connection)

    def close(self) -> None:
        """Close idle connections now and busy ones as they are released."""
        self._closed = True
        while self._waiters:
            self._waiters.popleft().errback(PoolClosed())
        for connection in self._idle:
            self._cancel_idle_timer(connection)
            connection.close()
        self._idle.clear()

    async def transaction(self, work: Callable[..., Any], *args: Any) -> Any:
        """
        Run C{work(cursor, *args)} inside BEGIN/COMMIT and return its result.
        A failure rolls the whole transaction back; a transient failure is
        tried again on a fresh connection.
        """
        return await self._retrying(self._run_transaction, work, args)

    async def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> list[tuple]:
        """Run one statement on its own (autocommit) and return its rows."""
        return await self._retrying(self._run_query, sql, params)

    async def _retrying(self, run, *args):
        """Try C{run(connection, *args)} on a pooled connection until it succeeds or stops being worth retrying."""
        return await retrying(
            lambda: self._on_a_connection(run, *args),
            clock=self._clock,
            retries=self._retry_attempts,
            delay=self._retry_backoff,
            retryable=lambda error: is_transient(error) and not self._closed,
            on_retry=self._log_retry,
            on_failure=None if self._metrics is None else self._metrics.database_failed,
        )

    async def _on_a_connection(self, run, *args):
        """
        One try. The connection goes back to the pool, or is closed when the
        failure says it is gone, before the next try picks a connection.
        """
        connection = await self._acquire()
        try:
            result = await run(connection, *args)
        except Exception as error:
            self._release(connection, gone=connection_is_gone(error) or bool(connection.closed))
            raise
        self._release(connection)
        return result

    def _log_retry(self, error, delay):
        if self._metrics is not None:
            self._metrics.database_retried(error)
        self.log.warn(
            "transient database failure, retrying in {delay:.3f}s: {error}",
            delay=delay,
            error=str(error).strip(),
        )

    async def _run_query(self, connection, sql, params):
        cursor = connection.cursor()
        await cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []

    async def _run_transaction(self, connection, work, args):
        cursor = _TransactionCursor(connection.cursor())
        try:
            result = await ensureDeferred(_as_awaitable(work(cursor, *args)))
        except BaseException:
            if cursor.began and not connection.closed:
                await cursor.execute("ROLLBACK")
            raise
        if not cursor.began:
            return result
        try:
            await cursor.execute("COMMIT")
        except Exception as error:
            if connection_is_gone(error):
                raise CommitOutcomeUnknown(str(error).strip()) from error
            raise
        return result

    async def _acquire(self):
        if self._closed:
            raise PoolClosed()
        while self._idle:
            connection = self._idle.pop()
            self._cancel_idle_timer(connection)
            if not connection.closed:
                self._busy.add(connection)
                return connection
        if self.size < self.size_max:
            connection = await self._open()
            self._busy.add(connection)
            return connection
        waiter: Deferred[_PooledConnection] = Deferred()
        self._waiters.append(waiter)
        return await waiter

    def _release(self, connection, gone=False):
        self._busy.discard(connection)
        if gone or self._closed:
            if not connection.closed:
                connection.close()
            if gone:
                self._forget_idle()
            if self._waiters and not self._closed:
                self._open_for(self._waiters.popleft())
            return
        if self._waiters:
            self._busy.add(connection)
            self._waiters.popleft().callback(connection)
            return
        self._make_idle(connection)

    def _forget_idle(self):
        """
        After one connection died the others, opened to the same server, very
        likely died too (a restart): drop them rather than spend retries on them.
        """
        for connection in self._idle:
            self._cancel_idle_timer(connection)
            connection.close()
        self._idle.clear()

    def _open_for(self, waiter):
        def opened(connection):
            self._busy.add(connection)
            waiter.callback(connection)

        self._open().addCallbacks(opened, waiter.errback)

    def _open(self):
        self._opening += 1
        connection = _PooledConnection(self._reactor, self._lost_while_idle)

        def opened(result):
            self._opening -= 1
            return connection

        def failed(reason):
            self._opening -= 1
            return reason

        return connection.connect(self._dsn).addCallbacks(opened, failed)

    def _lost_while_idle(self, connection):
        if connection in self._idle:
            self._idle.remove(connection)
            self._cancel_idle_timer(connection)

    def _make_idle(self, connection):
        self._idle.append(connection)
        self._idle_timers[connection] = self._clock.callLater(self._idle_timeout, self._reap, connection)

    def _cancel_idle_timer(self, connection):
        timer = self._idle_timers.pop(connection, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _reap(self, connection):
        self._idle_timers.pop(connection, None)
        if connection in self._idle and self.size > self.size_min:
            self._idle.remove(connection)
            connection.close()


class _TransactionCursor:
    """
    A txpostgres cursor that sends BEGIN together with the transaction's
    first statement: one round trip fewer per transaction.
    """

    def __init__(self, cursor):
        self._cursor = cursor
        self.began = False

    def execute(self, statement, params=None):
        if not self.began:
            self.began = True
            statement = (b"BEGIN; " if isinstance(statement, bytes) else "BEGIN; ") + statement
        return self._cursor.execute(statement, params)

    def __getattr__(self, name):
        return getattr(self._cursor, name)


async def _as_awaitable(value):
    """Let work be a plain function, a Deferred-returning one, or a coroutine."""
    if isinstance(value, Deferred) or hasattr(value, "__await__"):
        return await value
    return value
