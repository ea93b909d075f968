"""
The stored decimal range is the wire's: every numeric column is a
wire_decimal, whose check (schema/0016) refuses what an i64 count of 10^-9
units cannot carry, whoever writes it; Alpaca's values are refused at the
door; a database already holding such a value fails the migration.
"""

import shutil
from decimal import Decimal
from pathlib import Path

import psycopg2.errors
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tradehub.alpaca.convert import decimal, trade_update
from tradehub.db.migrations import migrate
from tradehub.protocol.wire import decimal_to_units
from tradehub.schema.kinds import DECIMAL, DECIMAL_MAX, DECIMAL_MIN
from tradehub.schema.tables import TABLES

from .support import SCHEMA, blocking_query, fresh_database, make_pool

UNIT = Decimal("0.000000001")
TICK = (
    "INSERT INTO market_tick (symbol, ts, ts_ns, seq, kind, price, size, conditions)"
    " VALUES ('AAPL', now(), 0, %s, 'trade', %s, 1, '{}')"
)


class RangeTests(SynchronousTestCase):
    def test_the_range_is_exactly_what_the_wire_carries(self):
        self.assertEqual(decimal_to_units(DECIMAL_MAX), 2**63 - 1)
        self.assertEqual(decimal_to_units(DECIMAL_MIN), -(2**63))
        for outside in (DECIMAL_MAX + UNIT, DECIMAL_MIN - UNIT):
            with self.assertRaises(ValueError):
                decimal_to_units(outside)

    def test_the_migration_checks_the_same_bounds(self):
        text = (SCHEMA / "0016_decimal_range.sql").read_text()
        self.assertIn(f"BETWEEN {DECIMAL_MIN} AND {DECIMAL_MAX}", text)

    def test_an_alpaca_value_outside_the_range_is_refused_at_the_door(self):
        self.assertEqual(decimal("9223372036.854775807"), DECIMAL_MAX)
        with self.assertRaises(ValueError) as caught:
            decimal("9999999999.5")
        self.assertIn("outside the decimal range", str(caught.exception))
        with self.assertRaises(ValueError):
            decimal(-9300000000)


class StoredRangeTests(TestCase):
    async def test_every_decimal_column_is_a_wire_decimal(self):
        dsn = await fresh_database(self)
        typed = await deferToThread(
            blocking_query,
            dsn,
            "SELECT table_name, column_name, coalesce(domain_name, data_type) FROM information_schema.columns"
            " WHERE table_schema = 'public' AND (data_type = 'numeric' OR domain_name IS NOT NULL)",
        )
        stored = {(table, column): kind for table, column, kind in typed}
        declared = [
            (table.sql_name, column.name)
            for table in TABLES.values()
            for column in table.columns
            if column.kind is DECIMAL and not column.computed
        ]
        self.assertTrue(declared)
        for key in declared:
            self.assertEqual(stored.get(key), "wire_decimal", key)
        self.assertEqual([key for key, kind in stored.items() if kind == "numeric"], [], "a numeric column unchecked")

    async def test_the_database_refuses_a_value_the_wire_cannot_carry_whoever_writes_it(self):
        dsn = await fresh_database(self)
        for inside in (DECIMAL_MAX, DECIMAL_MIN):
            self.assertEqual(
                await deferToThread(blocking_query, dsn, "SELECT CAST(%s AS wire_decimal)", inside), [(inside,)]
            )
        for outside in (DECIMAL_MAX + UNIT, DECIMAL_MIN - UNIT, Decimal("9999999999.999999999")):
            with self.assertRaises(psycopg2.errors.CheckViolation):
                await deferToThread(blocking_query, dsn, "SELECT CAST(%s AS wire_decimal)", outside)
        await deferToThread(blocking_query, dsn, TICK, 1, DECIMAL_MAX)
        with self.assertRaises(psycopg2.errors.CheckViolation):
            await deferToThread(blocking_query, dsn, TICK, 2, DECIMAL_MAX + UNIT)
        rows = await deferToThread(blocking_query, dsn, "SELECT price FROM market_tick ORDER BY seq")
        self.assertEqual(rows, [(DECIMAL_MAX,)])

    async def test_a_database_already_holding_such_a_value_fails_the_migration_naming_the_column(self):
        dsn = await fresh_database(self, migrated=False)
        pool = make_pool(dsn)
        await pool.start()
        self.addCleanup(pool.close)
        folder = Path(self.mktemp())
        folder.mkdir()
        for path in sorted(SCHEMA.glob("*.sql")):
            if path.name < "0016":
                shutil.copy(path, folder)
        await migrate(pool, folder)
        await deferToThread(blocking_query, dsn, TICK, 1, Decimal("9999999999"))
        shutil.copy(SCHEMA / "0016_decimal_range.sql", folder)
        with self.assertRaises(psycopg2.errors.CheckViolation) as caught:
            await migrate(pool, folder)
        self.assertIn("price", str(caught.exception))
        self.assertEqual(await pool.query("SELECT max(version) FROM schema_migrations"), [(15,)])


class AlpacaFillBeyondTheRangeTests(SynchronousTestCase):
    def test_a_fill_whose_position_is_beyond_the_range_keeps_its_execution(self):
        """A coin held in billions: the fill counts, only the position it reports is left to the REST sync."""
        order = {
            "client_order_id": "c1",
            "id": "0f9bd4e2-5a5c-4a80-9b0a-5e8c3f0c1d2a",
            "symbol": "SHIB/USD",
            "asset_class": "crypto",
            "side": "buy",
            "type": "market",
            "time_in_force": "gtc",
            "status": "partially_filled",
            "qty": "1000000000",
            "filled_qty": "500000000",
            "created_at": "2026-11-25T14:30:00Z",
            "updated_at": "2026-11-25T14:30:01Z",
        }
        event = {
            "event": "partial_fill",
            "execution_id": "e1",
            "qty": "500000000",
            "price": "0.00001",
            "timestamp": "2026-11-25T14:30:01Z",
            "position_qty": "9500000000",
            "order": order,
        }
        _, execution, position = trade_update(event, "1d5493c9-ea39-4377-aa94-340734c368ae")
        self.assertEqual((execution.id, execution.qty), ("e1", Decimal("500000000")))
        self.assertIsNone(position)
