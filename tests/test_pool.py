import os
import signal
import socket

import psycopg2
from psycopg2.extensions import POLL_OK, POLL_READ, POLL_WRITE
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, gatherResults
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tradehub.db import pool as pool_module
from tradehub.db.failures import (
    CommitOutcomeUnknown,
    ConnectTimeout,
    PoolClosed,
    StatementTimeout,
    is_transient,
    refusal,
)
from tradehub.db.pool import WatchedConnection, prepared
from tradehub.errors import Busy

from .support import blocking_query, fresh_database, make_pool


class PoolCase(TestCase):
    async def start_pool(self, **settings):
        """A started pool on a fresh database holding an empty table t (id, note)."""
        self.dsn = await fresh_database(self)
        await deferToThread(blocking_query, self.dsn, "CREATE TABLE t (id int PRIMARY KEY, note text)")
        pool = make_pool(self.dsn, **settings)
        await pool.start()
        self.addCleanup(pool.close)
        return pool


class PoolTests(PoolCase):
    async def backends(self):
        rows = await deferToThread(
            blocking_query,
            self.dsn,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        return rows[0][0]

    async def backend_pids(self):
        rows = await deferToThread(
            blocking_query,
            self.dsn,
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        return sorted(pid for (pid,) in rows)

    async def test_starts_with_minimum_connections(self):
        pool = await self.start_pool(size_min=2, size_max=5)
        self.assertEqual((pool.size, pool.idle), (2, 2))
        self.assertEqual(await self.backends(), 2)

    async def test_grows_to_maximum_under_load_and_no_further(self):
        pool = await self.start_pool(size_min=1, size_max=3)
        peak = []

        async def sleeper(cursor):
            peak.append(pool.size)
            await cursor.execute("SELECT pg_sleep(0.2)")
            return 1

        results = await gatherResults([ensureDeferred(pool.transaction(sleeper)) for _ in range(7)])
        self.assertEqual(results, [1] * 7)
        self.assertEqual(max(peak), 3)
        self.assertEqual(pool.size, 3)
        self.assertEqual(await self.backends(), 3)

    async def test_idle_connections_above_minimum_are_closed_after_timeout(self):
        clock = Clock()
        pool = await self.start_pool(size_min=1, size_max=4, idle_timeout=30, clock=clock)

        async def sleeper(cursor):
            await cursor.execute("SELECT pg_sleep(0.1), pg_backend_pid()")
            return cursor.fetchone()[1]

        opened = await gatherResults([ensureDeferred(pool.transaction(sleeper)) for _ in range(4)])
        self.assertEqual(pool.size, 4)
        self.assertEqual(sorted(opened), await self.backend_pids())
        clock.advance(29)
        self.assertEqual(pool.size, 4)
        # A connection used again before its timeout starts a new idle period:
        # it survives, and the three whose timers ran out are closed.
        [(used_again,)] = await pool.query("SELECT pg_backend_pid()")
        self.assertIn(used_again, opened)
        clock.advance(1)
        self.assertEqual(pool.size, 1)
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(await self.backends(), 1)
        self.assertEqual(await self.backend_pids(), [used_again])
        self.assertEqual(await pool.query("SELECT pg_backend_pid()"), [(used_again,)])

    async def test_transaction_terminated_midway_is_retried_on_a_fresh_connection(self):
        pool = await self.start_pool()
        attempts = []

        async def work(cursor):
            await cursor.execute("SELECT pg_backend_pid()")
            attempts.append(cursor.fetchone()[0])
            await cursor.execute("INSERT INTO t VALUES (1, 'written once')")
            if len(attempts) == 1:
                reactor.callLater(0.2, _terminate, self.dsn, attempts[0])
                await cursor.execute("SELECT pg_sleep(5)")
            return "done"

        self.assertEqual(await pool.transaction(work), "done")
        self.assertEqual(len(attempts), 2)
        self.assertNotEqual(attempts[0], attempts[1])
        self.assertEqual(await pool.query("SELECT id, note FROM t"), [(1, "written once")])

    async def test_pool_recovers_when_every_connection_was_terminated(self):
        pool = await self.start_pool(size_min=3, size_max=3)
        await deferToThread(
            blocking_query,
            self.dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        self.assertEqual(await pool.query("SELECT 42"), [(42,)])

    async def test_a_prepared_statement_is_prepared_again_on_the_connection_that_replaces_a_lost_one(self):
        pool = await self.start_pool(size_min=1, size_max=1)
        statement = prepared("SELECT %s::int + 1")
        listed = "SELECT name FROM pg_prepared_statements"
        self.assertEqual(await pool.query(statement, (1,)), [(2,)])
        self.assertEqual(await pool.query(listed), [(statement.name,)])
        [pid] = await self.backend_pids()
        await _terminate(self.dsn, pid)  # what a restart does to every connection
        self.assertEqual(await pool.query(statement, (2,)), [(3,)])
        self.assertNotEqual(await self.backend_pids(), [pid])
        self.assertEqual(await pool.query(listed), [(statement.name,)])

    async def test_constraint_violation_is_not_retried(self):
        pool = await self.start_pool()
        await pool.query("INSERT INTO t VALUES (1, 'first')")
        calls = []

        async def duplicate(cursor):
            calls.append(1)
            await cursor.execute("INSERT INTO t VALUES (1, 'second')")

        with self.assertRaises(psycopg2.IntegrityError):
            await pool.transaction(duplicate)
        self.assertEqual(len(calls), 1)

    async def test_failure_rolls_back_the_whole_transaction(self):
        pool = await self.start_pool(size_min=1, size_max=1)

        async def half_done(cursor):
            await cursor.execute("INSERT INTO t VALUES (1, 'a')")
            await cursor.execute("INSERT INTO t VALUES (2, 'b')")
            await cursor.execute("INSERT INTO t VALUES (1, 'duplicate')")

        with self.assertRaises(psycopg2.IntegrityError):
            await pool.transaction(half_done)
        self.assertEqual(await pool.query("SELECT count(*) FROM t"), [(0,)])

    async def test_python_error_in_work_rolls_back(self):
        pool = await self.start_pool(size_min=1, size_max=1)

        async def broken(cursor):
            await cursor.execute("INSERT INTO t VALUES (1, 'a')")
            raise ValueError("bad data")

        with self.assertRaises(ValueError):
            await pool.transaction(broken)
        self.assertEqual(await pool.query("SELECT count(*) FROM t"), [(0,)])

    async def test_waiting_work_fails_when_pool_closes(self):
        pool = await self.start_pool(size_min=1, size_max=1)

        async def sleeper(cursor):
            await cursor.execute("SELECT pg_sleep(0.2)")

        busy = ensureDeferred(pool.transaction(sleeper))
        waiting = ensureDeferred(pool.query("SELECT 1"))
        pool.close()
        with self.assertRaises(PoolClosed):
            await waiting
        await busy
        self.assertEqual(pool.size, 0)

    async def attempt_times_of_always_failing_work(self, **settings):
        """When each try of a transaction whose connection always dies began, on the pool's clock."""
        clock = Clock()
        pool = await self.start_pool(clock=clock, **settings)
        calls = []

        async def always_killed(cursor):
            calls.append(round(clock.seconds(), 6))
            await cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")

        failing = ensureDeferred(pool.transaction(always_killed))
        await _advance_retry_waits(clock, failing)
        with self.assertRaises(psycopg2.OperationalError):
            await failing
        return calls

    async def test_retries_stop_once_the_budget_is_spent(self):
        calls = await self.attempt_times_of_always_failing_work(retry_budget=0.5, retry_backoff=0.1)
        # Waits of 0.1 then 0.2 s; the next (0.4 s) would start past the budget.
        self.assertEqual(calls, [0, 0.1, 0.3])

    async def test_retry_waits_grow_no_longer_than_half_a_second(self):
        calls = await self.attempt_times_of_always_failing_work(retry_budget=2, retry_backoff=0.2)
        waits = [round(later - earlier, 6) for earlier, later in zip(calls, calls[1:], strict=False)]
        self.assertEqual(waits, [0.2, 0.4, 0.5, 0.5])

    async def test_a_closed_pool_stops_retrying(self):
        clock = Clock()
        pool = await self.start_pool(retry_budget=3, retry_backoff=1, clock=clock)
        calls = []

        async def killed_while_closing(cursor):
            calls.append(1)
            pool.close()
            await cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")

        with self.assertRaises(psycopg2.OperationalError):
            await pool.transaction(killed_while_closing)
        self.assertEqual((len(calls), clock.getDelayedCalls(), pool.size), (1, [], 0))


class TimeoutTests(PoolCase):
    """Nothing waits forever on the database."""

    async def test_statement_running_past_the_timeout_is_cancelled_and_refused_busy(self):
        pool = await self.start_pool(statement_timeout=0.2)
        calls = []

        async def slow(cursor):
            calls.append(1)
            await cursor.execute("SELECT pg_sleep(3)")

        with self.assertRaises(StatementTimeout) as raised:
            await pool.transaction(slow)
        self.assertEqual(calls, [1])
        self.assertIsInstance(refusal(raised.exception), Busy)

    async def test_server_that_stops_answering_is_dropped_and_the_work_retried(self):
        pool = await self.start_pool(size_min=1, size_max=1, statement_timeout=0.2, retry_budget=5)
        [(stopped,)] = await pool.query("SELECT pg_backend_pid()")
        os.kill(stopped, signal.SIGSTOP)
        self.addCleanup(os.kill, stopped, signal.SIGCONT)
        [(answered,)] = await pool.query("SELECT pg_backend_pid()")
        self.assertNotEqual(answered, stopped)
        self.assertEqual(pool.size, 1)

    async def test_commit_unanswered_is_an_unknown_outcome_not_a_retry(self):
        pool = await self.start_pool(size_min=1, size_max=1, statement_timeout=0.2, retry_budget=5)
        calls = []

        async def stops_its_server_before_commit(cursor):
            calls.append(1)
            await cursor.execute("INSERT INTO t VALUES (1) RETURNING pg_backend_pid()")
            [(backend,)] = cursor.fetchall()
            os.kill(backend, signal.SIGSTOP)
            self.addCleanup(os.kill, backend, signal.SIGCONT)

        with self.assertRaises(CommitOutcomeUnknown):
            await pool.transaction(stops_its_server_before_commit)
        self.assertEqual(calls, [1])

    async def test_server_that_never_answers_the_connect_is_given_up_on(self):
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        self.addCleanup(silent.close)
        host, port = silent.getsockname()
        pool = make_pool(f"host={host} port={port} dbname=x", connect_timeout=0.2, retry_budget=0.5)
        self.addCleanup(pool.close)
        with self.assertRaises(ConnectTimeout):
            await pool.query("SELECT 1")
        self.assertEqual(pool.size, 0)


async def _advance_retry_waits(clock, work):
    """Move C{clock} through each retry wait (the short timers) until C{work} is done."""
    while not work.called:
        await deferLater(reactor, 0.005, lambda: None)
        waits = [call.getTime() - clock.seconds() for call in clock.getDelayedCalls()]
        short = [wait for wait in waits if wait <= 1]
        if short:
            clock.advance(min(short))


class DeadConnectionTests(PoolCase):
    """A pooled connection leaves the reactor when it dies, whatever closed it."""

    async def test_socket_closed_by_libpq_does_not_hide_the_next_socket_with_its_number(self):
        pool = await self.start_pool(size_min=1, size_max=1)
        [(backend,)] = await pool.query("SELECT pg_backend_pid()")
        [connection] = pool._idle
        number = connection.pollable().fileno()
        mine, theirs = socket.socketpair()
        self.addCleanup(mine.close)
        self.addCleanup(theirs.close)
        # libpq closes its socket by itself when it finds the connection
        # broken; the next socket the process opens may get the same number.
        connection.pollable().close()
        os.dup2(mine.fileno(), number)
        reader = _Reader(number)
        reactor.addReader(reader)
        self.addCleanup(os.close, number)
        self.addCleanup(reactor.removeReader, reader)
        theirs.send(b"x")
        self.assertEqual(await _within(reader.received, 5), b"x")
        [(other,)] = await pool.query("SELECT pg_backend_pid()")
        self.assertNotEqual(other, backend)
        self.assertEqual(pool.size, 1)

    async def test_opening_that_fails_at_once_does_not_shrink_the_pool(self):
        self.dsn = await fresh_database(self)
        refusing = _RefusesFirstReader(reactor)
        pool = make_pool(self.dsn, fds=refusing, size_min=1, size_max=1)
        self.addCleanup(pool.close)
        with self.assertRaises(FileNotFoundError):
            await pool.query("SELECT 1")
        self.assertEqual(pool.size, 0)
        self.assertEqual(await pool.query("SELECT 1"), [(1,)])
        self.assertEqual(pool.size, 1)


class WatchedForLifeTests(PoolCase):
    """
    The reactor watches a connection from its connect to its close, not per
    statement; what the server sends between statements is still read, and
    a connection that dies still leaves the reactor.
    """

    async def watched_pool(self, **settings):
        """A pool whose connections run on a recording reactor (its own timers on a Clock: they never fire)."""
        self.fds = _Recording(reactor)
        pool = await self.start_pool(size_min=1, size_max=1, fds=self.fds, clock=Clock(), **settings)
        await pool.query("SELECT 1")
        [self.connection] = pool._idle
        return pool

    async def connected(self):
        """One connection of the pool's kind, on its own, and what its loss handler heard."""
        self.dsn = await fresh_database(self)
        self.fds = _Recording(reactor)
        self.lost = []
        connection = WatchedConnection(self.fds, self.lost.append)
        await connection.connect(self.dsn)
        self.addCleanup(connection.close)
        return connection

    def watched(self, connection):
        return connection in reactor.getReaders(), connection in reactor.getWriters()

    async def test_statements_neither_change_what_the_reactor_watches_nor_wait_for_a_turn(self):
        pool = await self.watched_pool()
        self.fds.calls.clear()

        async def work(cursor):
            await cursor.execute("INSERT INTO t VALUES (1, 'a')")
            await cursor.execute("SELECT note FROM t")
            return cursor.fetchall()

        for _ in range(5):
            self.assertEqual(await pool.query("SELECT 1"), [(1,)])
        self.assertEqual(await pool.transaction(work), [("a",)])
        self.assertEqual(await pool.query(prepared("SELECT %s::int + 1"), (1,)), [(2,)])
        self.assertEqual(self.fds.calls, [])
        self.assertEqual(self.watched(self.connection), (True, False))

    async def test_libpq_s_pqflush_is_reached_through_psycopg2(self):
        # Without it each statement reads the socket once in vain, and a result
        # already in at that read fires a turn later.
        self.assertIsNotNone(pool_module._PQFLUSH)
        await self.watched_pool()
        self.assertEqual(pool_module._PQFLUSH(self.connection.pollable().pgconn_ptr), 0)

    async def test_a_statement_the_socket_cannot_take_at_once_is_sent_as_the_server_reads_it(self):
        pool = await self.watched_pool()
        [(backend,)] = await pool.query("SELECT pg_backend_pid()")
        big = "x" * (8 << 20)
        # The server reads nothing for a moment: libpq cannot send it all at once.
        os.kill(backend, signal.SIGSTOP)
        self.addCleanup(os.kill, backend, signal.SIGCONT)
        reactor.callLater(0.2, os.kill, backend, signal.SIGCONT)
        self.fds.calls.clear()
        self.assertEqual(await pool.query("SELECT length(%s)", (big,)), [(len(big),)])
        self.assertIn("addWriter", [name for name, _ in self.fds.calls])
        self.assertEqual(self.watched(self.connection), (True, False))

    async def test_a_notify_to_an_idle_connection_is_heard_without_leaving_the_reactor(self):
        connection = await self.connected()
        heard = []
        connection.addNotifyObserver(lambda notify: heard.append(notify.payload))
        await connection.runOperation("LISTEN ch")
        self.fds.calls.clear()
        await deferToThread(blocking_query, self.dsn, "NOTIFY ch, 'from elsewhere'")
        while not heard:
            await deferLater(reactor, 0.01, lambda: None)
        # One sent with a statement's own result is heard too.
        await connection.runOperation("NOTIFY ch, 'from itself'")
        while len(heard) < 2:
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(heard, ["from elsewhere", "from itself"])
        self.assertEqual([name for name, _ in self.fds.calls if name != "callLater"], [])
        self.assertEqual(self.watched(connection), (True, False))

    async def test_a_connection_the_server_ends_while_idle_leaves_the_reactor_and_the_pool(self):
        pool = await self.watched_pool()
        connection = self.connection
        [(backend,)] = await pool.query("SELECT pg_backend_pid()")
        await _terminate(self.dsn, backend)
        while pool.size:
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual((self.watched(connection), connection.fileno()), ((False, False), -1))
        self.assertEqual(len(await pool.query("SELECT pg_backend_pid()")), 1)

    async def test_a_fatal_error_while_idle_ends_the_connection(self):
        pool = await self.watched_pool()
        connection = self.connection
        # The server ends a session idle this long with a FATAL error, then closes it.
        await pool.query("SET idle_session_timeout = 100")
        while pool.size:
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual((self.watched(connection), connection.fileno()), ((False, False), -1))

    async def test_a_statement_whose_connection_dies_fails_and_stops_being_watched(self):
        connection = await self.connected()
        cursor = connection.cursor()
        await cursor.execute("SELECT pg_backend_pid()")
        [(backend,)] = cursor.fetchall()
        reactor.callLater(0.1, _terminate, self.dsn, backend)
        with self.assertRaises(psycopg2.OperationalError):
            await cursor.execute("SELECT pg_sleep(5)")
        # Until its owner closes it, the reactor does not spin on the dead socket's end.
        self.assertEqual(self.watched(connection), (False, False))
        self.assertFalse(connection.usable)
        connection.close()
        self.assertEqual(connection.fileno(), -1)

    async def test_a_hang_up_the_reactor_reports_fails_the_statement_and_tells_the_owner(self):
        connection = await self.connected()
        running = connection.cursor().execute("SELECT pg_sleep(5)")
        # What the reactor does for a descriptor that hangs up with nothing to read.
        reactor.removeReader(connection)
        connection.connectionLost(Failure(ConnectionLost()))
        with self.assertRaises(ConnectionDone):
            await running
        self.assertEqual((self.lost, self.watched(connection), connection.fileno()), ([connection], (False, False), -1))

    async def test_a_statement_closed_from_its_own_callback_leaves_nothing_watched(self):
        connection = await self.connected()
        done = connection.cursor().execute("SELECT 1")
        done.addCallback(lambda cursor: (cursor.fetchall(), connection.close())[0])
        self.assertEqual(await done, [(1,)])
        self.assertEqual((self.watched(connection), connection.fileno()), ((False, False), -1))

    async def test_the_next_statement_may_start_from_the_callback_of_the_one_before(self):
        connection = await self.connected()
        cursor = connection.cursor()
        done = cursor.execute("SELECT 1").addCallback(lambda _: cursor.execute("SELECT 2"))
        await done
        self.assertEqual(cursor.fetchall(), [(2,)])

    async def test_a_cancelled_statement_fails_cancelled_and_the_connection_goes_on(self):
        connection = await self.connected()
        running = connection.cursor().execute("SELECT pg_sleep(5)")
        # A cancel request that reaches the server before the statement is ignored.
        await deferLater(reactor, 0.3, lambda: None)
        connection.cancel(running)
        with self.assertRaises(CancelledError):
            await running
        self.assertEqual(await connection.runQuery("SELECT 1"), [(1,)])

    async def test_a_stalled_statement_fails_when_the_connection_is_closed(self):
        connection = await self.connected()
        cursor = connection.cursor()
        await cursor.execute("SELECT pg_backend_pid()")
        [(backend,)] = cursor.fetchall()
        os.kill(backend, signal.SIGSTOP)
        self.addCleanup(os.kill, backend, signal.SIGCONT)
        running = cursor.execute("SELECT 1")
        connection.stall()
        with self.assertRaises(ConnectionDone):
            await running
        self.assertEqual((self.watched(connection), connection.fileno()), ((False, False), -1))


class StatementDrivingTests(SynchronousTestCase):
    """How a connection drives its statements, on a memory reactor and a stand-in for psycopg2's connection."""

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.lost = []
        self.connection = WatchedConnection(self.reactor, self.lost.append)
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        self.pg = self.connection._connection = _FakePg(ours)
        self.connection._watch_own_descriptor(None)
        self.addCleanup(self.connection.close)
        # What libpq's PQflush answers after each statement is sent: 0, all sent.
        self.flushes = []
        self.connection._flush = lambda pgconn: self.flushes.pop(0) if self.flushes else 0

    def watched(self):
        return self.reactor.readers, self.reactor.writers

    def test_a_statement_sent_whole_is_not_polled_until_the_socket_is_readable(self):
        self.pg.polls = [POLL_OK]
        done = self.connection.cursor().execute("SELECT 1")
        self.assertEqual((done.called, self.pg.polls), (False, [POLL_OK]))
        self.connection.doRead()
        # Fired from that read, not at a later turn.
        self.assertTrue(done.called)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(self.watched(), ({self.connection}, set()))

    def test_a_statement_libpq_could_not_send_whole_is_watched_for_writing_until_sent(self):
        self.flushes = [1]
        self.pg.polls = [POLL_WRITE, POLL_READ, POLL_OK]
        done = self.connection.cursor().execute("SELECT 1")
        self.assertEqual(self.watched(), ({self.connection}, {self.connection}))
        self.connection.doWrite()
        self.assertEqual(self.watched(), ({self.connection}, {self.connection}))
        self.connection.doWrite()
        self.assertEqual(self.watched(), ({self.connection}, set()))
        self.connection.doRead()
        self.assertTrue(done.called)
        self.assertEqual(self.watched(), ({self.connection}, set()))

    def test_without_pqflush_a_result_in_at_the_first_poll_fires_at_the_next_turn_not_inside_execute(self):
        self.connection._flush = None
        self.pg.polls = [POLL_OK]
        done = self.connection.cursor().execute("SELECT 1")
        self.assertFalse(done.called)
        self.reactor.advance(0)
        self.assertTrue(done.called)

    def test_without_pqflush_the_first_poll_sends_the_rest_of_a_statement(self):
        self.connection._flush = None
        self.pg.polls = [POLL_WRITE, POLL_READ, POLL_OK]
        done = self.connection.cursor().execute("SELECT 1")
        self.assertEqual(self.watched(), ({self.connection}, {self.connection}))
        self.connection.doWrite()
        self.connection.doRead()
        self.assertTrue(done.called)
        self.assertEqual(self.watched(), ({self.connection}, set()))

    def test_a_failure_read_from_the_socket_fails_the_statement_the_owner_closes(self):
        self.pg.polls = [psycopg2.OperationalError("server closed the connection unexpectedly")]
        done = self.connection.cursor().execute("SELECT 1")
        self.pg.dropped = True
        self.connection.doRead()
        self.failureResultOf(done, psycopg2.OperationalError)
        # libpq dropped the socket: the duplicate, at its end, is not watched
        # (it would be readable at every turn) until the owner closes it.
        self.assertEqual((self.lost, self.watched()), ([], (set(), set())))

    def test_reads_between_statements_are_not_taken_for_a_result(self):
        self.pg.polls = [POLL_OK, POLL_READ, POLL_OK]
        self.connection.doRead()
        done = self.connection.cursor().execute("SELECT 1")
        self.connection.doRead()
        self.assertFalse(done.called)
        self.connection.doRead()
        self.assertTrue(done.called)

    def test_a_connection_whose_socket_libpq_dropped_while_idle_is_closed_and_reported(self):
        self.pg.dropped = True
        self.connection.doRead()
        self.assertEqual((self.lost, self.watched(), self.connection.fileno()), ([self.connection], (set(), set()), -1))

    def test_notifies_read_while_idle_reach_the_observers_from_that_read_in_order(self):
        heard = []
        self.connection.addNotifyObserver(heard.append)
        self.pg.arriving = ["a", "b"]
        self.connection.doRead()
        # At once: no Cooperator task, no reactor turn.
        self.assertEqual(heard, ["a", "b"])
        self.assertEqual(self.pg.notifies, [])

    def test_notifies_read_with_a_result_reach_the_observers_after_its_callbacks(self):
        happened = []
        self.connection.addNotifyObserver(lambda notify: happened.append(notify))
        done = self.connection.cursor().execute("LISTEN ch")
        done.addCallback(lambda _: happened.append("result"))
        self.pg.arriving = ["notify"]
        self.connection.doRead()
        self.assertEqual(happened, ["result", "notify"])

    def test_a_failing_notify_observer_is_logged_and_the_others_still_hear(self):
        heard = []
        self.connection.addNotifyObserver(lambda notify: 1 / 0)
        self.connection.addNotifyObserver(heard.append)
        self.pg.arriving = ["a"]
        self.connection.doRead()
        self.assertEqual(heard, ["a"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_closing_fails_the_statement_under_way_and_leaves_nothing_watched(self):
        done = self.connection.cursor().execute("SELECT 1")
        self.connection.close()
        self.failureResultOf(done, ConnectionDone)
        self.assertEqual((self.watched(), self.connection.fileno()), ((set(), set()), -1))


class _FakePg:
    """What a WatchedConnection uses of psycopg2's connection; each poll() gives the next of C{polls}."""

    pgconn_ptr = 0

    def __init__(self, sock):
        self.sock = sock
        self.polls = []
        self.notifies = []
        self.arriving = []
        self.closed = 0
        self.dropped = False

    def fileno(self):
        return -1 if self.dropped else self.sock.fileno()

    def get_backend_pid(self):
        return 1

    def poll(self):
        # What the server sent unasked comes in with the read.
        self.notifies.extend(self.arriving)
        self.arriving = []
        outcome = self.polls.pop(0) if self.polls else POLL_OK
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def cursor(self):
        return _FakePgCursor()

    def close(self):
        self.closed = 1


class _FakePgCursor:
    def execute(self, statement, params=None):
        pass


class _Recording:
    """A reactor that records what its users ask it to watch and schedule, and does it."""

    def __init__(self, real):
        self._real = real
        self.calls = []

    def _record(self, name, *args):
        self.calls.append((name, args))
        return getattr(self._real, name)(*args)

    def addReader(self, selectable):
        return self._record("addReader", selectable)

    def removeReader(self, selectable):
        return self._record("removeReader", selectable)

    def addWriter(self, selectable):
        return self._record("addWriter", selectable)

    def removeWriter(self, selectable):
        return self._record("removeWriter", selectable)

    def callLater(self, delay, call, *args, **kwargs):
        self.calls.append(("callLater", (delay, call)))
        return self._real.callLater(delay, call, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._real, name)


class _Reader:
    """The smallest reactor reader: fires C{received} with the first bytes on C{number}."""

    def __init__(self, number):
        self.number = number
        self.received = Deferred()

    def fileno(self):
        return self.number

    def doRead(self):
        data = os.read(self.number, 10)
        if not self.received.called:
            self.received.callback(data)

    def connectionLost(self, reason):
        pass

    def logPrefix(self):
        return "reader"


class _RefusesFirstReader:
    """A reactor whose first addReader/addWriter fails, as epoll does for a stale descriptor."""

    def __init__(self, real):
        self._real = real
        self._refused = False

    def _refuse_once(self, method, selectable):
        if not self._refused:
            self._refused = True
            raise FileNotFoundError(2, "No such file or directory")
        return method(selectable)

    def addReader(self, selectable):
        return self._refuse_once(self._real.addReader, selectable)

    def addWriter(self, selectable):
        return self._refuse_once(self._real.addWriter, selectable)

    def __getattr__(self, name):
        return getattr(self._real, name)


def _within(deferred, seconds):
    """C{deferred}, failed with a timeout when it has not fired after C{seconds}."""
    return deferred.addTimeout(seconds, reactor)


def _terminate(dsn, pid):
    return deferToThread(blocking_query, dsn, "SELECT pg_terminate_backend(%s)", pid)


class PreparedTests(SynchronousTestCase):
    def test_placeholders_become_numbered_parameters_cast_again_by_execute(self):
        statement = prepared("SELECT %s::uuid[], %s, %s::double precision WHERE x LIKE '%%a'", "SET y; ")
        self.assertEqual(
            statement.prepare,
            f"PREPARE {statement.name} AS SELECT $1::uuid[], $2, $3::double precision WHERE x LIKE '%a'",
        )
        self.assertEqual(statement.execute, f"SET y; EXECUTE {statement.name} (%s::uuid[], %s, %s::double precision)")

    def test_the_name_follows_the_statement(self):
        self.assertEqual(prepared("SELECT %s").name, prepared("SELECT %s", "SET y; ").name)
        self.assertNotEqual(prepared("SELECT %s").name, prepared("SELECT %s + 1").name)


class ClassificationTests(SynchronousTestCase):
    def test_unknown_commit_outcome_is_never_retried(self):
        self.assertFalse(is_transient(CommitOutcomeUnknown("connection lost during COMMIT")))

    def test_lost_connection_is_transient(self):
        self.assertTrue(is_transient(psycopg2.OperationalError("server closed the connection unexpectedly")))

    def test_programming_errors_are_not_transient(self):
        self.assertFalse(is_transient(ValueError("bug")))
        self.assertFalse(is_transient(psycopg2.IntegrityError("duplicate key")))
