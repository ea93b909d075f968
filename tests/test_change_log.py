"""
The change log in PostgreSQL (schema/0013_change_log.sql): what is
recorded, when, and the positions the relay gives, read back through
ChangeLogRepository the way subscriptions read it.
"""

import select

import psycopg2
from twisted.trial.unittest import TestCase

from tradehub.controllers import CONTROLLERS
from tradehub.repositories.changes import CHANNEL, ChangeLogRepository
from tradehub.repositories.table import Repository
from tradehub.schema.model import SQLTable
from tradehub.schema.tables import TABLES

from .support import fresh_database, make_pool

TICK = (
    "INSERT INTO market_tick (symbol, ts, ts_ns, seq, kind, price, size, conditions)"
    " VALUES (%s, '2026-01-02T03:04:05Z', 7, %s, 'trade', %s, 1, '{}')"
)
UPSERT_TICK = TICK + " ON CONFLICT (symbol, ts, ts_ns, seq) DO UPDATE SET price = EXCLUDED.price"
REPOSITORIES = {c.table.id: Repository(c.table, c.computed_sql) for c in CONTROLLERS}


class ChangeLogCase(TestCase):
    async def setUp(self):
        self.dsn = await fresh_database(self)
        self.changes = ChangeLogRepository(REPOSITORIES)

    def connect(self, autocommit=True):
        connection = psycopg2.connect(self.dsn)
        connection.autocommit = autocommit
        self.addCleanup(connection.close)
        return connection

    def run_sql(self, connection, statement, *params):
        with connection.cursor() as cursor:
            cursor.execute(statement, params or None)
            return cursor.fetchall() if cursor.description else None

    def listening(self):
        connection = self.connect()
        self.run_sql(connection, f"LISTEN {CHANNEL}")
        return connection

    def heard(self, connection):
        """The NOTIFY payloads the listening connection got (waiting up to 5 s for the first)."""
        select.select([connection], [], [], 5)
        connection.poll()
        payloads = [n.payload for n in connection.notifies]
        connection.notifies.clear()
        return payloads

    def relay(self):
        [(last,)] = self.run_sql(self.connect(), ChangeLogRepository.RELAY, 1000)
        return last

    def ticks_after(self, position, through=None, **filters):
        connection = self.connect()
        if through is None:
            [(through, _)] = self.run_sql(connection, ChangeLogRepository.HEAD)
        statement, params = self.changes_statement(position, through, filters)
        return self.changes.changes(SQLTable.MARKET_TICK, self.run_sql(connection, statement, *params))

    def changes_statement(self, position, through, filters):
        return self.changes.changes_statement(SQLTable.MARKET_TICK, position, through, filters, 10_000)


class ChangeLogTests(ChangeLogCase):
    def test_every_wire_table_feeds_the_log_on_insert_update_and_delete(self):
        [(count,)] = self.run_sql(
            self.connect(),
            "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE t.tgname LIKE '%%_change_%%' AND c.relname = ANY(%s)",
            [table.sql_name for table in TABLES.values()],
        )
        self.assertEqual(count, 3 * len(TABLES))

    def test_a_rolled_back_write_leaves_no_change(self):
        writer = self.connect(autocommit=False)
        self.run_sql(writer, TICK, "AAPL", 1, 1)
        writer.rollback()
        self.assertEqual(self.relay(), 0)
        self.assertEqual(self.ticks_after(0), [])

    def test_upsert_reports_what_it_did_and_delete_keeps_the_row(self):
        connection = self.connect()
        self.run_sql(connection, UPSERT_TICK, "AAPL", 1, 1)
        self.run_sql(connection, UPSERT_TICK, "AAPL", 1, 2)
        self.run_sql(connection, "DELETE FROM market_tick WHERE seq = 1")
        self.relay()
        changes = self.ticks_after(0)
        self.assertEqual([(c.position, c.op) for c in changes], [(1, 1), (2, 3), (3, 4)])
        self.assertEqual([str(c.row["price"]) for c in changes], ["1.000000000", "2.000000000", "2.000000000"])
        self.assertEqual(changes[0].row["ts"].ns % 1000, 7)

    def test_positions_follow_commit_order_and_every_resume_point_gets_exactly_what_follows(self):
        early, late = self.connect(autocommit=False), self.connect(autocommit=False)
        self.run_sql(early, TICK, "EARLY", 1, 1)  # began first: the smaller id
        self.run_sql(late, TICK, "LATE", 1, 1)
        late.commit()
        self.relay()
        shorts = self.connect()
        for seq in range(1, 6):  # many short transactions while the long one is open
            self.run_sql(shorts, TICK, "SHORT", seq, 1)
            self.relay()
        self.run_sql(early, TICK, "EARLY", 2, 1)
        early.commit()
        last = self.relay()
        everything = self.ticks_after(0)
        self.assertEqual(
            [(c.row["symbol"], c.row["seq"]) for c in everything],
            [("LATE", 1)] + [("SHORT", s) for s in range(1, 6)] + [("EARLY", 1), ("EARLY", 2)],
        )
        self.assertEqual([c.position for c in everything], list(range(1, last + 1)))
        for resume in range(last + 1):
            self.assertEqual(self.ticks_after(resume), everything[resume:])

    def test_a_row_written_by_two_transactions_keeps_their_commit_order(self):
        first, second = self.connect(autocommit=False), self.connect(autocommit=False)
        self.run_sql(second, TICK, "OTHER", 1, 1)  # the second writer takes its id first
        self.run_sql(first, TICK, "AAPL", 1, 1)
        first.commit()
        self.run_sql(second, "UPDATE market_tick SET price = 5 WHERE symbol = 'AAPL'")
        second.commit()
        self.relay()
        rows = [(c.row["symbol"], c.op) for c in self.ticks_after(0)]
        self.assertLess(rows.index(("AAPL", 1)), rows.index(("AAPL", 3)))

    def test_filters_keep_only_matching_rows(self):
        connection = self.connect()
        for symbol in ("AAPL", "MSFT", "AAPL"):
            self.run_sql(connection, UPSERT_TICK, symbol, 1, 1)
        self.relay()
        self.assertEqual([c.position for c in self.ticks_after(0, symbol=["AAPL"])], [1, 3])
        self.assertEqual([c.position for c in self.ticks_after(1, symbol=["AAPL", "MSFT"])], [2, 3])
        self.assertEqual(len(self.ticks_after(0, symbol=[])), 3)

    def test_trimming_removes_old_changes_and_says_through_where(self):
        connection = self.connect()
        for seq in range(1, 4):
            self.run_sql(connection, TICK, "AAPL", seq, 1)
        self.relay()
        self.run_sql(connection, "UPDATE change_log SET written_at = now() - interval '2 days' WHERE position <= 2")
        [(removed,)] = self.run_sql(connection, ChangeLogRepository.TRIM, 86400, 1000)
        self.assertEqual(removed, 2)
        self.assertEqual(self.run_sql(connection, ChangeLogRepository.HEAD), [(3, 2)])
        self.assertEqual([c.position for c in self.ticks_after(0)], [3])


