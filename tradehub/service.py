"""
The daemon's service tree.

Startup is a sequence where each step needs the one before it (the database
before the pool, the pool before the migrations, the schema before clients),
so the root starts its children one after another, waiting for each, and stops
them in reverse order, waiting for each. A step that fails stops what was
already started and the daemon exits non-zero.
"""

import atexit
import gc
import os
import signal
import socket
import sys
from typing import cast

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ReactorNotRunning
from twisted.internet.threads import deferToThread
from twisted.logger import ILogObserver, Logger

from .data_folder import DataFolderInUse
from .db.migrations import migrate
from .db.supervisor import Supervisor
from .repositories.changes import ChangeLogRepository


class SequentialService(MultiService):
    """
    Start children in order, each after the previous one's startService
    Deferred fired; stop them in reverse order, each after the next one stopped.
    """

    log = Logger()

    def __init__(self):
        super().__init__()
        self.started: Deferred[SequentialService] = Deferred()
        self._starting = None

    def startService(self):
        Service.startService(self)
        self._starting = ensureDeferred(self._start_children())
        self._starting.addErrback(self._startup_failed)
        return self._starting

    async def _start_children(self):
        for child in self:
            await maybeDeferred(child.startService)
            if not self.running:
                return
        self.started.callback(self)

    def _startup_failed(self, failure):
        if not failure.check(StartupError):
            self.log.failure("unexpected startup error", failure)
        self.log.error("startup failed: {error}", error=_one_line(failure.value))
        return self.stopService().addCallback(lambda _: self.startup_failed(failure))

    def startup_failed(self, failure):
        """Called once the started children are stopped again."""

    def stopService(self):
        if not self.running:
            return maybeDeferred(lambda: None)
        Service.stopService(self)
        return ensureDeferred(self._stop_children())

    async def _stop_children(self):
        for child in reversed(list(self)):
            if child.running:
                try:
                    await maybeDeferred(child.stopService)
                except Exception as error:
                    self.log.error("stopping {child} failed: {error}", child=child.name, error=_one_line(error))


class StartupError(Exception):
    """A startup step failed for a reason that needs no traceback."""


def _one_line(error):
    text = str(error).strip().replace("\n", " ") or type(error).__name__
    return text


class DataFolderService(Service):
    """
    Hold the data folder's lock while the daemon runs. The first step, so a
    second daemon on the same folder stops before it touches anything there.
    """

    name = "data-folder"

    def __init__(self, lock):
        self.lock = lock

    def startService(self):
        try:
            self.lock.acquire()
        except (DataFolderInUse, OSError) as error:
            raise StartupError(_one_line(error)) from None
        super().startService()

    def stopService(self):
        super().stopService()
        self.lock.release()


class EmbeddedPostgresService(Service):
    """
    Start the embedded cluster in a thread (it blocks), restart it should it
    die while the daemon runs, and stop it the same way at the end, unless it
    already ran at start. The data folder's lock proves no live daemon owns
    such a cluster (one killed with SIGKILL left it behind), so it is adopted;
    but a cluster this process did not start is left running.
    """

    name = "embedded-postgres"
    log = Logger()

    def __init__(self, cluster, clock):
        self.cluster = cluster
        self.adopted = False
        self.supervisor = Supervisor(clock, cluster.is_running, self._restart, self._give_up)

    def startService(self):
        super().startService()
        return deferToThread(self.cluster.start).addCallbacks(self._supervise, _wrap_startup_error)

    def _supervise(self, started):
        self._adopt_unless_started(started)
        self.supervisor.start()

    def _restart(self):
        # Whoever started the server again owns it: usually this daemon.
        return deferToThread(self.cluster.restart).addCallback(self._adopt_unless_started)

    def _adopt_unless_started(self, started):
        self.adopted = not started
        if self.adopted:
            self.log.info(
                "embedded PostgreSQL already running in {pgdata}: adopting it", pgdata=str(self.cluster.pgdata)
            )

    def _give_up(self, error):
        """The daemon cannot serve without its database: it stops, and exits 1."""
        hub = cast(HubService, self.parent)
        hub.fail(f"embedded PostgreSQL could not be restarted: {_one_line(error)}")

    def stopService(self):
        super().stopService()
        self.supervisor.stop()
        if self.adopted:
            self.log.info(
                "leaving the adopted embedded PostgreSQL running in {pgdata}: this daemon did not start it",
                pgdata=str(self.cluster.pgdata),
            )
            return None
        return deferToThread(self.cluster.stop)


class PoolService(Service):
    name = "pool"

    def __init__(self, pool):
        self.pool = pool

    def startService(self):
        super().startService()
        return ensureDeferred(self.pool.start()).addErrback(_wrap_startup_error, "cannot connect to PostgreSQL")

    def stopService(self):
        super().stopService()
        self.pool.close()


class MigrationService(Service):
    name = "migrations"

    def __init__(self, pool, folder):
        self.pool = pool
        self.folder = folder

    def startService(self):
        super().startService()
        return ensureDeferred(migrate(self.pool, self.folder)).addErrback(_wrap_startup_error)


class ChangeFeedService(Service):
    """
    The change log's side of the hub: this hub's transactions number their
    changes as they commit (the pool sends the numbering with each COMMIT),
    the feed hears every hub's numbering on the LISTEN connection, and hands
    changes to subscriptions.
    Stands before the sessions in the tree, so it stops once they drained.
    """

    name = "change-feed"

    def __init__(self, feed, listener, pool):
        self.feed = feed
        self.listener = listener
        self.pool = pool

    def startService(self):
        super().startService()
        return ensureDeferred(self._start()).addErrback(_wrap_startup_error, "cannot read the change log")

    async def _start(self):
        await self.feed.start()
        self.pool.commit_with(ChangeLogRepository.NUMBER_PENDING)
        await self.listener.start()

    def stopService(self):
        super().stopService()
        self.listener.stop()
        return ensureDeferred(self.feed.stop())


