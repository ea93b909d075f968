"""
Every table through the real server over loopback on real PostgreSQL:
encode → hub → PostgreSQL → hub → decode, for all five commands; every rule
refused with the right error and nothing written; batches all or none with
the failing row named; pagination past one frame; and the database's own
constraints refusing bad rows that bypass the hub.
"""

from decimal import Decimal

import attrs
import psycopg2
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tradehub.client import BlockingClient
from tradehub.client.errors import HubError
from tradehub.protocol.enums import ErrorCode, Role, SQLTable
from tradehub.protocol.tables import LAYOUTS
from tradehub.schema import TABLES
from tradehub.server.routes import TableRoutes

from . import rows, wire
from .hub import start_hub, table_registry
from .support import blocking_query

V, NF, C = ErrorCode.VALIDATION_FAILED, ErrorCode.NOT_FOUND, ErrorCode.CONFLICT


@attrs.frozen
class Case:
    """How to exercise one table: rows, one change for UPDATE, what must be refused."""

    role: object
    make: object
    change: dict
    invalid: list
    bad_sql: str
    setup: object = None


def _order_setup(client):
    order = rows.order(qty=Decimal("1000000"))
    client.insert(SQLTable.ORDER, [order])
    return {"client_order_id": order["client_order_id"]}


def _model_setup(client):
    model = rows.model()
    client.insert(SQLTable.ML_MODEL, [model])
    return {"model_id": model["id"]}


def _asset_setup(client):
    client.insert(SQLTable.ASSET, [rows.asset()])
    return {}


def _account_setup(client):
    client.insert(SQLTable.ACCOUNT, [rows.account()])
    return {}


