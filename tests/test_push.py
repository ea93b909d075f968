"""
Push subscriptions end to end: real hubs on loopback, real PostgreSQL, the
Python blocking client on both sides (each in its own thread, as a script
would use it).
"""

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tradehub.client import BlockingClient
from tradehub.client.errors import NotFound, PermissionDenied, PositionExpired
from tradehub.protocol.enums import Role, SQLCommand, SQLTable

from . import rows, wire
from .hub import start_hub, table_registry
from .support import blocking_query


def connect(hub, role):
    token = wire.FRONTEND_TOKEN if role == Role.FRONTEND else wire.ML_TOKEN
    return BlockingClient("127.0.0.1", hub.port, role, token, timeout=20)


def take(subscription, count):
    return [next(subscription) for _ in range(count)]


class PushTests(TestCase):
    timeout = 120

    async def setUp(self):
        self.hub = await start_hub(self, table_registry, push=True)
        self.ml = await deferToThread(connect, self.hub, Role.ML)
        self.frontend = await deferToThread(connect, self.hub, Role.FRONTEND)
        self.addCleanup(deferToThread, self.ml.close)
        self.addCleanup(deferToThread, self.frontend.close)
        self.model = rows.model()
        await deferToThread(self.ml.insert, SQLTable.ML_MODEL, [self.model])

    def predictions(self, count, **changes):
        return [rows.prediction(self.model["id"], horizon=index + 1, **changes) for index in range(count)]

    async def test_predictions_reach_the_frontend_once_in_order_with_the_stored_row(self):
        subscription = await deferToThread(self.frontend.subscribe, SQLTable.ML_PREDICTION)
        written = self.predictions(5)
        for prediction in written:
            await deferToThread(self.ml.insert, SQLTable.ML_PREDICTION, [prediction])
        events = await deferToThread(take, subscription, 5)
        stored = await deferToThread(
            self.frontend.select, SQLTable.ML_PREDICTION, keys=[{"id": p["id"]} for p in written]
        )
        by_id = {row["id"]: row for row in stored.rows}
        self.assertEqual([e.row["id"] for e in events], [p["id"] for p in written])
        self.assertEqual([e.row for e in events], [by_id[p["id"]] for p in written])
        self.assertEqual({e.kind for e in events}, {SQLCommand.INSERT})
        positions = [e.position for e in events]
        self.assertEqual(positions, sorted(set(positions)))
        self.assertGreater(positions[0], subscription.position - 5)

    async def test_filters_are_applied_by_the_hub(self):
        other = rows.model()
        await deferToThread(self.ml.insert, SQLTable.ML_MODEL, [other])
        subscription = await deferToThread(
            self.frontend.subscribe, SQLTable.ML_PREDICTION, symbols=["msft"], model_ids=[self.model["id"]]
        )
        await deferToThread(
            self.ml.insert,
            SQLTable.ML_PREDICTION,
            [
                rows.prediction(self.model["id"], symbol="AAPL"),
                rows.prediction(other["id"], symbol="MSFT"),
                rows.prediction(self.model["id"], symbol="MSFT", horizon=7),
            ],
        )
        [event] = await deferToThread(take, subscription, 1)
        self.assertEqual((event.row["symbol"], event.row["horizon"]), ("MSFT", 7))

    async def test_upsert_reports_what_it_did_and_delete_carries_the_key(self):
        subscription = await deferToThread(self.ml.subscribe, SQLTable.LABELED_DATA)
        label = rows.label()
        await deferToThread(self.ml.upsert, SQLTable.LABELED_DATA, [label])
        await deferToThread(self.ml.upsert, SQLTable.LABELED_DATA, [dict(label, label_value=2.5)])
        await deferToThread(self.ml.delete, SQLTable.LABELED_DATA, [{"id": label["id"]}])
        events = await deferToThread(take, subscription, 3)
        self.assertEqual([e.kind for e in events], [SQLCommand.INSERT, SQLCommand.UPDATE, SQLCommand.DELETE])
        self.assertEqual(events[1].row["label_value"], 2.5)
        self.assertEqual(events[2].row, {"id": label["id"]})

    async def test_resume_replays_after_the_position_then_goes_live_exactly_once(self):
        first = await deferToThread(self.frontend.subscribe, SQLTable.ML_PREDICTION)
        start = first.position
        written = self.predictions(30)
        for index in range(0, 20, 4):
            await deferToThread(self.ml.insert, SQLTable.ML_PREDICTION, written[index : index + 4])
        seen = await deferToThread(take, first, 20)
        await deferToThread(first.cancel)
        for cut in (0, 1, 7, 19):
            resumed = await deferToThread(
                self.frontend.subscribe, SQLTable.ML_PREDICTION, from_position=seen[cut].position
            )
            if cut == 7:
                await deferToThread(self.ml.insert, SQLTable.ML_PREDICTION, written[20:])
            expected = [p["id"] for p in written[cut + 1 : 20 if cut < 7 else 30]]
            events = await deferToThread(take, resumed, len(expected))
            self.assertEqual([e.row["id"] for e in events], expected)
            await deferToThread(resumed.cancel)
        self.assertGreater(seen[0].position, start)

    async def test_a_rolled_back_write_produces_no_event(self):
        subscription = await deferToThread(self.frontend.subscribe, SQLTable.ML_PREDICTION)
        good = rows.prediction(self.model["id"])
        bad = rows.prediction(rows.new_id())  # no such model: the batch is refused whole
        with self.assertRaises(NotFound):
            await deferToThread(self.ml.insert, SQLTable.ML_PREDICTION, [good, bad])
        marker = rows.prediction(self.model["id"])
        await deferToThread(self.ml.insert, SQLTable.ML_PREDICTION, [marker])
        [event] = await deferToThread(take, subscription, 1)
        self.assertEqual(event.row["id"], marker["id"])

    async def test_a_role_follows_only_what_the_matrix_allows(self):
        with self.assertRaises(PermissionDenied):
            await deferToThread(self.frontend.subscribe, SQLTable.MARKET_TICK)
        with self.assertRaises(PermissionDenied):
            await deferToThread(self.ml.subscribe, SQLTable.ML_PREDICTION)

    async def test_requests_and_events_share_the_connection(self):
        """Events that come while a request waits are kept for the iteration; answers stay in order."""
        subscription = await deferToThread(self.frontend.subscribe, SQLTable.ML_PREDICTION)
        written = self.predictions(3)
        await deferToThread(self.ml.insert, SQLTable.ML_PREDICTION, written)
        await deferToThread(blocking_query, self.hub.dsn, "SELECT 1")
        # The frontend asks something before it reads its events.
        answer = await deferToThread(self.frontend.select, SQLTable.ML_MODEL, keys=[{"id": self.model["id"]}])
        self.assertEqual(answer.rows[0]["id"], self.model["id"])
        events = await deferToThread(take, subscription, 3)
        self.assertEqual([e.row["id"] for e in events], [p["id"] for p in written])

    async def test_a_position_past_retention_is_expired(self):
        await deferToThread(self.ml.insert, SQLTable.ML_PREDICTION, self.predictions(3))
        await deferToThread(blocking_query, self.hub.dsn, "UPDATE change_log_head SET trimmed_through = last_position")
        with self.assertRaises(PositionExpired):
            await deferToThread(self.frontend.subscribe, SQLTable.ML_PREDICTION, from_position=0)
        # The connection stays open.
        subscription = await deferToThread(self.frontend.subscribe, SQLTable.ML_PREDICTION)
        self.assertGreater(subscription.position, 0)
