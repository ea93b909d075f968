"""
The orders' price increments kept in memory, on real PostgreSQL: read once,
trusted only while the LISTEN connection hears the asset table's changes,
emptied by a change made on another hub, and an order they check is one
statement on its own.
"""

from decimal import Decimal

from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tradehub.controllers import build_controllers
from tradehub.controllers.increments import PriceIncrements
from tradehub.errors import Invalid
from tradehub.schema.model import SQLTable

from . import rows
from .hub import start_hub, table_registry
from .support import blocking_query, fresh_database, make_pool
from .test_leadership import until

OFF_TICK = Decimal("189.125")  # not a multiple of 0.01


class PriceIncrementsTests(TestCase):
    timeout = 60

    async def setUp(self):
        self.dsn = await fresh_database(self)
        self.pool = make_pool(self.dsn)
        await self.pool.start()
        self.addCleanup(self.pool.close)
        self.controllers = build_controllers(self.pool)
        await self.controllers[SQLTable.ASSET].insert([rows.asset()])
        self.increments = PriceIncrements(self.pool)

    def set_increment(self, increment):
        return deferToThread(blocking_query, self.dsn, "UPDATE asset SET price_increment = %s", increment)

    async def test_it_checks_nothing_unless_it_hears_the_changes(self):
        self.assertFalse(await self.increments.check([rows.order(limit_price=OFF_TICK)]))
        self.increments.heard()
        with self.assertRaisesRegex(Invalid, "row 0: limit_price 189.125 is not a multiple of AAPL's price increment"):
            await self.increments.check([rows.order(limit_price=OFF_TICK)])
        self.increments.deaf()
        self.assertFalse(await self.increments.check([rows.order(limit_price=OFF_TICK)]))

    async def test_it_reads_a_symbol_once_and_forgets_it_on_a_change(self):
        self.increments.heard()
        self.assertTrue(await self.increments.check([rows.order(limit_price=Decimal("189.12"))]))
        self.assertIn("AAPL", self.increments)
        # Changed behind its back (nothing tells it here): it answers from memory.
        await self.set_increment(Decimal("0.001"))
        with self.assertRaises(Invalid):
            await self.increments.check([rows.order(limit_price=OFF_TICK)])
        self.increments.changed()
        self.assertNotIn("AAPL", self.increments)
        self.assertTrue(await self.increments.check([rows.order(limit_price=OFF_TICK)]))

    async def test_a_symbol_without_an_asset_is_remembered_and_checks_nothing(self):
        self.increments.heard()
        self.assertTrue(await self.increments.check([rows.order(symbol="ZZZZ", limit_price=OFF_TICK)]))
        self.assertIn("ZZZZ", self.increments)

    async def test_an_answer_read_across_a_change_is_not_kept(self):
        self.increments.heard()
        checking = ensureDeferred(self.increments.check([rows.order(limit_price=OFF_TICK)]))
        self.increments.changed()  # while its read is on the way
        self.assertFalse(await checking)
        self.assertNotIn("AAPL", self.increments)

    async def test_a_checked_order_is_one_statement_and_the_others_a_transaction(self):
        orders = self.controllers[SQLTable.ORDER]
        transactions = []
        real = self.pool.transaction
        self.pool.transaction = lambda work, *args: transactions.append(work) or real(work, *args)
        await orders.insert([rows.order()])
        self.assertEqual(len(transactions), 1)  # nothing in memory: checked in the transaction
        orders.increments.heard()
        await orders.insert([rows.order()])
        await orders.insert([rows.order(), rows.order()])
        self.assertEqual(len(transactions), 1)
        with self.assertRaisesRegex(Invalid, "row 1: limit_price 189.125 is not a multiple"):
            await orders.insert([rows.order(), rows.order(limit_price=OFF_TICK)])
        [(count,)] = await self.pool.query('SELECT count(*) FROM "order"')
        self.assertEqual(count, 4)


class AcrossHubsTests(TestCase):
    """Each hub hears the asset changes another makes, on the change channel."""

    timeout = 60

    async def setUp(self):
        self.here = await start_hub(self, table_registry, push=True)
        self.there = await start_hub(self, table_registry, dsn=self.here.dsn, push=True)
        self.orders = self.here.controllers[SQLTable.ORDER]
        await until(lambda: self.orders.increments.hearing)
        await self.changed_there(self.there.controllers[SQLTable.ASSET].insert, price_increment=Decimal("0.001"))

    async def changed_there(self, write, **asset):
        """Write the asset on the other hub; returns once this hub heard of it."""
        heard = self.orders.increments.changes_heard
        await write([rows.asset(**asset)])
        await until(lambda: self.orders.increments.changes_heard > heard)

    async def test_an_asset_changed_on_another_hub_is_read_again(self):
        await self.orders.insert([rows.order(limit_price=OFF_TICK)])
        self.assertIn("AAPL", self.orders.increments)
        await self.changed_there(self.there.controllers[SQLTable.ASSET].upsert, price_increment=Decimal("0.01"))
        self.assertNotIn("AAPL", self.orders.increments)
        with self.assertRaisesRegex(Invalid, "not a multiple of AAPL's price increment 0.01"):
            await self.orders.insert([rows.order(limit_price=OFF_TICK)])

    async def test_a_change_made_outside_any_hub_is_heard_too(self):
        await self.orders.insert([rows.order(limit_price=OFF_TICK)])
        await deferToThread(blocking_query, self.here.dsn, "UPDATE asset SET price_increment = 0.01")
        await until(lambda: "AAPL" not in self.orders.increments)
        with self.assertRaises(Invalid):
            await self.orders.insert([rows.order(limit_price=OFF_TICK)])

    async def test_it_trusts_nothing_while_its_listen_connection_is_down(self):
        await self.orders.insert([rows.order(limit_price=OFF_TICK)])
        await deferToThread(
            blocking_query,
            self.here.dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'LISTEN tradehub_change'",
        )
        await until(lambda: not self.orders.increments.hearing)
        self.assertNotIn("AAPL", self.orders.increments)
        await until(lambda: self.orders.increments.hearing)
        await self.orders.insert([rows.order(limit_price=OFF_TICK)])