CASES = {
    SQLTable.ACCOUNT: Case(
        Role.FRONTEND,
        lambda i, **k: rows.account(id=rows.new_id(), **k),
        {"cash": Decimal("-5.5"), "status": "ACCOUNT_UPDATED"},
        [
            ({"currency": "usd"}, V, "currency"),
            ({"multiplier": Decimal("1"), "cash": Decimal("-0.000000001")}, V, "cash"),
            ({"multiplier": Decimal("0.5")}, V, "multiplier"),
            ({"status": "OPEN"}, V, "status"),
            ({"daytrade_count": -1}, V, "daytrade_count"),
            ({"id": "not-a-uuid"}, V, "id"),
        ],
        "INSERT INTO account SELECT (r).* FROM (SELECT a AS r FROM account a LIMIT 0) s;"
        " UPDATE account SET multiplier = 1, cash = -1",
    ),
    SQLTable.ASSET: Case(
        Role.FRONTEND,
        lambda i, **k: rows.asset(id=rows.new_id(), symbol=f"SYM{i}", **k),
        {"status": "inactive", "price_increment": Decimal("0.0001")},
        [
            ({"class": "bond"}, V, "class"),
            ({"price_increment": Decimal("0")}, V, "price_increment"),
            ({"symbol": ""}, V, "symbol"),
        ],
        "UPDATE asset SET symbol = lower(symbol)",
    ),
    SQLTable.ORDER: Case(
        Role.FRONTEND,
        lambda i, **k: rows.order(**k),
        {"status": "partially_filled", "filled_qty": Decimal("2.5"), "filled_avg_price": Decimal("189.1")},
        [
            ({"notional": Decimal("100")}, V, "qty"),
            ({"qty": None}, V, "qty"),
            ({"qty": None, "notional": Decimal("100")}, V, "notional"),
            ({"type": "limit", "limit_price": None}, V, "limit_price"),
            ({"type": "stop", "stop_price": None, "limit_price": None}, V, "stop_price"),
            ({"type": "trailing_stop", "limit_price": None}, V, "trail_price"),
            ({"limit_price": Decimal("-1")}, V, "limit_price"),
            ({"limit_price": Decimal("189.123")}, V, "price increment"),
            ({"filled_qty": Decimal("11")}, V, "filled_qty"),
            ({"status": "sent"}, V, "status"),
            ({"side": "hold"}, V, "side"),
            ({"parent_client_order_id": "no-such-parent"}, NF, "parent"),
        ],
        'UPDATE "order" SET notional = 5',
        _asset_setup,
    ),
    SQLTable.POSITION: Case(
        Role.FRONTEND,
        lambda i, **k: rows.position(symbol=f"SYM{i}", **k),
        {"qty": Decimal("-3"), "side": "short", "qty_available": Decimal("-3")},
        [
            ({"side": "short"}, V, "side"),
            ({"avg_entry_price": Decimal("0")}, V, "avg_entry_price"),
            ({"account_id": rows.new_id()}, NF, "account"),
        ],
        "UPDATE position SET side = 'short'",
        _account_setup,
    ),
    SQLTable.TRADE: Case(
        Role.FRONTEND,
        lambda i, **k: rows.trade(**k),
        None,
        [
            ({"qty": Decimal("0")}, V, "qty"),
            ({"price": Decimal("-1")}, V, "price"),
            ({"fee": Decimal("-0.01")}, V, "fee"),
            ({"side": "sell"}, V, "side"),
            ({"client_order_id": "missing"}, NF, "client_order_id"),
            ({"qty": Decimal("2000000")}, V, "filled"),
        ],
        "UPDATE trade SET qty = 0",
        _order_setup,
    ),
    SQLTable.MARKET_TICK: Case(
        Role.FRONTEND,
        lambda i, **k: rows.tick(i + 1, **k),
        {"price": Decimal("190.000000001"), "conditions": []},
        [
            ({"price": None}, V, "price"),
            ({"bid_price": Decimal("1")}, V, "bid_price"),
            ({"size": Decimal("0")}, V, "size"),
            ({"kind": "news"}, V, "kind"),
        ],
        "UPDATE market_tick SET kind = 'quote'",
    ),
    SQLTable.ML_MODEL: Case(
        Role.ML,
        lambda i, **k: rows.model(**k),
        {"status": "retired", "metrics": '{"auc": 0.64}', "artifact": None, "artifact_uri": "s3://models/m1"},
        [
            ({"hyperparameters": "{not json"}, V, "hyperparameters"),
            ({"metrics": "[1, 2]"}, V, "metrics"),
            ({"status": "deployed"}, V, "status"),
            ({"name": " "}, V, "name"),
        ],
        "UPDATE ml_model SET status = 'deployed'",
    ),
    SQLTable.ML_PREDICTION: Case(
        Role.ML,
        lambda i, **k: rows.prediction(ts=rows.ts(i), **k),
        {"value": -0.5, "confidence": 0.0, "predicted_side": None},
        [
            ({"confidence": 1.5}, V, "confidence"),
            ({"value": float("nan")}, V, "value"),
            ({"horizon": 0}, V, "horizon"),
            ({"model_id": rows.new_id()}, NF, "ml_model"),
        ],
        "UPDATE ml_prediction SET confidence = 2",
        _model_setup,
    ),
    SQLTable.LABELED_DATA: Case(
        Role.ML,
        lambda i, **k: rows.label(ts=rows.ts(i), **k),
        {"label_class": None, "label_value": -1.25},
        [
            ({"label_class": None, "label_value": None}, V, "label_class"),
            ({"horizon": -5}, V, "horizon"),
            ({"feature_set_id": rows.new_id()}, NF, "feature_set"),
        ],
        "UPDATE labeled_data SET label_class = NULL, label_value = NULL",
    ),
    SQLTable.FEATURE_SET: Case(
        Role.ML,
        lambda i, **k: rows.features(ts=rows.ts(i), **k),
        {"features": [0.0, 0.5, -1.0], "feature_names": []},
        [
            ({"features": []}, V, "features"),
            ({"features": [1.0]}, V, "features"),
            ({"feature_names": ["a", "b", "c"]}, V, "feature_names"),
        ],
        "UPDATE feature_set SET name = 'undeclared'",
    ),
    SQLTable.TECHNICAL_INDICATOR: Case(
        Role.ML,
        lambda i, **k: rows.indicator(ts=rows.ts(i), **k),
        {"values": [1.0]},
        [
            ({"name": "MACD"}, V, "name"),
            ({"values": []}, V, "values"),
            ({"parameters": "12"}, V, "parameters"),
        ],
        "UPDATE technical_indicator SET \"values\" = '{}'",
    ),
}


