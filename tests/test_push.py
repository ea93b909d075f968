"""
Push subscriptions end to end: real hubs on loopback, real PostgreSQL, the
Python blocking client on both sides (each in its own thread, as a script
would use it).
"""

import os
import socket

import psycopg2
from twisted.internet import reactor
from twisted.internet.task import LoopingCall, deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tradehub.client import BlockingClient
from tradehub.client.errors import NotFound, PermissionDenied, PositionExpired
from tradehub.protocol.enums import Role, SQLCommand, SQLTable

from . import rows, wire
from .hub import start_hub, table_registry
from .support import blocking_query


def connect(hub, role, name="push-test"):
    token = wire.FRONTEND_TOKEN if role == Role.FRONTEND else wire.ML_TOKEN
    return BlockingClient("127.0.0.1", hub.port, role, token, client_name=name, timeout=60)


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


class NumberedAtCommitTests(TestCase):
    """A hub's own transactions number their changes as they commit: no relay or sweep needed after them."""

    timeout = 60

    async def test_a_transactions_change_reaches_a_subscriber_with_the_sweep_off(self):
        hub = await start_hub(self, table_registry, push=True, sweep=3600)
        ml = await deferToThread(connect, hub, Role.ML)
        self.addCleanup(deferToThread, ml.close)
        ticks = await deferToThread(ml.subscribe, SQLTable.MARKET_TICK)

        async def write(cursor):
            for seq in (1, 2):
                await cursor.execute(
                    "INSERT INTO market_tick (symbol, ts, ts_ns, seq, kind, price, size, conditions)"
                    " VALUES ('AAPL', now(), 0, %s, 'trade', 1, 1, '{}')",
                    (seq,),
                )

        await hub.pool.transaction(write)
        events = await deferToThread(take, ticks, 2)
        self.assertEqual([e.row["seq"] for e in events], [1, 2])


class StoppingTests(TestCase):
    timeout = 60

    async def test_a_relay_or_read_started_as_the_pool_closes_logs_no_failure(self):
        """A NOTIFY heard while the hub stops starts a relay on a closed pool: that is no error (trial fails on one)."""
        hub = await start_hub(self, table_registry, push=True, sweep=3600)
        hub.pool.close()
        hub.feed.relay()
        hub.feed.learned(hub.feed.known + 5)
        await deferLater(reactor, 0.05)
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_a_read_for_a_live_subscriber_started_as_the_pool_closes_logs_no_failure(self):
        """The read gathers its windows: the closed pool's failure comes wrapped in a FirstError."""
        hub = await start_hub(self, table_registry, push=True, sweep=3600)
        frontend = await deferToThread(connect, hub, Role.FRONTEND)
        self.addCleanup(deferToThread, frontend.close)
        await deferToThread(frontend.subscribe, SQLTable.ML_PREDICTION)
        await deferLater(reactor, 0.2)
        hub.pool.close()
        hub.feed.learned(hub.feed.known + 5)
        await deferLater(reactor, 0.05)
        self.assertEqual(self.flushLoggedErrors(), [])


async def stop_hub(live):
    """Stop one hub as its daemon would: stop accepting, drain, stop the feed, close the pool."""
    await live.listener.stopListening()
    await live.factory.drain(2)
    live.changes.stopService()
    live.pool.close()


# Write outside any hub (psql, a script): a copy of a stored prediction with another horizon.
COPY = (
    "INSERT INTO ml_prediction (id, model_id, symbol, ts, ts_ns, horizon, value, confidence, predicted_side,"
    " created_at, created_at_ns) SELECT gen_random_uuid(), model_id, symbol, ts, ts_ns, %s, value, confidence,"
    " predicted_side, created_at, created_at_ns FROM ml_prediction WHERE id = %s RETURNING id::text"
)


def copy_prediction(dsn, prediction_id, horizon):
    [(new_id,)] = blocking_query(dsn, COPY, horizon, prediction_id)
    return new_id