class SessionsService(Service):
    """
    Stands before the listeners in the tree, so it stops after they stopped
    accepting: it drains every open session before the pool may close.
    """

    name = "sessions"

    def __init__(self, factory, deadline):
        self.factory = factory
        self.deadline = deadline

    def stopService(self):
        super().stopService()
        return self.factory.drain(self.deadline)


class ListenerService(Service):
    """
    Listen on a server endpoint once started, or (in a worker) on the
    listening socket inherited as descriptor C{inherited}; stop accepting
    when stopped.
    """

    log = Logger()

    def __init__(self, name, reactor, description, factory, inherited=None):
        self.name = name
        self.reactor = reactor
        self.description = description
        self.factory = factory
        self.inherited = inherited
        self.port = None

    async def _listen(self):
        try:
            if self.inherited is not None:
                self.port = adopt(self.reactor, self.inherited, self.factory)
            else:
                self.port = await serverFromString(self.reactor, self.description).listen(self.factory)
        except Exception as error:
            raise StartupError(f"cannot listen on {self.description} for {self.name}: {error}") from None
        self.log.info("{name} listening on {address}", name=self.name, address=str(self.port.getHost()))

    def startService(self):
        super().startService()
        return ensureDeferred(self._listen())

    def stopService(self):
        super().stopService()
        if self.port is not None:
            return maybeDeferred(self.port.stopListening)


def adopt(reactor, descriptor, factory):
    """Listen on an inherited listening socket; the reactor keeps a duplicate, so this closes the original."""
    probe = socket.socket(fileno=descriptor)
    family = probe.family
    probe.detach()
    try:
        return reactor.adoptStreamPort(descriptor, family, factory)
    finally:
        os.close(descriptor)


_TAKES_BACKLOG = ("tcp", "tcp6", "ssl", "unix")


def with_backlog(description: str, backlog: int) -> str:
    """
    The endpoint with C{backlog} connections queued by the kernel, unless it
    sets its own: Twisted's default of 50 makes a burst of connects stall.
    """
    kind, _, rest = description.partition(":")
    if kind not in _TAKES_BACKLOG or any(part.startswith("backlog=") for part in rest.split(":")):
        return description
    return f"{description}:backlog={backlog}"


def _wrap_startup_error(failure, context=None):
    error = failure.value
    message = f"{context}: {_one_line(error)}" if context else _one_line(error)
    raise StartupError(message)


class HubService(SequentialService):
    """
    The root: database, pool, migrations, then listeners. Logs one ready line;
    on a startup failure, stops the reactor and makes the process exit 1.
    """

    def __init__(self, reactor, steps, ready_message, migrate_only=False, log_observer=None, exit=None):
        super().__init__()
        self.reactor = reactor
        self.exit = exit or exit_nonzero_when_done
        self.ready_message = ready_message
        self.migrate_only = migrate_only
        self.log_observer = log_observer
        for step in steps:
            step.setServiceParent(self)
        self.started.addCallback(self._ready)

    def startService(self):
        self.reactor.callLater(0, self._handle_stop_signals)
        return super().startService()

    def _handle_stop_signals(self):
        """
        SIGTERM and SIGINT ask for a clean stop whose exit status is 0.
        (twistd's own handlers make the process die by the signal afterwards.)
        """
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, self._stop_requested)

    def _stop_requested(self, number, frame):
        self.log.info("received {signal}, stopping", signal=signal.Signals(number).name)
        self.reactor.callFromThread(self._stop)

    def _stop(self):
        stop_reactor(self.reactor)

    def setServiceParent(self, parent):
        # twistd asks the application for an ILogObserver before its own
        # --logfile observer; this is how TRADEHUB_LOG_FORMAT reaches it.
        if self.log_observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)

    def _ready(self, _):
        if self.migrate_only:
            self.log.info("migrations applied; exiting (--migrate-only)")
            self.reactor.stop()
            return
        # What startup made (modules, compiled codecs) lives as long as the
        # process: out of every later collection, a full one pauses less.
        gc.freeze()
        # hub_ready: how a first process tells that its worker is up (tradehub.workers.READY).
        self.log.info("ready: {message}", message=self.ready_message, hub_ready=True)

    def fail(self, reason):
        """
        A step that breaks for good once the daemon runs (the embedded cluster
        that will not restart) stops it, and the process exits 1.
        """
        self.log.error("stopping: {reason}", reason=reason)
        self.exit(1)
        if self.running:
            self.reactor.stop()

    def startup_failed(self, failure):
        self.exit(1)
        # twistd starts the tree before it runs the reactor, so a step that
        # fails at once (the data folder's lock) fails before it runs.
        self.reactor.callWhenRunning(self.reactor.stop)


def stop_reactor(reactor):
    """
    Stop the reactor unless it is stopping already: a second reason to stop
    (a worker gets its process group's SIGTERM, its first process's, and may
    see that process go) is no error.
    """
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass


def exit_nonzero_when_done(status):
    """
    twistd always exits 0 once its reactor stops; a failed startup must not.
    This runs after twistd's own clean-up (pid file, log observers).
    """

    def exit_now():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)

    atexit.register(exit_now)