class TableTestsMixin:
    table = None

    async def asyncSetUp(self):
        self.case = CASES[self.table]
        self.spec = TABLES[self.table]
        self.hub = await start_hub(self, table_registry, max_frame=16384)

    def client(self, role=None):
        role = role or self.case.role
        token = wire.FRONTEND_TOKEN if role == Role.FRONTEND else wire.ML_TOKEN
        return BlockingClient("127.0.0.1", self.hub.port, role, token)

    def prepared(self, client):
        return self.case.setup(client) if self.case.setup else {}

    def count(self):
        return blocking_query(self.hub.dsn, f'SELECT count(*) FROM "{self.spec.sql_name}"')[0][0]

    def sort_key(self, row):
        return tuple(row[name] for name in self.spec.sort)

    def key(self, row):
        return {name: row[name] for name in self.spec.key}

    def written(self, row):
        """What a write answers of a row: its key and the columns the hub sets."""
        return {name: self.stored(row)[name] for name in self.spec.written}

    def in_thread(self, work):
        return deferToThread(work)

    # The tests

    async def test_every_command_round_trips_exactly(self):
        await self.asyncSetUp()

        def work():
            with self.client() as client:
                extra = self.prepared(client)
                first, second = self.case.make(0, **extra), self.case.make(1, **extra)
                written = client.insert(self.table, [first, second])
                self.assertEqual((written.affected, written.rows), (2, []), "no rows unless asked")
                self.assertEqual(written.written, [self.written(first), self.written(second)])
                found = client.select(self.table, keys=[self.key(second), self.key(first)])
                self.assertEqual(found.rows, sorted([first, second], key=self.sort_key), "SELECT answers in key order")
                if self.case.change is None:
                    self.assert_writes_other_than_insert_refused(client, first)
                    return
                changed = dict(first, **self.case.change)
                updated = client.update(self.table, [changed])
                self.assertEqual(updated.affected, 1)
                self.assertEqual(client.select(self.table, keys=[self.key(first)]).rows, [self.stored(changed)])
                third = self.case.make(2, **extra)
                upserted = client.upsert(self.table, [dict(second, **self.case.change), third])
                self.assertEqual(upserted.affected, 2)
                self.assertEqual(len(list(client.select_all(self.table))), 3)
                with self.assertRaises(HubError) as missing:
                    client.update(self.table, [self.case.make(3, **extra)])
                self.assertEqual(missing.exception.code, NF)
                deletable = dict(third, **self.final_status())
                client.update(self.table, [deletable])
                self.assertEqual(client.delete(self.table, [self.key(third)]).affected, 1)
                self.assertEqual(client.select(self.table, keys=[self.key(third)]).rows, [])
                with self.assertRaises(HubError) as gone:
                    client.delete(self.table, [self.key(third)])
                self.assertEqual(gone.exception.code, NF)

        await self.in_thread(work)
        self.assertEqual(await deferToThread(self.count), 2)

    async def test_a_write_answers_each_key_and_what_the_hub_set_and_the_rows_only_if_asked(self):
        await self.asyncSetUp()
        hub_set = [name for name in self.spec.written if name not in self.spec.key]

        def work():
            with self.client() as client:
                extra = self.prepared(client)
                first, second = self.case.make(0, **extra), self.case.make(1, **extra)
                for name in hub_set:
                    if self.spec.by_name[name].hub_default:
                        second[name] = None  # the hub's clock
                echoed = client.insert(self.table, [first, second], echo=True)
                [stored_first, stored_second] = echoed.rows
                self.assertEqual(stored_first, self.stored(first))
                self.assertEqual(echoed.written, [self.written(stored_first), self.written(stored_second)])
                for name in hub_set:
                    self.assertIsNotNone(echoed.written[1][name], f"{name}: the hub's value is answered")
                if self.case.change is not None:
                    changed = dict(stored_first, **self.case.change)
                    self.assertEqual(client.update(self.table, [changed]).written, [self.written(changed)])
                    self.assertEqual(client.upsert(self.table, [changed], echo=True).rows, [self.stored(changed)])

        await self.in_thread(work)

    def stored(self, row):
        if self.table == SQLTable.FEATURE_SET and not row["feature_names"]:
            return dict(row, feature_names=rows.features()["feature_names"])
        return row

    def final_status(self):
        return {"status": "canceled"} if self.table == SQLTable.ORDER else {}

    def assert_writes_other_than_insert_refused(self, client, row):
        for write in (client.update, client.upsert):
            with self.assertRaises(HubError) as refused:
                write(self.table, [row])
            self.assertEqual(refused.exception.code, V)

    async def test_every_rule_is_refused_with_its_row_and_nothing_written(self):
        await self.asyncSetUp()
        before = None

        def work():
            nonlocal before
            with self.client() as client:
                extra = self.prepared(client)
                before = self.count()
                for index, (changes, code, named) in enumerate(self.case.invalid):
                    good, bad = self.case.make(10 + 2 * index, **extra), self.case.make(11 + 2 * index, **extra)
                    bad.update(changes)
                    with self.assertRaises(HubError) as refused:
                        client.insert(self.table, [good, bad])
                    error = refused.exception
                    self.assertEqual((error.code, error.row_index), (code, 1), f"{changes}: {error}")
                    self.assertIn(named, error.message, f"{changes}: {error}")
                    self.assertEqual(self.count(), before, f"{changes} left rows behind")

        await self.in_thread(work)

    async def test_batch_refused_by_the_database_is_rolled_back_and_names_the_row(self):
        await self.asyncSetUp()

        def work():
            with self.client() as client:
                extra = self.prepared(client)
                existing = self.case.make(0, **extra)
                client.insert(self.table, [existing])
                before = self.count()
                batch = [self.case.make(i, **extra) for i in range(1, 4)] + [dict(existing)]
                with self.assertRaises(HubError) as refused:
                    client.insert(self.table, batch)
                self.assertEqual((refused.exception.code, refused.exception.row_index), (C, 3))
                self.assertEqual(self.count(), before)

        await self.in_thread(work)

    async def test_pagination_walks_more_rows_than_fit_in_one_frame(self):
        await self.asyncSetUp()
        total = 1200

        def work():
            with self.client() as client:
                extra = self.prepared(client)
                for start in range(0, total, 30):
                    client.insert(self.table, [self.case.make(i, **extra) for i in range(start, start + 30)])
                page = client.select(self.table, limit=1000)
                self.assertEqual(len(page.rows), 1000)
                self.assertIsNotNone(page.next_cursor)
                walked = list(client.select_all(self.table, page_size=500))
                self.assertEqual(len(walked), total)
                order = [tuple(row[name] for name in self.spec.sort) for row in walked]
                self.assertEqual(order, sorted(order))
                self.assertEqual(len(set(order)), total)
                if self.spec.series:
                    window = client.select(self.table, symbol="aapl", since=rows.ts(100), until=rows.ts(200), limit=0)
                    times = [row[self.spec.series] for row in window.rows]
                    self.assertTrue(all(rows.ts(100) <= t < rows.ts(200) for t in times))

        await self.in_thread(work)

    async def test_database_constraints_refuse_rows_that_bypass_the_hub(self):
        await self.asyncSetUp()

        def work():
            with self.client() as client:
                extra = self.prepared(client)
                client.insert(self.table, [self.case.make(0, **extra)])
            with self.assertRaises(psycopg2.IntegrityError):
                blocking_query(self.hub.dsn, self.case.bad_sql.split("; ")[-1])

        await self.in_thread(work)


