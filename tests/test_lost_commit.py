"""
An INSERT whose answer to COMMIT is lost gets the true answer: the hub
learns from the stored keys whether its transaction went in.
"""

import os
import signal

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tradehub.controllers.market import MarketTickController
from tradehub.db.failures import CommitOutcomeUnknown
from tradehub.protocol.enums import ErrorCode
from tradehub.server.routes import as_protocol_error

from .rows import tick
from .support import fresh_database, make_pool


class LostCommitTests(TestCase):
    async def controller(self, written, **settings):
        """A tick controller on a fresh database whose C{written(cursor, calls)} hook runs before COMMIT."""
        pool = make_pool(await fresh_database(self), size_min=1, size_max=2, **settings)
        await pool.start()
        self.addCleanup(pool.close)
        calls = []

        class Ticks(MarketTickController):
            async def written(self, cursor, rows, command):
                calls.append(len(rows))
                await written(cursor, len(calls))

        self.calls = calls
        return Ticks(pool)

    async def stored_ticks(self, controller):
        rows = await controller.pool.query("SELECT seq FROM market_tick ORDER BY seq")
        return [seq for (seq,) in rows]

    async def test_a_group_stored_before_the_answer_was_lost_is_answered_stored(self):
        async def stop_own_server_until_after_the_hub_gave_up(cursor, call):
            if call > 1:
                return
            await cursor.execute("SELECT pg_backend_pid()")
            [(backend,)] = cursor.fetchall()
            # COMMIT reaches the stopped server; the hub drops the connection
            # after statement timeout + 1 s, then the server wakes, commits
            # and finds its client gone.
            os.kill(backend, signal.SIGSTOP)
            reactor.callLater(1.5, os.kill, backend, signal.SIGCONT)
            self.addCleanup(_resume, backend)

        controller = await self.controller(stop_own_server_until_after_the_hub_gave_up, statement_timeout=0.2)
        answers = await controller.insert_batches([[tick(1)], [tick(2), tick(3)]], echo=False)
        # Not echoed: each request's answer is its rows as written.
        self.assertEqual(answers, [[tick(1)], [tick(2), tick(3)]])
        self.assertEqual(self.calls, [3])
        self.assertEqual(await self.stored_ticks(controller), [1, 2, 3])

    async def test_a_group_not_stored_is_written_again_once(self):
        async def lose_the_first_commit(cursor, call):
            if call == 1:
                raise CommitOutcomeUnknown("connection lost during COMMIT")

        controller = await self.controller(lose_the_first_commit)
        answers = await controller.insert_batches([[tick(1)], [tick(2)]])
        self.assertEqual(answers, [[tick(1)], [tick(2)]])
        self.assertEqual(self.calls, [2, 2])
        self.assertEqual(await self.stored_ticks(controller), [1, 2])

    async def test_an_outcome_that_stays_unknown_is_db_unavailable_saying_so(self):
        other = await fresh_database(self)
        lingering = make_pool(other, size_min=1, size_max=1)
        await lingering.start()
        self.addCleanup(lingering.close)
        [(alive,)] = await lingering.query("SELECT pg_backend_pid()")

        async def commit_lost_on_a_server_process_that_lives_on(cursor, call):
            raise CommitOutcomeUnknown("connection lost during COMMIT", alive)

        controller = await self.controller(commit_lost_on_a_server_process_that_lives_on, retry_budget=0.3)
        with self.assertRaises(CommitOutcomeUnknown) as raised:
            await controller.insert([tick(1)])
        answer = as_protocol_error(raised.exception)
        self.assertEqual(answer.code, ErrorCode.DB_UNAVAILABLE)
        self.assertIn("outcome is unknown", answer.message)
        self.assertEqual(self.calls, [1])
        self.assertEqual(await self.stored_ticks(controller), [])


class LostStatementTests(TestCase):
    """The same for an INSERT sent as one statement on its own: the statement is its commit."""

    async def setUp(self):
        self.pool = make_pool(await fresh_database(self), size_min=1, size_max=1, statement_timeout=0.2)
        await self.pool.start()
        self.addCleanup(self.pool.close)
        self.controller = MarketTickController(self.pool)

    async def test_a_statement_stored_before_its_answer_was_lost_is_answered_stored(self):
        [(backend,)] = await self.pool.query("SELECT pg_backend_pid()")
        # The INSERT reaches the stopped server; the hub drops the connection
        # after statement timeout + 1 s, then the server wakes, commits and
        # finds its client gone.
        os.kill(backend, signal.SIGSTOP)
        reactor.callLater(1.5, os.kill, backend, signal.SIGCONT)
        self.addCleanup(_resume, backend)
        self.assertEqual(await self.controller.insert([tick(1)], echo=False), [tick(1)])
        self.assertEqual(await self.pool.query("SELECT seq FROM market_tick"), [(1,)])

    async def test_a_statement_not_stored_is_written_again_once(self):
        write, sent = self.pool.write, []

        async def lose_the_first(statement, params):
            sent.append(statement)
            if len(sent) == 1:
                raise CommitOutcomeUnknown("connection lost before the answer")
            return await write(statement, params)

        self.pool.write = lose_the_first
        self.assertEqual(await self.controller.insert_batches([[tick(1)], [tick(2)]]), [[tick(1)], [tick(2)]])
        self.assertEqual(len(sent), 2)
        self.assertEqual(await self.pool.query("SELECT seq FROM market_tick ORDER BY seq"), [(1,), (2,)])


def _resume(backend):
    try:
        os.kill(backend, signal.SIGCONT)
    except ProcessLookupError:
        pass
