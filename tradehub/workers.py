"""
TRADEHUB_WORKERS=N: N hub processes serving the same listening sockets.

The process twistd started is worker 0. It does all a single hub does (the
data folder, the embedded cluster, the migrations), listens, and then starts
workers 1..N-1, each a `twistd tradehub` of its own that inherits the
listening sockets as descriptors and adopts them (C{adoptStreamPort}). The
kernel hands each new connection to whichever process accepts it first; a
connection then stays with that process, so its requests keep their order.

Otherwise a worker is one more hub on the database: the change log and the
leader election (the Alpaca sync and streams in one process, another taking
over when it dies) work as they do across machines. Each takes its share of
the pool (L{pool_share}). Workers log JSON lines on their stdout, which the
first process writes to its own log with a C{worker} field; a worker that
dies is started again; SIGTERM to the first process stops every worker (each
drains its sessions) before the database goes; a worker whose parent died
(its stdin closes) stops by itself. The first process's /metrics adds every
worker's series, each labelled C{worker} (L{WorkerMetrics}).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from twisted.application.service import Service
from twisted.internet import error
from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.main import CONNECTION_DONE
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, LogLevel, eventFromJSON
from twisted.python.failure import Failure

from .service import StartupError, stop_reactor

# A worker is `twistd tradehub` on the first process's interpreter; -P keeps the working
# folder off sys.path (as the twistd script does), so no file there shadows a module.
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
# How the first process tells a worker what it is: set only in a worker's environment.
WORKER = "TRADEHUB_WORKER"
# Role=descriptor pairs of the inherited listening sockets: "frontend=3,ml=4".
SOCKETS = "TRADEHUB_WORKER_SOCKETS"
# The log event field that says a hub finished starting (L{HubService} sets it).
READY = "hub_ready"
# A worker that dies is started again after this many seconds, doubled for
# each death before it was ready again, up to the longest.
RESTART_DELAY, RESTART_DELAY_MAX = 1.0, 30.0
# A worker given SIGTERM has the sessions' deadline, and this much more, to exit before SIGKILL.
STOP_GRACE = 10.0
# A worker's /metrics must answer within this many seconds to count in a scrape.
SCRAPE_TIMEOUT = 2.0


def is_shared(description: str) -> bool:
    """
    Workers accept on the tcp listeners only: a unix socket's file would be
    removed by whichever process stopped first, and an ssl listener's keys
    are the endpoint string's, which a worker cannot rebuild around an
    inherited socket. Those listeners stay with the first process.
    """
    return description.partition(":")[0] in ("tcp", "tcp6")


def pool_share(size_min: int, size_max: int, workers: int) -> tuple[int, int]:
    """
    Each process's pool bounds: the configured ones divided among the
    workers, so that together they open no more connections than one hub
    was allowed (at least one each).
    """
    most = max(1, size_max // workers)
    return min(most, max(1, size_min // workers)), most


@attrs.frozen
class Inherited:
    """What a worker got from the first process: its number and the listening descriptors by role."""

    index: int
    sockets: Mapping[str, int]


def inherited(environ: Mapping[str, str] = os.environ) -> Inherited | None:
    """This process's L{Inherited}, or None in the first process."""
    if WORKER not in environ:
        return None
    pairs = (part.split("=", 1) for part in environ.get(SOCKETS, "").split(",") if part)
    return Inherited(int(environ[WORKER]), {role: int(fd) for role, fd in pairs})


class ParentWatch(FileDescriptor):
    """
    A worker's stdin is a pipe from the first process: it reaches its end
    when that process dies, however it died, and the worker then stops.
    """

    log = Logger()

    def __init__(self, reactor: Any, descriptor: int = 0) -> None:
        super().__init__(reactor)
        self.stopping: Any = reactor
        self.descriptor = descriptor
        os.set_blocking(descriptor, False)

    def fileno(self) -> int:
        return self.descriptor

    def doRead(self) -> Any:
        try:
            if os.read(self.descriptor, 4096):
                return None
        except BlockingIOError:
            return None
        except OSError:
            pass
        return CONNECTION_DONE

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.log.error("the first process is gone; this worker stops")
        stop_reactor(self.stopping)


class ParentWatchService(Service):
    """Watches the first process for as long as a worker runs."""

    name = "parent-watch"

    def __init__(self, reactor: Any) -> None:
        self.watch = ParentWatch(reactor)

    def startService(self) -> None:
        super().startService()
        self.watch.startReading()

    def stopService(self) -> None:
        super().stopService()
        self.watch.stopReading()