def _test_case(table):
    return type(
        f"{table.name.title().replace('_', '')}Tests", (TableTestsMixin, TestCase), {"table": table, "timeout": 120}
    )


for _table in CASES:
    _class = _test_case(_table)
    globals()[_class.__name__] = _class
del _table, _class


class EchoInAGroupTests(TestCase):
    """Coalesced INSERTs that ask differently: each answer as its own request asked."""

    async def test_each_request_of_a_group_is_answered_as_it_asked(self):
        hub = await start_hub(self, table_registry)
        model = rows.model(status="ready")
        await hub.controllers[SQLTable.ML_MODEL].insert([model])
        layouts = LAYOUTS[SQLTable.ML_PREDICTION]
        routes = TableRoutes(hub.controllers[SQLTable.ML_PREDICTION], layouts)
        first, second = rows.prediction(model["id"]), rows.prediction(model["id"], created_at=None, horizon=60)
        answers = await routes.insert_group([{"echo": True, "rows": [first]}, {"echo": False, "rows": [second]}])
        echoed, plain = (layouts.response.decode(answer) for answer in answers)
        self.assertEqual(echoed["rows"], [first])
        stored = await hub.controllers[SQLTable.ML_PREDICTION].stored([second])
        [(key, row)] = stored.items()
        self.assertEqual(plain["rows"], [])
        self.assertEqual(plain["written"], [{"id": row["id"], "created_at": row["created_at"]}], "the hub's clock")
        self.assertEqual(echoed["written"], [{"id": first["id"], "created_at": first["created_at"]}])
