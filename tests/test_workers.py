"""
TRADEHUB_WORKERS: the first process's bookkeeping of its workers
(deterministic, on a fake reactor), and real daemons whose workers share the
listening ports, drain on SIGTERM, are started again when they die, and stop
when their first process dies.
"""

import json
import os
import signal
import socket
import threading
import time
import urllib.request

import attrs
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import error, task
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, eventAsJSON, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tradehub.protocol.enums import MessageType, Role
from tradehub.service import StartupError
from tradehub.workers import (
    READY,
    RESTART_DELAY,
    SOCKETS,
    STOP_GRACE,
    WORKER,
    Inherited,
    Workers,
    inherited,
    is_shared,
    labelled,
    pool_share,
)

from . import wire
from .daemon import TOKENS, Daemon, postgres_pid, process_alive
from .support import blocking_query, fresh_database
from .test_daemon import _url
from .test_stop_under_load import assert_drained, pipeline


class SharingTests(SynchronousTestCase):
    def test_the_pool_is_divided_so_that_the_workers_together_open_no_more_than_one_hub(self):
        self.assertEqual(pool_share(2, 10, 1), (2, 10))
        self.assertEqual(pool_share(2, 10, 2), (1, 5))
        self.assertEqual(pool_share(4, 10, 3), (1, 3))
        self.assertEqual(pool_share(1, 1, 4), (1, 1))

    def test_only_tcp_listeners_are_shared(self):
        self.assertTrue(is_shared("tcp:7001:interface=127.0.0.1"))
        self.assertTrue(is_shared("tcp6:7001:interface=\\:\\:1"))
        self.assertFalse(is_shared("unix:/run/tradehub.sock"))
        self.assertFalse(is_shared("ssl:7001:privateKey=k.pem"))

    def test_a_worker_reads_its_number_and_sockets_from_its_environment(self):
        self.assertIsNone(inherited({}))
        self.assertEqual(inherited({WORKER: "2", SOCKETS: "frontend=3,ml=4"}), Inherited(2, {"frontend": 3, "ml": 4}))
        self.assertEqual(inherited({WORKER: "1", SOCKETS: ""}), Inherited(1, {}))

    def test_metrics_of_every_worker_are_one_family_each_labelled_by_worker(self):
        def sessions(value):
            family = GaugeMetricFamily("tradehub_sessions", "Open client connections", labels=["role"])
            family.add_metric(["ML"], value)
            return family

        def requests(value):
            family = CounterMetricFamily("tradehub_requests", "Requests answered", labels=["outcome"])
            family.add_metric(["OK"], value)
            return family

        merged = labelled([("0", [sessions(1), requests(5)]), ("1", [sessions(2)])])
        self.assertEqual([family.name for family in merged], ["tradehub_sessions", "tradehub_requests"])
        self.assertEqual(
            [(s.labels, s.value) for s in merged[0].samples],
            [({"role": "ML", "worker": "0"}, 1), ({"role": "ML", "worker": "1"}, 2)],
        )
        self.assertEqual([s.labels for s in merged[1].samples], [{"outcome": "OK", "worker": "0"}])


@attrs.define
class FakeProcess:
    pid: int
    signals: list = attrs.Factory(list)
    exited: bool = False

    def signalProcess(self, name):
        if self.exited:
            raise error.ProcessExitedAlready()
        self.signals.append(name)


class FakeReactor(task.Clock):
    """A clock that records spawnProcess calls and gives each a L{FakeProcess}."""

    def __init__(self):
        super().__init__()
        self.spawned = []

    def spawnProcess(self, protocol, executable, args, env, childFDs):
        process = FakeProcess(1000 + len(self.spawned))
        self.spawned.append((protocol, args, env, childFDs))
        protocol.makeConnection(process)
        return process


@attrs.define
class FakePort:
    descriptor: int

    def fileno(self):
        return self.descriptor


@attrs.define
class FakeListener:
    name: str
    port: FakePort


def say(worker, **fields):
    """A worker's log line, as its JSON observer writes it (after a record separator)."""
    event = dict(log_namespace="tradehub.tap", log_level=LogLevel.info, log_format="hello", log_time=1.0, **fields)
    worker.childDataReceived(1, b"\x1e" + eventAsJSON(event).encode() + b"\n")


