"""
The daemon's metrics: what a session counts per answer and per byte (driven
through StringTransport with a task.Clock), what a scrape reads off the
sessions' lanes and the pool, and the pool's retries and failures on a real
PostgreSQL.
"""

import psycopg2
from prometheus_client import REGISTRY
from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tradehub.alpaca.stream import Stream, StreamState
from tradehub.db.failures import CommitOutcomeUnknown, PoolClosed, failure_kind
from tradehub.errors import Invalid
from tradehub.ops.metrics import Metrics
from tradehub.protocol.enums import ErrorCode, MessageType, Role, SQLCommand, SQLTable
from tradehub.protocol.errors import ProtocolError
from tradehub.protocol.messages import encode_frame
from tradehub.protocol.wire import Field, Layout, list_of, string
from tradehub.server.hub import HubFactory
from tradehub.server.routes import Registry, Route

from . import wire
from .support import fresh_database, make_pool

NOTES = Layout("notes", [Field("notes", list_of(string))])


def notes(*items):
    return NOTES.encode({"notes": list(items)})


class Hub:
    """
    A hub on a task.Clock with two routes: MARKET_TICK INSERTs wait until the
    test answers them, TRADE INSERTs are refused at once.
    """

    def __init__(self, max_request=None):
        self.clock = Clock()
        self.metrics = Metrics()
        self.held = []
        registry = Registry(
            [
                Route(SQLCommand.INSERT, SQLTable.MARKET_TICK, NOTES, self.hold),
                Route(SQLCommand.INSERT, SQLTable.TRADE, NOTES, self.refuse),
            ]
        )
        self.factory = HubFactory(
            registry,
            wire.TOKENS,
            self.clock,
            handshake_timeout=10,
            heartbeat_ms=60_000,
            max_frame=4096,
            max_in_flight=16,
            max_request=max_request,
            metrics=self.metrics,
        )
        # A pool never started: what these tests scrape of it stays 0.
        self.metrics.watch(self.factory.sessions, make_pool("dbname=never_connected"))

    def hold(self, value):
        answer = Deferred()
        self.held.append(answer)
        return answer

    def refuse(self, value):
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, "refused")

    def connect(self, role=None):
        """A session on a StringTransport, handshaken as C{role} unless None."""
        transport = StringTransport()
        session = self.factory.buildProtocol(None)
        session.makeConnection(transport)
        if role is not None:
            session.dataReceived(wire.hello(role))
        return session, transport

    def sample(self, name, **labels):
        return self.metrics.registry.get_sample_value(name, labels)


class AnswerTests(SynchronousTestCase):
    def setUp(self):
        self.hub = Hub()
        self.session, self.transport = self.hub.connect(Role.FRONTEND)

    def test_an_answer_counts_its_table_command_and_outcome_and_its_latency(self):
        self.session.dataReceived(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, notes("a")))
        self.hub.clock.advance(0.3)
        self.assertIsNone(
            self.hub.sample("tradehub_requests_total", table="MARKET_TICK", command="INSERT", outcome="OK")
        )
        self.hub.held.pop().callback(notes("a"))
        self.assertEqual(
            self.hub.sample("tradehub_requests_total", table="MARKET_TICK", command="INSERT", outcome="OK"), 1
        )
        self.assertEqual(self.hub.sample("tradehub_request_duration_seconds_sum", command="INSERT"), 0.3)
        self.assertEqual(self.hub.sample("tradehub_request_duration_seconds_bucket", command="INSERT", le="0.25"), 0)
        self.assertEqual(self.hub.sample("tradehub_request_duration_seconds_bucket", command="INSERT", le="0.5"), 1)

    def test_a_refusal_counts_its_error_code(self):
        for request_id in (1, 2):
            self.session.dataReceived(wire.request(SQLCommand.INSERT, SQLTable.TRADE, notes("a"), request_id))
        self.assertEqual(
            self.hub.sample("tradehub_requests_total", table="TRADE", command="INSERT", outcome="VALIDATION_FAILED"), 2
        )

    def test_numbers_the_hub_does_not_know_share_one_label(self):
        self.session.dataReceived(wire.request(SQLCommand.INSERT, 200, notes(), 1))
        self.session.dataReceived(wire.request(99, SQLTable.TRADE, notes(), 2))
        self.assertEqual(
            self.hub.sample("tradehub_requests_total", table="unknown", command="INSERT", outcome="UNKNOWN_TABLE"), 1
        )
        self.assertEqual(
            self.hub.sample("tradehub_requests_total", table="TRADE", command="unknown", outcome="UNKNOWN_COMMAND"), 1
        )

    def test_a_request_too_large_counts_against_its_table(self):
        hub = Hub(max_request=5000)
        session, _ = hub.connect(Role.FRONTEND)
        for flags in (1, 1, 0):
            payload = b"x" * 2000
            session.dataReceived(
                encode_frame(
                    MessageType.REQUEST, payload, 7, command=SQLCommand.INSERT, table=SQLTable.MARKET_TICK, flags=flags
                )
            )
        self.assertEqual(
            hub.sample("tradehub_requests_total", table="MARKET_TICK", command="INSERT", outcome="MALFORMED_PAYLOAD"),
            1,
        )

    def test_bytes_read_and_written_are_counted(self):
        received = len(wire.hello(Role.FRONTEND))
        request = wire.request(SQLCommand.INSERT, SQLTable.TRADE, notes("a"))
        self.session.dataReceived(request[:5])
        self.session.dataReceived(request[5:])
        received += len(request)
        self.assertEqual(self.hub.sample("tradehub_received_bytes_total"), received)
        self.assertEqual(self.hub.sample("tradehub_sent_bytes_total"), len(self.transport.value()))
        self.assertGreater(len(self.transport.value()), 0)