class HubsTests(TestCase):
    """Several hubs on one database, hubs that stop and start, writers that are no hub at all."""

    timeout = 120

    async def connected(self, hub, role):
        client = await deferToThread(connect, hub, role)
        self.addCleanup(deferToThread, client.close)
        return client

    async def test_a_write_through_one_hub_reaches_a_subscriber_of_another_and_survives_its_stop(self):
        a = await start_hub(self, table_registry, push=True)
        b = await start_hub(self, table_registry, dsn=a.dsn, push=True, sweep=0.2)
        writer = await self.connected(a, Role.ML)
        reader = await self.connected(b, Role.FRONTEND)
        model = rows.model()
        await deferToThread(writer.insert, SQLTable.ML_MODEL, [model])
        subscription = await deferToThread(reader.subscribe, SQLTable.ML_PREDICTION)
        first = rows.prediction(model["id"], horizon=1)
        await deferToThread(writer.insert, SQLTable.ML_PREDICTION, [first])
        [event] = await deferToThread(take, subscription, 1)
        self.assertEqual(event.row["id"], first["id"])
        await deferToThread(writer.close)
        await stop_hub(a)
        # Hub A is gone: what B writes, and what a script writes, still arrives.
        own = await self.connected(b, Role.ML)
        second = rows.prediction(model["id"], horizon=2)
        await deferToThread(own.insert, SQLTable.ML_PREDICTION, [second])
        external = await deferToThread(copy_prediction, a.dsn, first["id"], 3)
        events = await deferToThread(take, subscription, 2)
        self.assertEqual([e.row["id"] for e in events], [second["id"], external])
        self.assertLess(event.position, events[0].position)

    async def test_resuming_on_a_restarted_hub_misses_nothing_and_repeats_nothing(self):
        first_hub = await start_hub(self, table_registry, push=True)
        ml = await deferToThread(connect, first_hub, Role.ML)
        frontend = await deferToThread(connect, first_hub, Role.FRONTEND)
        model = rows.model()
        await deferToThread(ml.insert, SQLTable.ML_MODEL, [model])
        subscription = await deferToThread(frontend.subscribe, SQLTable.ML_PREDICTION)
        written = [rows.prediction(model["id"], horizon=h) for h in range(1, 7)]
        await deferToThread(ml.insert, SQLTable.ML_PREDICTION, written)
        processed = await deferToThread(take, subscription, 3)
        for client in (ml, frontend):
            await deferToThread(client.close)
        await stop_hub(first_hub)
        # While no hub runs, a script writes.
        external = [await deferToThread(copy_prediction, first_hub.dsn, written[0]["id"], h) for h in (7, 8)]
        second_hub = await start_hub(self, table_registry, dsn=first_hub.dsn, push=True)
        frontend = await self.connected(second_hub, Role.FRONTEND)
        resumed = await deferToThread(frontend.subscribe, SQLTable.ML_PREDICTION, from_position=processed[-1].position)
        events = await deferToThread(take, resumed, 5)
        self.assertEqual([e.row["id"] for e in events], [p["id"] for p in written[3:]] + external)
        self.assertEqual(resumed.position, events[-1].position)