class _Worker(ProcessProtocol):
    """One worker process, as the first process sees it: its log, its readiness and its end."""

    def __init__(self, workers: Workers, index: int) -> None:
        self.workers = workers
        self.index = index
        self.ready = False
        self.ended: Deferred[None] = Deferred()
        self._lines = {1: b"", 2: b""}

    @property
    def pid(self) -> int | None:
        return self.transport.pid if self.transport is not None else None

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = (self._lines.get(childFD, b"") + data).split(b"\n")
        self._lines[childFD] = lines.pop()
        for line in lines:
            self._line(childFD, line.decode("utf-8", "replace"))

    def _line(self, childFD: int, line: str) -> None:
        if not line.strip():
            return
        event = _event(line) if childFD == 1 else None
        if event is None:
            # Not a log event (stderr: an interpreter's traceback, a library's print).
            self.workers.log.warn("worker {worker}: {line}", worker=self.index, line=line)
            return
        event["worker"] = self.index
        event["log_system"] = f"worker {self.index} {event.get('log_namespace', '-')}#{_level_name(event)}"
        self.workers.log.observer(event)
        if event.get(READY) and not self.ready:
            self.ready = True
            self.workers.worker_ready(self)

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._lines.items():
            if rest:
                self._line(fd, rest.decode("utf-8", "replace"))
        self.workers.worker_ended(self, reason)
        self.ended.callback(None)


def _event(line: str) -> dict[str, Any] | None:
    """A worker's log event: jsonFileLogObserver writes each after a record separator (RS, 0x1e)."""
    try:
        event = eventFromJSON(line.lstrip("\x1e"))
    except ValueError:
        return None
    return event if isinstance(event, dict) and "log_namespace" in event and "log_time" in event else None


def _level_name(event: Mapping[str, Any]) -> str:
    level = event.get("log_level")
    return level.name if isinstance(level, type(LogLevel.info)) else "-"


class Workers(Service):
    """
    The first process's workers: started once its listeners listen, started
    again when one dies, stopped when it stops.

    Stopping is in two steps of the service tree so that the workers drain
    while the first process drains its own sessions: L{stopService} asks them (this
    service stands after the listeners, so it stops first); L{joined} is a
    step standing before the pool that waits for them to exit, so the
    database they use outlives them.
    """

    name = "workers"
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        count: int,
        listeners: Iterable[Any],
        environ: Mapping[str, str],
        *,
        database_url: str,
        ops: bool,
        stop_deadline: float,
    ) -> None:
        self.reactor = reactor
        self.count = count
        self.listeners = list(listeners)
        self.environ = dict(environ)
        self.database_url = database_url
        self.ops = ops
        self.stop_deadline = stop_deadline
        self.processes: dict[int, _Worker] = {}
        self.restarts = 0
        self._failures: dict[int, int] = {}
        self._pending: dict[int, Any] = {}
        self._all_ready: Deferred[None] | None = None
        self._folder: Path | None = None
        self.joined = _Joined(self)

    # --- starting

    def startService(self) -> Deferred[None]:
        super().startService()
        self._folder = Path(tempfile.mkdtemp(prefix="tradehub-workers-"))
        self._all_ready = Deferred()
        for index in range(1, self.count):
            self._spawn(index)
        return self._all_ready

    def ops_socket(self, index: int) -> Path | None:
        """Where worker C{index} serves /metrics for the first process to read, if the ops endpoint is on."""
        return self._folder / f"worker-{index}.sock" if self.ops and self._folder is not None else None

    def _spawn(self, index: int) -> None:
        self._pending.pop(index, None)
        worker = _Worker(self, index)
        # The child's descriptors 3, 4 ...: the listening sockets, as the parent's own descriptors.
        sockets = {listener.name: (3 + n, listener.port.fileno()) for n, listener in enumerate(self.listeners)}
        ops = self.ops_socket(index)
        env = dict(self.environ)
        env.update(
            {
                WORKER: str(index),
                SOCKETS: ",".join(f"{role}={child}" for role, (child, _) in sockets.items()),
                "DATABASE_URL": self.database_url,
                "TRADEHUB_LOG_FORMAT": "json",
                "TRADEHUB_OPS_ENDPOINT": f"unix:{ops}" if ops is not None else "",
            }
        )
        self.reactor.spawnProcess(
            worker,
            sys.executable,
            [sys.executable, "-P", "-c", TWISTD, "--nodaemon", "--pidfile=", "--logfile=-", "tradehub"],
            env=env,
            childFDs={0: "w", 1: "r", 2: "r", **dict(sockets.values())},
        )
        self.processes[index] = worker
        self.log.info("worker {worker} started (pid {pid})", worker=index, pid=worker.pid)

    def worker_ready(self, worker: _Worker) -> None:
        self._failures.pop(worker.index, None)
        self.log.info("worker {worker} ready", worker=worker.index)
        if self._all_ready is not None and all(w.ready for w in self.processes.values()):
            done, self._all_ready = self._all_ready, None
            done.callback(None)

    def worker_ended(self, worker: _Worker, reason: Failure) -> None:
        if self.processes.get(worker.index) is worker:
            del self.processes[worker.index]
        status = _status(reason)
        if not self.running:
            self.log.info("worker {worker} stopped ({status})", worker=worker.index, status=status)
            return
        if self._all_ready is not None:
            failed, self._all_ready = self._all_ready, None
            failed.errback(StartupError(f"worker {worker.index} ended before it was ready ({status})"))
            return
        failures = self._failures[worker.index] = self._failures.get(worker.index, 0) + 1
        delay = min(RESTART_DELAY * 2 ** (failures - 1), RESTART_DELAY_MAX)
        self.log.error(
            "worker {worker} ended ({status}); starting it again in {delay:.0f}s",
            worker=worker.index,
            status=status,
            delay=delay,
        )
        self.restarts += 1
        self._pending[worker.index] = self.reactor.callLater(delay, self._spawn, worker.index)

    # --- stopping

    def stopService(self) -> None:
        """Ask every worker to stop (they drain as this process does); L{joined} waits for them."""
        super().stopService()
        for call in self._pending.values():
            call.cancel()
        self._pending.clear()
        if self._all_ready is not None:
            # Stopped while starting: the tree's start goes on to its end, which is to stop.
            starting, self._all_ready = self._all_ready, None
            starting.callback(None)
        for worker in list(self.processes.values()):
            _signal(worker, "TERM")

    def _join(self) -> Deferred[Any]:
        """Fires once every worker exited; one still running after the deadline is killed."""
        waiting = [worker.ended for worker in self.processes.values()]
        late = self.reactor.callLater(self.stop_deadline + STOP_GRACE, self._kill_the_rest)
        done = DeferredList(waiting)

        def finished(result: Any) -> Any:
            if late.active():
                late.cancel()
            if self._folder is not None:
                shutil.rmtree(self._folder, ignore_errors=True)
            return result

        return done.addBoth(finished)

    def _kill_the_rest(self) -> None:
        for worker in self.processes.values():
            self.log.error("worker {worker} did not stop in time; killing it", worker=worker.index)
            _signal(worker, "KILL")

    # --- what the ops endpoint reads

    def describe(self) -> tuple[list[str], list[str]]:
        """The workers that serve, and those that do not (starting, or waiting to start again)."""
        up = [f"{w.index} (pid {w.pid})" for w in sorted(self.processes.values(), key=lambda w: w.index) if w.ready]
        down = [str(i) for i in range(1, self.count) if i not in self.processes or not self.processes[i].ready]
        return up, down


