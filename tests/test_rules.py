"""Domain rules that span rows or tables, through the real server over loopback."""

import socket
from decimal import Decimal

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tradehub.client import BlockingClient
from tradehub.client.errors import HubError
from tradehub.controllers.market import MarketTickController
from tradehub.protocol.enums import ErrorCode, MessageType, Role, SQLCommand, SQLTable
from tradehub.protocol.tables import LAYOUTS

from . import rows, wire
from .hub import start_hub, table_registry
from .support import blocking_query


class RuleTests(TestCase):
    timeout = 120

    async def setUp(self):
        self.hub = await start_hub(self, table_registry)

    def frontend(self):
        return BlockingClient("127.0.0.1", self.hub.port, Role.FRONTEND, wire.FRONTEND_TOKEN)

    def ml(self):
        return BlockingClient("127.0.0.1", self.hub.port, Role.ML, wire.ML_TOKEN)

    async def test_fills_move_the_order_in_the_same_transaction(self):
        def work():
            with self.frontend() as client:
                order = rows.order(qty=Decimal("10"))
                client.insert(SQLTable.ORDER, [order])
                client.insert(
                    SQLTable.TRADE, [rows.trade(order["client_order_id"], qty=Decimal("4"), price=Decimal("100"))]
                )
                [after_one] = client.select(SQLTable.ORDER, keys=[{"client_order_id": order["client_order_id"]}]).rows
                client.insert(
                    SQLTable.TRADE,
                    [
                        rows.trade(
                            order["client_order_id"], qty=Decimal("6"), price=Decimal("101"), executed_at=rows.ts(99)
                        )
                    ],
                )
                [after_two] = client.select(SQLTable.ORDER, keys=[{"client_order_id": order["client_order_id"]}]).rows
                with self.assertRaises(HubError) as overfill:
                    client.insert(SQLTable.TRADE, [rows.trade(order["client_order_id"], qty=Decimal("1"))])
                return after_one, after_two, overfill.exception

        after_one, after_two, overfill = await deferToThread(work)
        self.assertEqual(
            (after_one["filled_qty"], after_one["filled_avg_price"], after_one["status"]), (4, 100, "partially_filled")
        )
        self.assertEqual(
            (after_two["filled_qty"], after_two["filled_avg_price"], after_two["status"]),
            (10, Decimal("100.6"), "filled"),
        )
        self.assertEqual(after_two["filled_at"], rows.ts(99))
        self.assertEqual((overfill.code, overfill.row_index), (ErrorCode.VALIDATION_FAILED, 0))
        trades = await deferToThread(blocking_query, self.hub.dsn, "SELECT count(*) FROM trade")
        self.assertEqual(trades, [(2,)], "the refused fill must not be stored")

    async def test_order_status_only_moves_forward_and_live_orders_are_not_deleted(self):
        def work():
            with self.frontend() as client:
                order = rows.order()
                key = {"client_order_id": order["client_order_id"]}
                client.insert(SQLTable.ORDER, [order])
                with self.assertRaises(HubError) as live:
                    client.delete(SQLTable.ORDER, [key])
                client.update(SQLTable.ORDER, [dict(order, status="canceled")])
                with self.assertRaises(HubError) as backwards:
                    client.update(SQLTable.ORDER, [dict(order, status="new")])
                with self.assertRaises(HubError) as backwards_upsert:
                    client.upsert(SQLTable.ORDER, [dict(order, status="accepted")])
                deleted = client.delete(SQLTable.ORDER, [key]).affected
                return live.exception, backwards.exception, backwards_upsert.exception, deleted

        live, backwards, backwards_upsert, deleted = await deferToThread(work)
        self.assertEqual(live.code, ErrorCode.CONFLICT)
        self.assertIn("cancel it", live.message)
        self.assertEqual(backwards.code, ErrorCode.VALIDATION_FAILED)
        self.assertIn("may not move from canceled to new", backwards.message)
        self.assertEqual(backwards_upsert.code, ErrorCode.VALIDATION_FAILED)
        self.assertEqual(deleted, 1)

    async def test_client_order_id_is_an_idempotency_key(self):
        def work():
            with self.frontend() as client:
                order = rows.order()
                client.insert(SQLTable.ORDER, [order])
                with self.assertRaises(HubError) as retried:
                    client.insert(SQLTable.ORDER, [dict(order)])
                return retried.exception

        retried = await deferToThread(work)
        self.assertEqual(retried.code, ErrorCode.CONFLICT)
        count = await deferToThread(blocking_query, self.hub.dsn, 'SELECT count(*) FROM "order"')
        self.assertEqual(count, [(1,)])

    async def test_predictions_need_a_ready_model(self):
        def work():
            with self.ml() as client:
                training = rows.model(status="training")
                client.insert(SQLTable.ML_MODEL, [training])
                with self.assertRaises(HubError) as refused:
                    client.insert(SQLTable.ML_PREDICTION, [rows.prediction(training["id"])])
                client.update(SQLTable.ML_MODEL, [dict(training, status="ready")])
                return refused.exception, client.insert(
                    SQLTable.ML_PREDICTION, [rows.prediction(training["id"])]
                ).affected

        refused, accepted = await deferToThread(work)
        self.assertEqual(refused.code, ErrorCode.VALIDATION_FAILED)
        self.assertIn("not ready", refused.message)
        self.assertEqual(accepted, 1)

    async def test_feature_names_are_kept_once_per_name_and_version(self):
        def work():
            with self.ml() as client:
                first = rows.features()
                client.insert(SQLTable.FEATURE_SET, [first])
                unnamed = rows.features(feature_names=[], ts=rows.ts(1000))
                [second] = client.insert(SQLTable.FEATURE_SET, [unnamed], echo=True).rows
                [written] = client.insert(SQLTable.FEATURE_SET, [dict(unnamed, id=rows.new_id())]).written
                self.assertEqual(written["feature_names"], first["feature_names"], "the hub's names are answered")
                with self.assertRaises(HubError) as unnamed:
                    client.insert(SQLTable.FEATURE_SET, [rows.features(version="2", feature_names=[])])
                return second, unnamed.exception

        second, unnamed = await deferToThread(work)
        self.assertEqual(second["feature_names"], rows.features()["feature_names"])
        self.assertEqual(unnamed.code, ErrorCode.VALIDATION_FAILED)
        stored = await deferToThread(blocking_query, self.hub.dsn, "SELECT count(*) FROM feature_schema")
        self.assertEqual(stored, [(1,)])

    async def test_symbols_are_stored_upper_case_and_found_either_way(self):
        def work():
            with self.frontend() as client:
                client.insert(SQLTable.MARKET_TICK, [rows.tick(1, symbol="msft")])
                return client.select(SQLTable.MARKET_TICK, symbol="Msft").rows

        found = await deferToThread(work)
        self.assertEqual([row["symbol"] for row in found], ["MSFT"])

    async def test_pipelined_tick_inserts_are_coalesced_and_each_answered(self):
        """
        200 one-row INSERTs sent at once, one of them invalid: each gets its
        own answer, in order, and exactly the valid ones are stored.
        """

        groups = []
        original = MarketTickController.insert_batches

        def counting(controller, batches, echo):
            groups.append(len(batches))
            return original(controller, batches, echo)

        self.patch(MarketTickController, "insert_batches", counting)
        hub = await start_hub(self, table_registry)

        def work():
            sock = socket.create_connection(("127.0.0.1", hub.port), timeout=20)
            sock.sendall(wire.hello(Role.FRONTEND))
            frames = []
            for i in range(1, 201):
                tick = rows.tick(i, price=None) if i == 150 else rows.tick(i)
                payload = LAYOUTS[SQLTable.MARKET_TICK].rows_request.encode({"echo": False, "rows": [tick]})
                frames.append(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, payload, request_id=i))
            sock.sendall(b"".join(frames))
            reader = wire.Reader()
            answers = []
            while len(answers) < 201:
                answers += reader.feed(sock.recv(65536))
            sock.close()
            return answers[1:]

        answers = await deferToThread(work)
        self.assertEqual([header.request_id for header, _ in answers], list(range(1, 201)))
        kinds = {header.request_id: header.type for header, _ in answers}
        self.assertEqual(kinds[150], MessageType.ERROR)
        self.assertEqual([i for i, kind in kinds.items() if kind == MessageType.ERROR], [150])
        stored = await deferToThread(blocking_query, hub.dsn, "SELECT count(*) FROM market_tick")
        self.assertEqual(stored, [(199,)])
        self.assertTrue(groups and max(groups) > 10, f"inserts were not coalesced: {groups}")

    async def test_awkward_list_values_survive_the_round_trip(self):
        conditions = ['a"b', "c\\d", "{e,f}", "", "NULL", " sp ", "é"]
        vector = [float("nan"), float("inf"), float("-inf"), -0.0, 5e-324, 1.7976931348623157e308]

        def work():
            with self.frontend() as client:
                client.insert(SQLTable.MARKET_TICK, [rows.tick(1, conditions=conditions), rows.tick(2, conditions=[])])
                ticks = client.select(SQLTable.MARKET_TICK, limit=0).rows
            with self.ml() as client:
                client.insert(SQLTable.FEATURE_SET, [rows.features(features=vector, feature_names=list("abcdef"))])
                [stored] = client.select(SQLTable.FEATURE_SET).rows
            return ticks, stored

        ticks, stored = await deferToThread(work)
        self.assertEqual([t["conditions"] for t in ticks], [conditions, []])
        self.assertEqual([repr(v) for v in stored["features"]], [repr(v) for v in vector])

    async def test_a_nul_character_in_any_text_is_refused_by_name_and_nothing_is_written(self):
        def work():
            answers = []
            with self.frontend() as client:
                for changes in ({"status_message": "bad\x00"}, {"symbol": "AA\x00PL"}, {"client_order_id": "x\x00"}):
                    try:
                        client.insert(SQLTable.ORDER, [rows.order(), rows.order(**changes)])
                    except HubError as error:
                        answers.append((error.code, error.row_index, error.message))
                try:
                    client.insert(SQLTable.MARKET_TICK, [rows.tick(1, conditions=["@", "\x00"])])
                except HubError as error:
                    answers.append((error.code, error.row_index, error.message))
            with self.ml() as client:
                try:
                    client.insert(SQLTable.ML_MODEL, [rows.model(metrics='{"a": "\x00"}')])
                except HubError as error:
                    answers.append((error.code, error.row_index, error.message))
            return answers

        answers = await deferToThread(work)
        names = ["status_message", "symbol", "client_order_id", "conditions", "metrics"]
        self.assertEqual([code for code, _, _ in answers], [ErrorCode.VALIDATION_FAILED] * 5)
        self.assertEqual([index for _, index, _ in answers], [1, 1, 1, 0, 0])
        for (_, _, message), name in zip(answers, names, strict=True):
            self.assertIn(f"{name} must not contain NUL", message)

        def select_a_nul_symbol():
            with self.frontend() as client:
                client.select(SQLTable.ORDER, symbol="A\x00")

        with self.assertRaises(HubError) as raised:
            await deferToThread(select_a_nul_symbol)
        self.assertEqual(raised.exception.code, ErrorCode.VALIDATION_FAILED)
        for table in ("order", "market_tick", "ml_model"):
            self.assertEqual(blocking_query(self.hub.dsn, f'SELECT count(*) FROM "{table}"'), [(0,)])

    async def test_float_values_keep_their_exact_bits_alone_and_in_a_batch(self):
        """-0.0 would come back as 0.0 if a float travelled as a bare SQL literal; extremes keep every bit."""
        values = [-0.0, 5e-324, 1.7976931348623157e308, -2.5e-308, 0.1]

        def work():
            with self.ml() as client:
                model = rows.model(status="ready")
                client.insert(SQLTable.ML_MODEL, [model])
                alone = rows.prediction(model["id"], value=values[0], horizon=1)
                batch = [rows.prediction(model["id"], value=v, horizon=i + 2) for i, v in enumerate(values)]
                client.insert(SQLTable.ML_PREDICTION, [alone])
                client.insert(SQLTable.ML_PREDICTION, batch)
                return client.select(SQLTable.ML_PREDICTION).rows

        stored = {row["horizon"]: row["value"] for row in await deferToThread(work)}
        self.assertEqual(repr(stored[1]), "-0.0")
        self.assertEqual([repr(stored[i + 2]) for i in range(len(values))], [repr(v) for v in values])

    async def test_megabyte_model_artifact_travels_in_many_frames_both_ways(self):
        artifact = bytes(range(256)) * (14 * 1024)

        def work():
            with self.ml() as client:
                model = rows.model(artifact=artifact)
                client.insert(SQLTable.ML_MODEL, [model])
                [stored] = client.select(SQLTable.ML_MODEL, keys=[{"id": model["id"]}]).rows
                return client.session.max_frame, stored

        max_frame, stored = await deferToThread(work)
        self.assertGreater(len(artifact), 3 * max_frame)
        self.assertEqual(stored["artifact"], artifact)