class CommitOrderTests(TestCase):
    timeout = 120

    async def test_a_long_transaction_and_crossed_commits_resume_exactly_from_every_position(self):
        """
        A script's transaction stays open while the hub commits many short
        ones, and two others commit in the opposite order from how they
        began: live and from every position, each change comes once, in
        commit order.
        """
        hub = await start_hub(self, table_registry, push=True, sweep=0.2)
        ml = await deferToThread(connect, hub, Role.ML)
        frontend = await deferToThread(connect, hub, Role.FRONTEND)
        for client in (ml, frontend):
            self.addCleanup(deferToThread, client.close)
        model = rows.model()
        await deferToThread(ml.insert, SQLTable.ML_MODEL, [model])
        seed = rows.prediction(model["id"], horizon=1)
        await deferToThread(ml.insert, SQLTable.ML_PREDICTION, [seed])
        live = await deferToThread(frontend.subscribe, SQLTable.ML_PREDICTION)
        start = live.position

        def open_writer(horizon):
            connection = psycopg2.connect(hub.dsn)
            self.addCleanup(connection.close)
            with connection.cursor() as cursor:
                cursor.execute(COPY, (horizon, seed["id"]))
                [(new_id,)] = cursor.fetchall()
            return connection, new_id

        long_one, long_id = await deferToThread(open_writer, 100)
        began_first, first_id = await deferToThread(open_writer, 101)
        began_second, second_id = await deferToThread(open_writer, 102)
        await deferToThread(began_second.commit)
        shorts = [rows.prediction(model["id"], horizon=h) for h in range(2, 12)]
        for prediction in shorts:
            await deferToThread(ml.insert, SQLTable.ML_PREDICTION, [prediction])
        await deferToThread(began_first.commit)
        expected = [second_id] + [p["id"] for p in shorts] + [first_id]
        events = await deferToThread(take, live, len(expected))
        # Only now does the long one commit: it comes after all of them, though it began first.
        await deferToThread(long_one.commit)
        events += await deferToThread(take, live, 1)
        expected.append(long_id)
        self.assertEqual([e.row["horizon"] for e in events], [102, *range(2, 12), 101, 100])
        self.assertEqual([e.row["id"] for e in events], expected)
        positions = [start] + [e.position for e in events]
        for index, position in enumerate(positions):
            resumed = await deferToThread(frontend.subscribe, SQLTable.ML_PREDICTION, from_position=position)
            rest = await deferToThread(take, resumed, len(expected) - index)
            self.assertEqual([e.row["id"] for e in rest], expected[index:])
            await deferToThread(resumed.cancel)


class SlowSubscriberTests(TestCase):
    """
    A subscriber that stops reading while CHANGES ticks are written: the hub
    holds a bounded amount for it, serves the others meanwhile, and it then
    catches up completely.
    """

    timeout = 300
    CHANGES = int(os.environ.get("TRADEHUB_TEST_SLOW_CHANGES", "100000"))
    BATCH = 1000

    async def test_a_subscriber_that_does_not_read_costs_a_bounded_amount_and_catches_up(self):
        hub = await start_hub(self, table_registry, push=True, send_buffer=65536)
        writer = await deferToThread(connect, hub, Role.FRONTEND)
        self.addCleanup(deferToThread, writer.close)
        slow = await deferToThread(connect, hub, Role.ML, "slow")
        other = await deferToThread(connect, hub, Role.ML, "other")
        asker = await deferToThread(connect, hub, Role.FRONTEND)
        for client in (slow, other, asker):
            self.addCleanup(deferToThread, client.close)
        slow._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        stalled = await deferToThread(slow.subscribe, SQLTable.MARKET_TICK)
        following = await deferToThread(other.subscribe, SQLTable.MARKET_TICK)
        [session] = [s for s in hub.factory.sessions if s.client_name == "slow"]
        held = []
        sampler = LoopingCall(lambda: held.append(buffered(session.transport)))
        sampler.start(0.005)
        self.addCleanup(lambda: sampler.running and sampler.stop())

        def write_all():
            for start in range(0, self.CHANGES, self.BATCH):
                batch = [rows.tick(seq) for seq in range(start + 1, start + self.BATCH + 1)]
                writer.insert(SQLTable.MARKET_TICK, batch)

        reading = deferToThread(take, following, self.CHANGES)
        await deferToThread(write_all)
        others = await reading
        # The one that reads has everything, and requests are answered, while the slow one has read nothing.
        answer = await deferToThread(asker.select, SQLTable.ACCOUNT)
        self.assertEqual(answer.rows, [])
        sampler.stop()
        self.assertEqual(len(others), self.CHANGES)
        self.assertFalse(session.subscriptions[stalled.request_id].live)
        event_bytes = sum(len(repr(e.row)) for e in others[:100]) // 100 * self.CHANGES
        self.assertLess(max(held), 2 << 20, f"the hub held {max(held)} bytes for a subscriber of {event_bytes}")
        caught_up = await deferToThread(take, stalled, self.CHANGES)
        self.assertEqual([e.position for e in caught_up], [e.position for e in others])
        self.assertEqual([e.row["seq"] for e in caught_up], list(range(1, self.CHANGES + 1)))
        self.assertTrue(session.subscriptions[stalled.request_id].live)


def buffered(transport):
    """Bytes a Twisted TCP transport holds that the kernel has not taken yet."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
