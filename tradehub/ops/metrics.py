"""
Every Prometheus metric of the daemon, declared here on a registry of its
own (not prometheus_client's global one, so that several hubs in one process,
as in the tests, keep theirs apart). A later part's metrics (the Alpaca
stream's state) belong here too.

The hot path pays one counter increment and one histogram observation per
answer, and two integer additions for its bytes; the rest (sessions, queued
and unanswered requests, the pool) is read off the objects at scrape time.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..db.failures import failure_kind
from ..protocol.enums import Role, SQLCommand, SQLTable
from ..protocol.errors import ProtocolError

if TYPE_CHECKING:
    from ..changes.feed import Feed
    from ..db.pool import Pool
    from ..server.lanes import Task
    from ..server.session import HubProtocol

OK = "OK"
# The label of a table or command number the hub does not know, so that a
# client sending junk cannot make new series without end.
UNKNOWN = "unknown"
# The role label of a connection that has not completed its HELLO.
NO_ROLE = "none"
_TABLES = {table.value: table.name for table in SQLTable}
_COMMANDS = {command.value: command.name for command in SQLCommand}
# From a one-row SELECT on a quiet hub (a fraction of a millisecond) to a
# request that waited behind a long pipeline or a slow database.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """
    What the sessions and the pool count as it happens; once L{watch}ed,
    also what a scrape reads off the live sessions and the pool.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tradehub_requests",
            "Requests answered, by table, command and outcome (OK or the error code)",
            ["table", "command", "outcome"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "tradehub_request_duration_seconds",
            "Seconds from a request's frame arriving to its answer written, by command",
            ["command"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.db_retries = Counter(
            "tradehub_db_retries", "Transient database failures retried, by kind", ["kind"], registry=self.registry
        )
        self.db_failures = Counter(
            "tradehub_db_failures",
            "Transactions and queries failed for good on a database error, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.stream_state = Gauge(
            "tradehub_alpaca_stream_state",
            "1 for the state each Alpaca stream is in (down, connecting, open, streaming, stopped), 0 for the others",
            ["stream", "state"],
            registry=self.registry,
        )
        self.stream_connects = Counter(
            "tradehub_alpaca_stream_connects",
            "Connection attempts to an Alpaca stream",
            ["stream"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "tradehub_alpaca_leader",
            "1 while this hub leads: it holds Alpaca's streams and runs its sync (one hub per Alpaca key)",
            registry=self.registry,
        )
        # Sessions add what they read and write; a scrape reads the sums.
        self.bytes_received = 0
        self.bytes_sent = 0
        self.events_sent = 0
        # Each series' child looked up once: labels() validates and locks on every call.
        self._requests = functools.cache(self.requests.labels)
        self._duration = functools.cache(self.request_duration.labels)

    def answered(self, task: Task, result: bytes | ProtocolError, seconds: float) -> None:
        """C{task} was answered with C{result} (a payload or an error), written C{seconds} after it arrived."""
        outcome = result.code.name if isinstance(result, ProtocolError) else OK
        command = _COMMANDS.get(task.command, UNKNOWN)
        self._requests(_TABLES.get(task.table, UNKNOWN), command, outcome).inc()
        self._duration(command).observe(seconds)

    def database_retried(self, error: Exception) -> None:
        """The pool retries only transient failures, which are always the database's: each has a kind."""
        self.db_retries.labels(failure_kind(error)).inc()

    def database_failed(self, error: Exception) -> None:
        """The pool's work failed for good; counted when the database failed it, not the work itself."""
        kind = failure_kind(error)
        if kind is not None:
            self.db_failures.labels(kind).inc()

    def stream_changed(self, stream: str, state: enum.Enum) -> None:
        """An Alpaca stream changed state (a L{tradehub.alpaca.stream.StreamState})."""
        for each in type(state):
            self.stream_state.labels(stream, each.value).set(1 if each is state else 0)
        if state.value == "connecting":
            self.stream_connects.labels(stream).inc()

    def leading(self, leading: bool) -> None:
        self.leader.set(1 if leading else 0)

    def watch(self, sessions: Iterable[HubProtocol], pool: Pool, feed: Feed | None = None) -> None:
        """Report these sessions, this pool and the change feed at every scrape."""
        self.registry.register(_LiveState(self, sessions, pool, feed))


class _LiveState:
    """
    The gauges and byte counters, read when scraped. prometheus_client's
    Twisted resource scrapes in the reactor's thread pool, so this only reads
    numbers and takes a copy of the sessions: never a structure mid-change.
    """

    def __init__(self, metrics: Metrics, sessions: Iterable[HubProtocol], pool: Pool, feed: Feed | None) -> None:
        self._metrics = metrics
        self._sessions = sessions
        self._pool = pool
        self._feed = feed

    def collect(self) -> Iterator[Metric]:
        roles = [role.name for role in Role] + [NO_ROLE]
        sessions = dict.fromkeys(roles, 0)
        in_flight = dict.fromkeys(roles, 0)
        queued = dict.fromkeys(roles, 0)
        subscriptions = {(table.name, state): 0 for table in SQLTable for state in ("live", "catching_up")}
        for session in list(self._sessions):
            role = session.role
            name = NO_ROLE if role is None else role.name
            sessions[name] += 1
            in_flight[name] += session.in_flight
            queued[name] += session.queued
            for subscription in list(session.subscriptions.values()):
                subscriptions[subscription.table.name, "live" if subscription.live else "catching_up"] += 1
        yield _by_role("tradehub_sessions", "Open client connections, by role (none: before its HELLO)", sessions)
        yield _by_role("tradehub_requests_in_flight", "Requests received and not answered yet, by role", in_flight)
        yield _by_role("tradehub_requests_queued", "Requests waiting in their lane, not started yet, by role", queued)
        pool = self._pool
        yield GaugeMetricFamily("tradehub_db_pool_connections", "Database connections open or opening", pool.size)
        yield GaugeMetricFamily("tradehub_db_pool_busy_connections", "Database connections running work", pool.busy)
        yield GaugeMetricFamily(
            "tradehub_db_pool_waiting", "Transactions and queries waiting for a database connection", pool.waiting
        )
        yield CounterMetricFamily(
            "tradehub_received_bytes", "Bytes received from clients", self._metrics.bytes_received
        )
        yield CounterMetricFamily("tradehub_sent_bytes", "Bytes written to clients", self._metrics.bytes_sent)
        gauge = GaugeMetricFamily(
            "tradehub_subscriptions",
            "Push subscriptions, by table and state (live, or catching up from the change log)",
            labels=["table", "state"],
        )
        for (table, state), count in subscriptions.items():
            gauge.add_metric([table, state], count)
        yield gauge
        yield CounterMetricFamily("tradehub_events_sent", "EVENTs written to subscribers", self._metrics.events_sent)
        if self._feed is not None:
            yield GaugeMetricFamily(
                "tradehub_change_log_last_position", "The last change-log position this hub knows of", self._feed.known
            )
            yield GaugeMetricFamily(
                "tradehub_change_log_handed_out_position",
                "The change-log position up to which live subscriptions have their changes (behind the last: lag)",
                self._feed.head,
            )


def _by_role(name: str, documentation: str, counts: dict[str, int]) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation, labels=["role"])
    for role, count in counts.items():
        gauge.add_metric([role], count)
    return gauge