class ScrapeTests(SynchronousTestCase):
    def setUp(self):
        self.hub = Hub()

    def by_role(self, name):
        return {role: self.hub.sample(name, role=role) for role in ("FRONTEND", "ML", "none")}

    def test_sessions_by_role_including_those_before_their_hello(self):
        self.hub.connect(Role.FRONTEND)
        self.hub.connect(Role.FRONTEND)
        self.hub.connect(Role.ML)
        self.hub.connect()
        self.assertEqual(self.by_role("tradehub_sessions"), {"FRONTEND": 2, "ML": 1, "none": 1})

    def test_closed_sessions_are_no_longer_counted(self):
        session, _ = self.hub.connect(Role.ML)
        session.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.by_role("tradehub_sessions"), {"FRONTEND": 0, "ML": 0, "none": 0})

    def test_in_flight_and_queued_are_read_off_the_lanes(self):
        session, _ = self.hub.connect(Role.FRONTEND)
        for request_id in (1, 2, 3):
            session.dataReceived(wire.request(SQLCommand.INSERT, SQLTable.MARKET_TICK, notes(), request_id))
        self.assertEqual(self.by_role("tradehub_requests_in_flight"), {"FRONTEND": 3, "ML": 0, "none": 0})
        self.assertEqual(self.by_role("tradehub_requests_queued"), {"FRONTEND": 2, "ML": 0, "none": 0})
        self.hub.held.pop().callback(notes())
        self.assertEqual(self.by_role("tradehub_requests_in_flight")["FRONTEND"], 2)
        self.assertEqual(self.by_role("tradehub_requests_queued")["FRONTEND"], 1)


class FailureKindTests(SynchronousTestCase):
    def test_kinds_of_failures_without_a_server_code(self):
        self.assertEqual(failure_kind(CommitOutcomeUnknown("lost during COMMIT")), "commit_outcome_unknown")
        self.assertEqual(failure_kind(ConnectionLost()), "connection_lost")
        self.assertEqual(failure_kind(psycopg2.OperationalError("server closed the connection")), "connection_lost")
        self.assertEqual(failure_kind(psycopg2.ProgrammingError("can't adapt type")), "driver_error")

    def test_errors_that_are_not_the_databases_are_not_kinds(self):
        self.assertIsNone(failure_kind(Invalid("a refusal the work raised")))
        self.assertIsNone(failure_kind(PoolClosed()))


