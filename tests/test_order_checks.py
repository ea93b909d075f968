"""
An order's price-increment check is in its INSERT, one statement on its
own: on real PostgreSQL, it is always checked against the assets as they
are when it commits, whichever hub, connection or writer changed them last.
"""

from decimal import Decimal

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tradehub.errors import Invalid
from tradehub.schema.model import SQLTable

from . import rows
from .hub import start_hub, table_registry
from .support import blocking_query

OFF_CENT = Decimal("189.125")  # a multiple of 0.001, not of 0.01
OTHER_ASSET = "1f1b1b1b-0000-4000-8000-0000000000aa"


class OrderCheckTests(TestCase):
    timeout = 60

    async def setUp(self):
        self.here = await start_hub(self, table_registry)
        self.there = await start_hub(self, table_registry, dsn=self.here.dsn)
        self.orders = self.here.controllers[SQLTable.ORDER]
        await self.there.controllers[SQLTable.ASSET].insert([rows.asset(price_increment=Decimal("0.001"))])

    async def test_an_order_is_one_statement_and_a_refused_one_is_named(self):
        transactions = []
        real = self.here.pool.transaction
        self.here.pool.transaction = lambda work, *args: transactions.append(work) or real(work, *args)
        await self.orders.insert([rows.order(limit_price=OFF_CENT)], echo=False)
        await self.orders.insert([rows.order(), rows.order(stop_price=OFF_CENT, type="stop_limit")])
        self.assertEqual(transactions, [], "checked in the INSERT itself")
        await self.there.controllers[SQLTable.ASSET].upsert([rows.asset(price_increment=Decimal("0.01"))])
        with self.assertRaisesRegex(
            Invalid, "row 1: stop_price 189.125 is not a multiple of AAPL's price increment 0.01"
        ):
            await self.orders.insert([rows.order(), rows.order(stop_price=OFF_CENT, type="stop_limit")])
        self.assertEqual(len(transactions), 1, "the refused statement is followed by the transaction that names why")
        [(count,)] = await self.here.pool.query('SELECT count(*) FROM "order"')
        self.assertEqual(count, 3)

    async def test_the_next_order_sees_an_increment_another_hub_just_changed(self):
        assets = self.there.controllers[SQLTable.ASSET]
        for attempt in range(10):
            await assets.upsert([rows.asset(price_increment=Decimal("0.01"))])
            with self.assertRaises(Invalid, msg=f"attempt {attempt}: a coarser increment refuses at once"):
                await self.orders.insert([rows.order(limit_price=OFF_CENT)], echo=False)
            await assets.upsert([rows.asset(price_increment=Decimal("0.001"))])
            await self.orders.insert([rows.order(limit_price=OFF_CENT)], echo=False)

    async def test_a_change_made_outside_any_hub_counts_at_once(self):
        await deferToThread(blocking_query, self.here.dsn, "UPDATE asset SET price_increment = 0.01")
        with self.assertRaises(Invalid):
            await self.orders.insert([rows.order(limit_price=OFF_CENT)])
        await deferToThread(blocking_query, self.here.dsn, "UPDATE asset SET price_increment = NULL")
        await self.orders.insert([rows.order(limit_price=OFF_CENT)])

    async def test_the_asset_named_by_id_decides_then_the_one_of_its_class(self):
        assets = self.there.controllers[SQLTable.ASSET]
        await assets.insert([rows.asset(id=OTHER_ASSET, price_increment=Decimal("1"), **{"class": "crypto"})])
        # By class: us_equity's 0.001 lets it through; by id, the crypto asset's 1 refuses it.
        await self.orders.insert([rows.order(limit_price=OFF_CENT)])
        named = rows.order(limit_price=OFF_CENT, asset_id=OTHER_ASSET)
        with self.assertRaisesRegex(Invalid, "row 0: limit_price .* price increment 1$"):
            await self.orders.insert([named])
        with self.assertRaisesRegex(Invalid, "row 1: limit_price .* price increment 1$"):
            await self.orders.insert_batches([[rows.order()], [named]])
        await self.orders.insert([rows.order(limit_price=Decimal("189"), asset_id=OTHER_ASSET)])