class _Joined(Service):
    """The step that waits for the workers to exit (see L{Workers})."""

    name = "workers-joined"

    def __init__(self, workers: Workers) -> None:
        self.workers = workers

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        return self.workers._join()


def _signal(worker: _Worker, name: str) -> None:
    try:
        if worker.transport is not None:
            worker.transport.signalProcess(name)
    except error.ProcessExitedAlready:
        pass


def _status(reason: Failure) -> str:
    value: Any = reason.value
    if getattr(value, "signal", None):
        return f"signal {value.signal}"
    return f"exit status {getattr(value, 'exitCode', '?')}"


class WorkerMetrics:
    """
    A collector for the first process's /metrics: its own series labelled
    C{worker="0"}, then each worker's, read from the worker's own /metrics
    and labelled with its number. prometheus_client renders /metrics in a
    thread, so reading the workers' blocks that thread, not the reactor.
    """

    def __init__(self, own: CollectorRegistry, workers: Workers) -> None:
        self.own = own
        self.workers = workers

    def collect(self) -> Iterator[Metric]:
        sources: list[tuple[str, Iterable[Metric]]] = [("0", self.own.collect())]
        for index in range(1, self.workers.count):
            path = self.workers.ops_socket(index)
            text = _scrape(path) if path is not None else None
            if text is not None:
                sources.append((str(index), text_string_to_metric_families(text)))
        yield from labelled(sources)
        up, _ = self.workers.describe()
        yield GaugeMetricFamily("tradehub_workers_serving", "Worker processes started and ready", value=len(up))
        yield CounterMetricFamily(
            "tradehub_worker_restarts", "Worker processes started again after they died", value=self.workers.restarts
        )


def labelled(sources: Iterable[tuple[str, Iterable[Metric]]]) -> list[Metric]:
    """One family per name, holding every source's samples with a C{worker} label naming the source."""
    families: dict[str, Metric] = {}
    for worker, metrics in sources:
        for metric in metrics:
            family = families.get(metric.name)
            if family is None:
                family = families[metric.name] = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            family.samples += [sample._replace(labels={**sample.labels, "worker": worker}) for sample in metric.samples]
    return list(families.values())


def _scrape(path: Path) -> str | None:
    """A worker's /metrics text over its unix socket, or None if it does not answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(SCRAPE_TIMEOUT)
            sock.connect(str(path))
            sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: worker\r\n\r\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError:
        return None
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n", 1)[0]:
        return None
    return body.decode("utf-8")