class PoolMetricsTests(TestCase):
    async def start_pool(self, **settings):
        self.metrics = Metrics()
        pool = make_pool(await fresh_database(self), metrics=self.metrics, **settings)
        await pool.start()
        self.addCleanup(pool.close)
        self.metrics.watch([], pool)
        return pool

    def sample(self, name, **labels):
        return self.metrics.registry.get_sample_value(name, labels)

    async def test_connections_busy_and_waiting_are_read_off_the_pool(self):
        pool = await self.start_pool(size_min=1, size_max=1)
        release = Deferred()

        async def hold(cursor):
            await cursor.execute("SELECT 1")
            await release

        holding = ensureDeferred(pool.transaction(hold))
        waiting = ensureDeferred(pool.query("SELECT 1"))
        self.assertEqual(
            [self.sample(f"tradehub_db_pool_{name}") for name in ("connections", "busy_connections", "waiting")],
            [1, 1, 1],
        )
        release.callback(None)
        await holding
        await waiting
        self.assertEqual(
            [self.sample(f"tradehub_db_pool_{name}") for name in ("connections", "busy_connections", "waiting")],
            [1, 0, 0],
        )

    def counts(self, counter):
        return {
            sample.labels["kind"]: sample.value
            for sample in counter.collect()[0].samples
            if sample.name.endswith("_total")
        }

    async def test_retries_and_final_failures_are_counted_by_kind(self):
        # One retry: the second (0.4 s later) would start past the budget.
        pool = await self.start_pool(retry_budget=0.3, retry_backoff=0.2)
        # A terminated backend reads as admin_shutdown, or as connection_lost when libpq saw the socket close first.
        killed = {"admin_shutdown", "connection_lost"}
        attempts = []

        async def killed_once(cursor):
            attempts.append(1)
            if len(attempts) == 1:
                await cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")

        await pool.transaction(killed_once)
        [(retried, once)] = self.counts(self.metrics.db_retries).items()
        self.assertIn(retried, killed)
        self.assertEqual((once, self.counts(self.metrics.db_failures)), (1, {}))

        with self.assertRaises(psycopg2.DataError):
            await pool.query("SELECT 1 / 0")
        self.assertEqual(self.counts(self.metrics.db_failures), {"division_by_zero": 1})

        async def always_killed(cursor):
            await cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")

        with self.assertRaises(psycopg2.OperationalError) as caught:
            await pool.transaction(always_killed)
        kind = failure_kind(caught.exception)
        self.assertIn(kind, killed)
        self.assertEqual(sum(self.counts(self.metrics.db_retries).values()), 2)
        self.assertEqual(self.counts(self.metrics.db_failures), {"division_by_zero": 1, kind: 1})

    async def test_a_refusal_the_work_raises_is_no_database_failure(self):
        pool = await self.start_pool()

        def refuse(cursor):
            raise Invalid("not a database failure")

        with self.assertRaises(Invalid):
            await pool.transaction(refuse)
        self.assertEqual(self.counts(self.metrics.db_failures), {})


class RegistryTests(SynchronousTestCase):
    def test_each_hub_counts_in_a_registry_of_its_own(self):
        """Two hubs in one process (as in these tests) count apart, and never in prometheus_client's global registry."""
        first, second = Metrics(), Metrics()
        first.requests.labels("TRADE", "INSERT", "OK").inc()
        labels = {"table": "TRADE", "command": "INSERT", "outcome": "OK"}
        self.assertEqual(first.registry.get_sample_value("tradehub_requests_total", labels), 1)
        self.assertIsNone(second.registry.get_sample_value("tradehub_requests_total", labels))
        self.assertIsNone(REGISTRY.get_sample_value("tradehub_requests_total", labels))


class StreamStateTests(SynchronousTestCase):
    def test_each_stream_shows_its_one_state_and_counts_its_connection_attempts(self):
        metrics = Metrics()
        clock = Clock()
        stream = Stream(
            "trading",
            "wss://paper-api.example/stream",
            None,
            reactor=clock,
            endpoint=_Refusing(),
            backoff=(1.0, 8.0),
            jitter=lambda: 0.0,
            on_state=metrics.stream_changed,
        )
        stream.startService()
        clock.advance(0.5)  # refused twice: two attempts, down again

        def sample(name, **labels):
            return metrics.registry.get_sample_value(name, dict(stream="trading", **labels))

        self.assertEqual(sample("tradehub_alpaca_stream_connects_total"), 2)
        states = {state.value: sample("tradehub_alpaca_stream_state", state=state.value) for state in StreamState}
        self.assertEqual(states, {"down": 1, "connecting": 0, "open": 0, "streaming": 0, "stopped": 0})


class _Refusing:
    def connect(self, factory):
        return fail(ConnectionLost())