class NumberAtCommitTests(ChangeLogCase):
    """
    A statement sent on its own after NUMBER_AT_COMMIT numbers its changes
    (and what else is pending) as it commits, without a relay; it never waits
    for another relay, and asks for one when it could not number.
    """

    def alone(self, connection, seq):
        self.run_sql(connection, ChangeLogRepository.NUMBER_AT_COMMIT + TICK, "AAPL", seq, 1)

    def test_a_statement_alone_numbers_its_change_and_what_committed_before_it(self):
        listener = self.listening()
        self.run_sql(self.connect(), TICK, "AAPL", 1, 1)  # committed, left to a relay
        self.alone(self.connect(), 2)
        self.assertEqual(self.run_sql(self.connect(), ChangeLogRepository.HEAD), [(2, 0)])
        self.assertEqual([(c.position, c.row["seq"]) for c in self.ticks_after(0)], [(1, 1), (2, 2)])
        self.assertEqual(self.heard(listener), ["2"])

    def test_the_setting_lasts_one_transaction(self):
        connection = self.connect()
        self.alone(connection, 1)
        self.run_sql(connection, TICK, "AAPL", 2, 1)
        self.assertEqual(self.run_sql(connection, ChangeLogRepository.HEAD), [(1, 0)])

    def test_while_a_relay_holds_the_head_it_commits_unnumbered_and_asks_for_a_relay(self):
        listener = self.listening()
        relay = self.connect(autocommit=False)
        self.run_sql(relay, "SELECT * FROM change_log_head FOR UPDATE")
        self.alone(self.connect(), 1)  # does not wait for the relay's lock
        self.assertEqual(self.heard(listener), [ChangeLogRepository.PENDING])
        relay.rollback()
        self.assertEqual(self.run_sql(self.connect(), ChangeLogRepository.HEAD), [(0, 0)])
        self.assertEqual(self.relay(), 1)
        self.assertEqual([c.row["seq"] for c in self.ticks_after(0)], [1])


class NumberedCommitTests(ChangeLogCase):
    """
    The hub's transactions send NUMBER_PENDING with their COMMIT (the pool's
    commit_with): they number their changes as they commit, with no relay
    after them, and never wait for one that holds the head.
    """

    async def transaction(self, *seqs):
        pool = make_pool(self.dsn)
        self.addCleanup(pool.close)
        pool.commit_with(ChangeLogRepository.NUMBER_PENDING)

        async def write(cursor):
            for seq in seqs:
                await cursor.execute(TICK, ("AAPL", seq, 1))

        await pool.transaction(write)

    async def test_a_transaction_numbers_its_changes_as_it_commits(self):
        listener = self.listening()
        await self.transaction(1, 2)
        self.assertEqual(self.run_sql(self.connect(), ChangeLogRepository.HEAD), [(2, 0)])
        self.assertEqual([(c.position, c.row["seq"]) for c in self.ticks_after(0)], [(1, 1), (2, 2)])
        self.assertEqual(self.heard(listener), ["2"])

    async def test_while_a_relay_holds_the_head_it_commits_and_asks_for_a_relay(self):
        listener = self.listening()
        relay = self.connect(autocommit=False)
        self.run_sql(relay, "SELECT * FROM change_log_head FOR UPDATE")
        await self.transaction(1)
        self.assertEqual(self.heard(listener), [ChangeLogRepository.PENDING])
        relay.rollback()
        self.assertEqual(self.relay(), 1)
        self.assertEqual([c.row["seq"] for c in self.ticks_after(0)], [1])
