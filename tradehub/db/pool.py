"""
The one PostgreSQL connection pool of a daemon, handed to every controller.

txpostgres's own ConnectionPool has a fixed size; this one grows from
C{size_min} towards C{size_max} while every connection is busy, closes
connections idle longer than C{idle_timeout} back down to C{size_min}, and
retries transient failures on a fresh connection with exponential backoff.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import psycopg2
from psycopg2.extensions import POLL_OK, POLL_READ, POLL_WRITE
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, fail, gatherResults, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres.txpostgres import Connection, Cursor, UnexpectedPollResult

from ..retry import retrying
from .failures import (
    CommitOutcomeUnknown,
    ConnectTimeout,
    DatabaseStalled,
    FailureObserver,
    PoolClosed,
    StatementTimeout,
    connection_is_gone,
    is_transient,
)
from .fairness import FairQueue, current_owner

# Retries back off no further than this, so that work resumes within this long of the database's return.
MAX_RETRY_DELAY = 0.5
# The server cancels a slow statement itself after the statement timeout;
# a server that still has not answered this much later is not answering.
STALL_GRACE = 1.0


_BACKEND_ALIVE = "SELECT 1 FROM pg_stat_activity WHERE pid = %s"


class _StillRunning(Exception):
    """The server process that received a lost COMMIT has not ended yet."""


def _libpq_flush() -> Callable[[int], int] | None:
    """
    libpq's PQflush(conn), from the very libpq psycopg2 calls (found through
    psycopg2's own module, which links it), for the PGconn psycopg2 hands out
    (connection.pgconn_ptr): 0 once all that was sent is on the socket
    (without a system call when psycopg2 already sent it all), 1 while some
    waits for the socket to take it. None when that libpq cannot be reached
    (a psycopg2 with libpq linked in statically).
    """
    try:
        from psycopg2 import _psycopg

        library = ctypes.CDLL(_psycopg.__file__)
        flush, version = library.PQflush, library.PQlibVersion
    except (OSError, AttributeError):
        return None
    version.argtypes, version.restype = [], ctypes.c_int
    if version() != psycopg2.extensions.libpq_version():
        return None
    flush.argtypes, flush.restype = [ctypes.c_void_p], ctypes.c_int
    return flush


_PQFLUSH = _libpq_flush()


class WatchedCursor(Cursor):
    """
    A txpostgres cursor whose statements its connection drives: the reactor
    watches the connection alone, for the connection's whole life, and
    hands each readable event to the statement under way (L{WatchedConnection}).
    """

    def fileno(self) -> int:
        return self._connection.fileno()

    def _doit(self, name, *args, **kwargs):
        connection = self._connection
        if not connection.watching:
            # Not connected (or closed): txpostgres's own poll cycle.
            return super()._doit(name, *args, **kwargs)
        try:
            getattr(self._cursor, name)(*args, **kwargs)
        except BaseException:
            return fail()
        return connection.run_statement(self)


class WatchedConnection(Connection):
    """
    A txpostgres connection that the reactor watches for its whole life,
    and that always leaves the reactor when it dies.

    txpostgres stops watching a connection while one of its cursors runs a
    statement and watches the cursor instead, then the connection again:
    four epoll_ctl calls per statement, and an extra turn of the reactor
    (callLater(0)) before the statement's Deferred fires. Here the reactor
    watches the connection alone from the moment it is connected until
    L{close}, and its L{doRead} moves the statement under way forward (its
    Deferred fires as soon as the result is in, from the read that brought
    it), or, with none under way, reads what the server sent unasked:
    NOTIFYs, notices, the end of the connection.

    Nothing reads the socket before it is readable (libpq's PQflush says
    whether a statement went out whole), so a statement's Deferred never
    fires inside execute(): callers may keep it before it fires. (A read
    right after sending often finds the result already in when the hub and
    PostgreSQL share a CPU; fired there, WatchedSymbols.sync kept a fired
    Deferred as its sync under way, and never synced again.)

    libpq closes its socket by itself when it finds the connection broken,
    possibly while the reactor still watches that descriptor number; the next
    socket to get the number (a client's, another connection's) would then be
    skipped or refused by epoll. So once connected, the reactor watches a
    duplicate of the socket that only L{close} closes, after removing every
    watcher of it. It also tells the pool when the server closes the
    connection while it sits idle, instead of raising into the reactor.
    """

    cursorFactory = WatchedCursor
    log = Logger()

    def __init__(self, reactor, on_lost):
        super().__init__(reactor=reactor)
        self._on_lost = on_lost
        self._watched: int | None = None
        # The statement under way: its cursor and the Deferred it returned.
        self._statement: tuple[WatchedCursor, Deferred] | None = None
        self._closing = False
        # Watched for writing too: a statement libpq could not send at once.
        self._writing = False
        self.stalled = False
        self._flush = _PQFLUSH
        self.backend: int | None = None
        # The names of the statements this connection has prepared (L{Prepared}).
        self.prepared: set[str] = set()
        # Whose work it runs, since when (the pool's fair queue counts it).
        self.owner: Any = None
        self.lent_at = 0.0

    def connect(self, *args, **kwargs):
        return super().connect(*args, **kwargs).addCallback(self._watch_own_descriptor)

    def _watch_own_descriptor(self, result):
        self.backend = self.pollable().get_backend_pid()
        self.reactor.removeReader(self)
        self._watched = os.dup(self.pollable().fileno())
        self.reactor.addReader(self)
        return result

    @property
    def watching(self) -> bool:
        """Connected, and watched through its own descriptor until L{close}."""
        return self._watched is not None

    def fileno(self) -> int:
        return self._watched if self._watched is not None else super().fileno()

    def stall(self):
        """Give up on a server that does not answer: the pending work fails, the socket closes."""
        self.stalled = True
        self.close()

    @property
    def usable(self) -> bool:
        return self._connection is not None and not self._connection.closed

    def close(self):
        """
        Stop watching, close the connection, then the duplicate; the
        statement under way fails with ConnectionDone. Safe to call again.
        """
        if self._connection is None or self._closing:
            return
        self._closing = True
        try:
            for watcher in (self, *self._cursors):
                self.reactor.removeReader(watcher)
                self.reactor.removeWriter(watcher)
            self._writing = False
            super().close()
            if self._watched is not None:
                os.close(self._watched)
                self._watched = None
        finally:
            self._closing = False
        statement, self._statement = self._statement, None
        if statement is not None:
            statement[1].errback(Failure(ConnectionDone()))

    # The statement under way

    def run_statement(self, cursor: WatchedCursor) -> Deferred:
        """
        Drive the statement C{cursor} has just sent: a Deferred that fires
        with C{cursor} once its result is in (txpostgres's contract).
        """
        # Cancelling it asks the server to cancel the statement, which then
        # ends with the server's answer (query_canceled: CancelledError), as
        # with txpostgres.
        done: Deferred = Deferred(self._cancel)
        done.addErrback(self._handleCancellation)
        self._statement = (cursor, done)
        if self._flush is not None:
            # Sent whole (the usual case): the result comes with a readable
            # event, and the socket is not read in vain before it is in.
            pending = self._flush(self._connection.pgconn_ptr)
            if pending == 0:
                return done
            if pending == 1:
                # libpq could not send it all: psycopg2's poll sends the rest
                # each time the socket takes more.
                self._watch_writes(True)
                return done
        # Without libpq's PQflush (or on a broken connection), psycopg2's
        # poll flushes the statement, or reports the failure. It may also
        # find the result already in: then, as with txpostgres, the Deferred
        # fires at the next turn, never before execute() returns (a caller
        # may keep it first).
        self._advance(at_once=False)
        return done

    def _advance(self, at_once=True):
        assert self._statement is not None
        cursor, done = self._statement
        try:
            state = self._connection.poll()
        except Exception:
            failure = Failure()
            self._statement_over()
            self._fire(at_once, done.errback, failure)
            return
        if state == POLL_OK:
            self._statement_over()
            self._fire(at_once, done.callback, cursor)
        elif state == POLL_WRITE:
            self._watch_writes(True)
        elif state == POLL_READ:
            # The reactor watches the socket for reading all along.
            self._watch_writes(False)
        else:
            self._statement_over()
            self._fire(at_once, done.errback, UnexpectedPollResult())

    def _fire(self, at_once, method, result):
        if at_once:
            method(result)
            # NOTIFYs read with the result reach their observers after it, as with txpostgres.
            self.checkForNotifies()
        else:
            self.reactor.callLater(0, self._fire, True, method, result)

    def _statement_over(self):
        """Before the statement's Deferred fires (its callbacks may start the next one)."""
        self._statement = None
        self._watch_writes(False)
        if not self._socket_open():
            # libpq closed its socket: the duplicate would stay readable (EOF)
            # until the owner closes the connection; do not spin on it.
            self.reactor.removeReader(self)

    def checkForNotifies(self):
        """
        Hand the NOTIFYs just read to the observers at once, in order, from
        the read that brought them (txpostgres hands them to a Cooperator: a
        task and a timed call for every read that brings any, and each
        write's commit NOTIFYs every hub). An observer's failure is logged; a
        Deferred it returns is not waited for.
        """
        notifies = self._connection.notifies
        if not notifies:
            return
        heard = notifies[:]
        del notifies[:]
        for notify in heard:
            for observer in self.getNotifyObservers():
                maybeDeferred(observer, notify).addErrback(self._observer_failed)

    def _observer_failed(self, failure):
        self.log.failure("a NOTIFY observer failed", failure)

    def _watch_writes(self, wanted):
        if wanted != self._writing:
            self._writing = wanted
            if wanted:
                self.reactor.addWriter(self)
            else:
                self.reactor.removeWriter(self)

    # Reactor events

    def doRead(self):
        if self._watched is None:
            # Still connecting: only the poll cycle watches the socket, which
            # libpq may close on failure; txpostgres's Connection.doRead would
            # watch it again for NOTIFY whatever happened.
            super(Connection, self).doRead()
            return
        if self._statement is not None:
            self._advance()
            return
        # Nothing asked: NOTIFYs, notices, or the end of the connection.
        try:
            self._connection.poll()
            self.checkForNotifies()
            if self._socket_open():
                return
        except psycopg2.Error:
            pass
        self._lost()

    def doWrite(self):
        if self._watched is None:
            super().doWrite()
            return
        if self._statement is not None:
            self._advance()
        else:
            self._watch_writes(False)

    def connectionLost(self, reason):
        if self._watched is None or self._closing:
            super().connectionLost(reason)
            return
        # The reactor gave up on the descriptor (a hang-up with nothing to read).
        self._lost()

    def _lost(self):
        self.close()
        self._on_lost(self)

    def _socket_open(self) -> bool:
        """libpq may have dropped the socket without raising (a FATAL notice while idle)."""
        return self.usable and self.pollable().fileno() >= 0


class Pool:
    """
    Connections to one database. Work is a function of a txpostgres cursor
    that returns a Deferred or a coroutine; it runs inside one transaction.
    The connections run on C{reactor} (which txpostgres also uses as a
    clock); C{clock} times idle connections, timeouts and the waits between
    retries. C{metrics}, when given, hears of each retry and of each final
    failure.

    Nothing waits forever on the database: a connection must open within
    C{connect_timeout}; the server cancels a statement that runs longer than
    C{statement_timeout} (L{StatementTimeout}), and a server that does not
    answer at all (stopped, cut off) loses the connection
    L{STALL_GRACE} seconds later (L{DatabaseStalled}). Transient failures
    are tried again, from C{retry_backoff} seconds doubling up to
    L{MAX_RETRY_DELAY}, while the next try starts within C{retry_budget}
    seconds of the first.
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
        retry_budget: float,
        retry_backoff: float,
        connect_timeout: float,
        statement_timeout: float,
        per_client: int,
        metrics: FailureObserver | None = None,
    ) -> None:
        self._dsn = dsn
        self._reactor = reactor
        self._clock = clock
        self.size_min = size_min
        self.size_max = size_max
        self._idle_timeout = idle_timeout
        self._retry_budget = retry_budget
        self._retry_backoff = retry_backoff
        self._connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self._idle: list[WatchedConnection] = []
        self._idle_timers: dict[WatchedConnection, IDelayedCall] = {}
        self._busy: set[WatchedConnection] = set()
        self._opening = 0
        self._queue = FairQueue(clock, per_client)
        self._closed = False
        self._metrics = metrics
        self._commit = "COMMIT"

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
        """Work waiting for a connection: none is free, or its client holds its share."""
        return len(self._queue)

    async def start(self) -> None:
        """Open the minimum number of connections; fails if the database is unreachable."""
        connections = await gatherResults([self._open() for _ in range(self.size_min)], consumeErrors=True)
        for connection in connections:
            self._make_idle(connection)

    def close(self) -> None:
        """Close idle connections now and busy ones as they are released."""
        self._closed = True
        for waiter in self._queue.drain():
            waiter.deferred.errback(PoolClosed())
        for connection in self._idle:
            self._cancel_idle_timer(connection)
            connection.close()
        self._idle.clear()

    def commit_with(self, statement: str) -> None:
        """
        Send C{statement} with each transaction's COMMIT, in the same round
        trip, as the transaction's last statement (the change log numbers
        the transaction's changes there).
        """
        self._commit = f"{statement}; COMMIT"

    async def transaction(self, work: Callable[..., Any], *args: Any) -> Any:
        """
        Run C{work(cursor, *args)} inside BEGIN/COMMIT and return its result.
        A failure rolls the whole transaction back; a transient failure is
        tried again on a fresh connection.
        """
        return await self._retrying(self._run_transaction, work, args)

    async def query(self, sql: str | Prepared, params: Sequence[Any] | Mapping[str, Any] | None = None) -> list[tuple]:
        """Run one statement on its own (autocommit) and return its rows."""
        return await self._retrying(self._run_query, sql, params)

    async def write(self, sql: str | Prepared, params: Sequence[Any] | None = None) -> list[tuple]:
        """
        Run one writing statement on its own (autocommit: it is its own
        transaction) and return its rows. Lost with its connection, the
        statement may have committed: that is L{CommitOutcomeUnknown}, never
        retried blindly (a connection lost before the statement went out
        looks the same, and is settled the same way); a failure to get a
        connection is tried again. The commit
        observers are not called: such a statement does what must follow its
        commit itself.
        """
        return await self._retrying(self._run_write, sql, params)

    async def _retrying(self, run, *args):
        """Try C{run(connection, *args)} on a pooled connection until it succeeds or stops being worth retrying."""
        return await retrying(
            lambda: self._on_a_connection(run, *args),
            clock=self._clock,
            budget=self._retry_budget,
            delay=self._retry_backoff,
            max_delay=MAX_RETRY_DELAY,
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
            self._release(connection, gone=connection_is_gone(error) or not connection.usable)
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
        cursor = self._cursor(connection, begin=False)
        await cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []

    async def _run_write(self, connection, sql, params):
        try:
            rows = await self._run_query(connection, sql, params)
        except Exception as error:
            if connection_is_gone(error):
                raise CommitOutcomeUnknown(str(error).strip(), connection.backend) from error
            raise
        return rows

    async def _run_transaction(self, connection, work, args):
        cursor = self._cursor(connection, begin=True)
        try:
            result = await ensureDeferred(_as_awaitable(work(cursor, *args)))
        except BaseException:
            if cursor.began and connection.usable:
                await cursor.execute("ROLLBACK")
            raise
        if not cursor.began:
            return result
        try:
            await cursor.execute(self._commit)
        except Exception as error:
            if connection_is_gone(error):
                raise CommitOutcomeUnknown(str(error).strip(), connection.backend) from error
            raise
        return result

    async def settled(self, outcome: CommitOutcomeUnknown) -> None:
        """
        Return once the server process that received a lost COMMIT has
        ended, so that whether it stored the transaction is final; raise
        C{outcome} when that is not known within the retry budget.
        """
        if outcome.backend is None:
            return

        async def ended():
            if await self._on_a_connection(self._run_query, _BACKEND_ALIVE, (outcome.backend,)):
                raise _StillRunning()

        try:
            await retrying(
                ended,
                clock=self._clock,
                budget=self._retry_budget,
                delay=self._retry_backoff,
                max_delay=MAX_RETRY_DELAY,
                retryable=lambda error: isinstance(error, _StillRunning) or is_transient(error),
            )
        except Exception:
            raise outcome from None

    async def _acquire(self):
        if self._closed:
            raise PoolClosed()
        waiter = self._queue.wait(current_owner())
        self._dispatch()
        return await waiter.deferred

    def _dispatch(self):
        """Lend idle connections, or open new ones, to the waiters the fair queue picks."""
        while len(self._queue) and not self._closed:
            self._drop_dead_idle()
            if not self._idle and self.size >= self.size_max:
                return
            waiter = self._queue.next()
            if waiter is None:
                return
            if self._idle:
                connection = self._idle.pop()
                self._cancel_idle_timer(connection)
                self._lend(connection, waiter)
            else:
                self._open_for(waiter)

    def _drop_dead_idle(self):
        for connection in [c for c in self._idle if not c.usable]:
            self._idle.remove(connection)
            self._cancel_idle_timer(connection)
            connection.close()

    def _lend(self, connection, waiter):
        self._busy.add(connection)
        connection.owner = waiter.owner
        connection.lent_at = self._queue.lent(waiter.owner)
        waiter.deferred.callback(connection)

    def _release(self, connection, gone=False):
        self._busy.discard(connection)
        self._queue.returned(connection.owner, connection.lent_at)
        if gone or self._closed:
            connection.close()
            if gone:
                self._forget_idle()
        else:
            self._make_idle(connection)
        self._dispatch()

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
        """Open a connection for C{waiter}; it counts against its owner's cap while it opens."""
        since = self._queue.lent(waiter.owner)

        def opened(connection):
            self._queue.returned(waiter.owner, since)
            if self._closed:
                connection.close()
                waiter.deferred.errback(PoolClosed())
                return
            self._lend(connection, waiter)

        def failed(reason):
            self._queue.returned(waiter.owner, since)
            waiter.deferred.errback(reason)
            self._dispatch()

        self._open().addCallbacks(opened, failed)

    def _cursor(self, connection, begin):
        return _TimedCursor(connection.cursor(), connection, self._clock, self.statement_timeout, begin)

    def _open(self):
        self._opening += 1
        return ensureDeferred(self._opening_one())

    async def _opening_one(self):
        """A new connection with the statement timeout set, or the reason it could not open in time."""
        connection = WatchedConnection(self._reactor, self._lost_while_idle)
        timer = self._clock.callLater(self._connect_timeout, connection.stall)
        try:
            await maybeDeferred(connection.connect, self._dsn)
            timer.cancel()
            await self._cursor(connection, begin=False).execute(
                "SET statement_timeout = %s", (max(1, round(self.statement_timeout * 1000)),)
            )
        except Exception as error:
            connection.close()
            if connection.stalled:
                raise ConnectTimeout(f"no connection to PostgreSQL within {self._connect_timeout:g}s") from None
            raise error
        finally:
            self._opening -= 1
            if timer.active():
                timer.cancel()
        return connection

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


@attrs.frozen
class Prepared:
    """
    A hot statement, planned once per connection instead of at every call:
    a connection sends C{prepare} the first time it runs it (a new connection,
    after a reconnect, prepares it again), then only C{execute}, which
    begins with C{prefix} (statements sent ahead of it in the same round
    trip). Made by L{prepared}.
    """

    name: str
    prepare: str
    execute: str


@functools.lru_cache(maxsize=1024)
def prepared(statement: str, prefix: str = "") -> Prepared:
    """C{statement}, written with %s placeholders like any other, as a L{Prepared} statement."""
    arguments = []

    def placeholder(match: re.Match) -> str:
        if match.group() == "%%":
            return "%"
        # EXECUTE casts each value as the statement does: a value whose
        # literal has another type (an array of text for uuid[]) is then
        # converted, not refused.
        arguments.append("%s" + (match.group(1) or ""))
        return f"${len(arguments)}{match.group(1) or ''}"

    body = re.sub(r"%%|%s(::(?:double precision|[a-z0-9_]+)(?:\[\])?)?", placeholder, statement)
    name = "th_" + hashlib.blake2b(body.encode(), digest_size=10).hexdigest()
    listed = f" ({', '.join(arguments)})" if arguments else ""
    return Prepared(name, f"PREPARE {name} AS {body}", f"{prefix}EXECUTE {name}{listed}")


class _TimedCursor:
    """
    A txpostgres cursor whose statements may not stall: the server cancels a
    statement after C{timeout} seconds, and the connection is dropped when
    the server has not answered one L{STALL_GRACE} seconds after that.
    With C{begin}, it sends BEGIN together with the transaction's first
    statement: one round trip fewer per transaction.
    """

    def __init__(self, cursor, connection, clock, timeout, begin):
        self._cursor = cursor
        self._timeout = timeout
        self._limit = timeout + STALL_GRACE
        self._connection = connection
        self._clock = clock
        self.began = not begin

    async def execute(self, statement, params=None):
        if isinstance(statement, Prepared):
            if statement.name not in self._connection.prepared:
                await self._send(statement.prepare)
                self._connection.prepared.add(statement.name)
            statement = statement.execute
        return await self._send(statement, params)

    async def _send(self, statement, params=None):
        if not self.began:
            self.began = True
            statement = (b"BEGIN; " if isinstance(statement, bytes) else "BEGIN; ") + statement
        timer = self._clock.callLater(self._limit, self._connection.stall)
        try:
            return await self._cursor.execute(statement, params)
        except CancelledError:
            # txpostgres turns the server's query_canceled into CancelledError;
            # the pool cancels nothing itself, so it was the statement timeout.
            raise StatementTimeout(f"the statement ran longer than {self._timeout:g}s and was cancelled") from None
        except Exception as error:
            if self._connection.stalled:
                raise DatabaseStalled(f"PostgreSQL did not answer within {self._limit:g}s") from error
            raise
        finally:
            if timer.active():
                timer.cancel()

    def __getattr__(self, name):
        return getattr(self._cursor, name)


async def _as_awaitable(value):
    """Let work be a plain function, a Deferred-returning one, or a coroutine."""
    if isinstance(value, Deferred) or hasattr(value, "__await__"):
        return await value
    return value