def end(worker, reason):
    worker.transport.exited = True
    worker.processEnded(Failure(reason))


class WorkersTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = FakeReactor()
        self.workers = Workers(
            self.reactor,
            3,
            [FakeListener("frontend", FakePort(11)), FakeListener("ml", FakePort(12))],
            {"TRADEHUB_WORKERS": "3", "TRADEHUB_LOG_FORMAT": "text"},
            database_url="postgresql://hub@/db?host=%2Ftmp",
            ops=True,
            stop_deadline=5.0,
        )
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def start(self):
        started = self.workers.startService()
        self.addCleanup(
            lambda: self.workers._folder and os.path.isdir(self.workers._folder) and os.rmdir(self.workers._folder)
        )
        return started

    def worker(self, index):
        return self.workers.processes[index]

    def test_each_worker_inherits_the_listening_sockets_and_is_told_where_they_are(self):
        self.start()
        self.assertEqual(len(self.reactor.spawned), 2)
        for number, (_, args, env, child_fds) in enumerate(self.reactor.spawned, start=1):
            self.assertEqual(child_fds, {0: "w", 1: "r", 2: "r", 3: 11, 4: 12})
            self.assertEqual(env[WORKER], str(number))
            self.assertEqual(env[SOCKETS], "frontend=3,ml=4")
            self.assertEqual(env["DATABASE_URL"], "postgresql://hub@/db?host=%2Ftmp")
            self.assertEqual(env["TRADEHUB_LOG_FORMAT"], "json", "the first process reads its workers' events")
            self.assertEqual(env["TRADEHUB_OPS_ENDPOINT"], f"unix:{self.workers.ops_socket(number)}")
            self.assertEqual(env["TRADEHUB_WORKERS"], "3", "a worker computes the same pool share")
            self.assertIn("tradehub", args)

    def test_the_first_process_starts_on_once_every_worker_is_ready(self):
        started = self.start()
        say(self.worker(1), **{READY: True})
        self.assertNoResult(started)
        say(self.worker(2), **{READY: True})
        self.successResultOf(started)
        self.assertEqual(self.workers.describe(), (["1 (pid 1000)", "2 (pid 1001)"], []))

    def test_a_worker_that_ends_before_it_is_ready_fails_the_start(self):
        started = self.start()
        end(self.worker(1), error.ProcessTerminated(exitCode=1))
        failure = self.failureResultOf(started, StartupError)
        self.assertIn("worker 1 ended before it was ready (exit status 1)", str(failure.value))

    def test_a_worker_log_event_is_relayed_with_its_worker_number_even_split_across_reads(self):
        self.start()
        worker = self.worker(2)
        event = dict(log_namespace="x.y", log_level=LogLevel.warn, log_format="hi {n}", n=7, log_time=1.0)
        line = b"\x1e" + eventAsJSON(event).encode()
        worker.childDataReceived(1, line[:10])
        self.assertEqual([e for e in self.events if e.get("log_namespace") == "x.y"], [])
        worker.childDataReceived(1, line[10:] + b"\n")
        [relayed] = [e for e in self.events if e.get("log_namespace") == "x.y"]
        self.assertEqual((relayed["log_format"], relayed["n"]), ("hi {n}", 7))
        self.assertEqual(relayed["log_system"], "worker 2 x.y#warn")

    def test_what_a_worker_writes_on_stderr_is_logged_as_a_warning_naming_it(self):
        self.start()
        self.worker(1).childDataReceived(2, b"Traceback (most recent call last):\n")
        [warned] = [e for e in self.events if e.get("line", "").startswith("Traceback")]
        self.assertEqual((warned["worker"], warned["log_level"]), (1, LogLevel.warn))

    def test_a_worker_that_dies_is_started_again_after_a_delay_that_doubles_until_it_is_ready(self):
        self.start()
        for worker in (1, 2):
            say(self.worker(worker), **{READY: True})
        for delay in (RESTART_DELAY, 2 * RESTART_DELAY, 4 * RESTART_DELAY):
            spawned = len(self.reactor.spawned)
            end(self.worker(1), error.ProcessTerminated(signal=signal.SIGKILL))
            self.assertEqual(self.workers.describe()[1], ["1"])
            self.reactor.advance(delay - 0.01)
            self.assertEqual(len(self.reactor.spawned), spawned)
            self.reactor.advance(0.01)
            self.assertEqual(len(self.reactor.spawned), spawned + 1)
        say(self.worker(1), **{READY: True})
        end(self.worker(1), error.ProcessTerminated(exitCode=1))
        self.reactor.advance(RESTART_DELAY)
        self.assertEqual(self.reactor.spawned[-1][2][WORKER], "1", "ready again: back to the first delay")
        self.assertEqual(self.workers.restarts, 4)

    def test_stopping_asks_every_worker_to_stop_and_joined_waits_for_them(self):
        self.start()
        for worker in (1, 2):
            say(self.worker(worker), **{READY: True})
        first, second = self.worker(1), self.worker(2)
        self.workers.stopService()
        self.assertEqual((first.transport.signals, second.transport.signals), (["TERM"], ["TERM"]))
        joined = self.workers.joined.stopService()
        end(first, error.ProcessDone(0))
        self.assertNoResult(joined)
        end(second, error.ProcessDone(0))
        self.successResultOf(joined)
        self.assertEqual(self.reactor.getDelayedCalls(), [], "a stopped worker is not started again")

    def test_a_worker_that_does_not_stop_in_time_is_killed(self):
        self.start()
        for worker in (1, 2):
            say(self.worker(worker), **{READY: True})
        stubborn, quick = self.worker(1), self.worker(2)
        self.workers.stopService()
        joined = self.workers.joined.stopService()
        end(quick, error.ProcessDone(0))
        self.reactor.advance(5.0 + STOP_GRACE)
        self.assertEqual(stubborn.transport.signals, ["TERM", "KILL"])
        self.assertEqual(quick.transport.signals, ["TERM"])
        end(stubborn, error.ProcessTerminated(signal=signal.SIGKILL))
        self.successResultOf(joined)

    def test_stopping_while_starting_cancels_nothing_it_cannot_and_leaves_no_restart(self):
        started = self.start()
        end(self.worker(2), error.ProcessTerminated(exitCode=1))
        self.failureResultOf(started, StartupError)
        self.workers.stopService()
        joined = self.workers.joined.stopService()
        end(self.worker(1), error.ProcessDone(0))
        self.successResultOf(joined)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


# --- real daemons


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return list(text_string_to_metric_families(answer.read().decode()))


def sessions_by_worker(port):
    """FRONTEND sessions open on each worker, from the first process's /metrics."""
    counts = {}
    for family in metrics(port):
        if family.name == "tradehub_sessions":
            for sample in family.samples:
                if sample.labels["role"] == "FRONTEND":
                    counts[sample.labels["worker"]] = int(sample.value)
    return counts


def readiness(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as refused:
        return json.load(refused)


def worker_pid(port):
    """Worker 1's pid, from /readyz, once it serves."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        detail = readiness(port)["parts"]["workers"]
        if detail["ready"]:
            return int(detail["detail"].split("(pid ")[1].split(")")[0])
        time.sleep(0.1)
    raise AssertionError(f"worker 1 never served: {detail}")


def one_connection_on_each_worker(daemon):
    """
    Connect (with HELLO) until each process holds one of the connections,
    telling which took each by whose session count grew; close the others.
    """
    held, spare = {}, []
    counts = sessions_by_worker(daemon.ops_port)
    for _ in range(200):
        sock = socket.create_connection(("127.0.0.1", daemon.frontend_port), timeout=30)
        sock.sendall(wire.hello(Role.FRONTEND, token=TOKENS["TRADEHUB_FRONTEND_TOKEN"]))
        reader, frames = wire.Reader(), []
        while not frames:
            frames += reader.feed(sock.recv(65536))
        assert frames[0][0].type == MessageType.HELLO_ACK, frames
        before, counts = counts, sessions_by_worker(daemon.ops_port)
        [worker] = [w for w in counts if counts[w] > before.get(w, 0)]
        if worker in held:
            spare.append(sock)
        else:
            held[worker] = sock
        if len(held) == 2:
            break
    for sock in spare:
        sock.close()
    assert len(held) == 2, f"200 connections all went to one process: {counts}"
    return held


class WorkerDaemonTests(TestCase):
    timeout = 240

    async def daemon(self, external=True, **env):
        """A daemon with two workers, on a fresh external database unless C{external} is false."""
        if external:
            self.dsn = await fresh_database(self)
            env["DATABASE_URL"] = _url(self.dsn)
        daemon = Daemon(self.mktemp(), env={"TRADEHUB_WORKERS": "2", **env})
        # A file in the working folder must not shadow the daemon's modules in a worker (it runs with -P).
        (daemon.folder / "tap.py").write_text("raise SystemExit('a tap.py in the working folder was imported')\n")
        daemon.start()
        self.addCleanup(daemon.kill)
        # The first process's ready line (a worker's names its ops socket, not the ops port).
        await deferToThread(daemon.wait_for, f"ops on tcp:{daemon.ops_port}")
        return daemon

    async def test_workers_share_the_port_and_each_drains_on_sigterm_losing_no_acknowledged_write(self):
        daemon = await self.daemon(TRADEHUB_SHUTDOWN_DEADLINE="5")
        families = {family.name: family for family in await deferToThread(metrics, daemon.ops_port)}
        pool = {s.labels["worker"]: s.value for s in families["tradehub_db_pool_connections"].samples}
        self.assertEqual(set(pool), {"0", "1"}, "/metrics holds every worker's series, labelled")
        self.assertEqual(families["tradehub_workers_serving"].samples[0].value, 1)
        held = await deferToThread(one_connection_on_each_worker, daemon)
        child = await deferToThread(worker_pid, daemon.ops_port)

        started = {worker: threading.Event() for worker in held}
        answers = {
            worker: deferToThread(pipeline, sock, started[worker], symbol=f"W{worker}") for worker, sock in held.items()
        }
        for event in started.values():
            await deferToThread(event.wait, 30)
        daemon.signal(signal.SIGTERM)
        # As a process group's SIGTERM (a terminal's, systemd's) would: the worker gets one of its own too.
        os.kill(child, signal.SIGTERM)
        drained = {worker: await answer for worker, answer in answers.items()}
        self.assertEqual(await deferToThread(daemon.wait), 0)

        self.assertFalse(process_alive(child), "the worker outlived its first process")
        for worker, frames in drained.items():
            acknowledged = assert_drained(self, frames)
            stored = await deferToThread(
                blocking_query, self.dsn, "SELECT seq FROM market_tick WHERE symbol = %s", f"W{worker}"
            )
            self.assertEqual({row[0] for row in stored}, acknowledged, f"worker {worker}")
        self.assertIn("worker 1 stopped (exit status 0)", daemon.output())
        self.assertNotIn("Traceback", daemon.output() + daemon.errors())

    async def test_a_killed_worker_is_started_again_and_the_embedded_database_outlives_the_workers(self):
        daemon = await self.daemon(external=False)
        first = await deferToThread(worker_pid, daemon.ops_port)
        os.kill(first, signal.SIGKILL)
        await deferToThread(daemon.wait_for, "worker 1 ended (signal 9); starting it again in 1s")
        second = await deferToThread(worker_pid, daemon.ops_port)
        self.assertNotEqual(first, second)
        held = await deferToThread(one_connection_on_each_worker, daemon)
        self.assertEqual(set(held), {"0", "1"})
        for sock in held.values():
            sock.close()
        families = {family.name: family for family in await deferToThread(metrics, daemon.ops_port)}
        self.assertEqual(families["tradehub_worker_restarts"].samples[0].value, 1)
        postgres = postgres_pid(daemon.pgdata)

        daemon.signal(signal.SIGTERM)
        self.assertEqual(await deferToThread(daemon.wait), 0)
        self.assertFalse(process_alive(second))
        self.assertFalse(process_alive(postgres), "postgres left running")
        output = daemon.output()
        self.assertLess(output.index("worker 1 stopped (exit status 0)"), output.index("embedded PostgreSQL stopped"))

    async def test_a_worker_stops_by_itself_when_its_first_process_is_killed(self):
        daemon = await self.daemon()
        child = await deferToThread(worker_pid, daemon.ops_port)
        daemon.signal(signal.SIGKILL)
        await deferToThread(daemon.wait)
        self.assertFalse(process_alive(child, grace=30), "the worker outlived its first process")
