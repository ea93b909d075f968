"""
One hub at a time does what must not be done twice: it holds Alpaca's
streams (Alpaca allows one trading stream per key, and few market-data
connections) and runs the REST sync. The hubs that share a database and an
Alpaca key elect it with a session advisory lock, held on a connection of
its own: whoever holds the lock leads; the others try again every C{every}
seconds. A leader whose connection is lost, whose server does not answer
its check within C{timeout}, or whose session no longer holds the lock,
stops leading at once. The server ends the session of a leader that went
quiet (a frozen or cut-off hub): PostgreSQL 14+ after an idle
L{idle_session_timeout}, and TCP keepalives after a few seconds of silence
from a dead host, so the lock does not outlive its hub by long.

Two hubs may both lead for a moment (the server ended the old leader's
session before the old leader noticed). What they store is keyed by
Alpaca's ids, and an order never moves back, so such an overlap repeats
work and stores nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .listener import Listener

# Advisory locks taken with two keys: this class, and the hash of what is
# led (an Alpaca key id), so that hubs trading for other keys lead their own.
LOCK_CLASS = 0x5448_4C44
TRY = "SELECT pg_try_advisory_lock(%s, hashtext(%s))"
HOLDS = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    " AND classid = %s AND objid = hashtext(%s)::oid AND objsubid = 2 AND granted)"
)
# Each session of the lock's connection: the server ends it when it goes
# quiet, or when its peer's host does not answer keepalives.
SESSION = (
    "SELECT set_config('tcp_keepalives_idle', %(idle)s, false), set_config('tcp_keepalives_interval', '1', false),"
    " set_config('tcp_keepalives_count', '3', false);"
    " SELECT set_config('idle_session_timeout', %(quiet)s, false)"
    " WHERE current_setting('server_version_num')::int >= 140000"
)


def idle_session_timeout(every: float, timeout: float) -> float:
    """Seconds of silence after which the server ends a session: three missed checks, and one slow."""
    return 3 * every + timeout


class Leadership(MultiService):
    """
    Runs its children while this hub leads, in order, and stops them in
    reverse order when it no longer does. C{on_change(leading)} hears each change.
    """

    log = Logger()

    def __init__(
        self,
        name: str,
        dsn: str,
        key: str,
        *,
        reactor: Any,
        clock: IReactorTime,
        timeout: float,
        every: float = 2.0,
        on_change: Callable[[bool], None] = lambda leading: None,
    ) -> None:
        super().__init__()
        self.name = name
        self.leading = False
        # The last try for the lock, on the session open now, found another hub holding it.
        self.following = False
        self._key = key
        self._timeout = timeout
        self._on_change = on_change
        self._every = every
        self._connection = Listener(
            dsn,
            None,
            reactor=reactor,
            clock=clock,
            connected=self._check,
            lost=self._lost,
            connect_timeout=timeout,
            purpose=f"hold the {name} lock",
        )
        self._loop = LoopingCall(self._check)
        self._loop.clock = clock
        self._checking: Deferred[None] | None = None
        self._session = 0  # the connection's generation the session settings were made for
        self._settings = {
            "idle": str(max(1, round(timeout))),
            "quiet": f"{round(1000 * idle_session_timeout(every, timeout))}ms",
        }
        # Starting and stopping the children, one change after the other.
        self._changing: Deferred[None] = succeed(None)

    # The service: its children start only once it leads.

    def startService(self) -> Deferred[None]:
        Service.startService(self)
        return ensureDeferred(self._start())

    async def _start(self) -> None:
        """Fires once the first election is over (won, its children started, or lost)."""
        await self._connection.start()
        await self._check()
        await self._changing
        if self.running:
            self._loop.start(self._every, now=False)

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        if self._loop.running:
            self._loop.stop()
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        self._step_down("the hub stops")
        try:
            await self._changing
        finally:
            # The lock goes with the session.
            self._connection.stop()

    # The election

    def _check(self) -> Deferred[None]:
        """Take the lock, or (leading) make sure the session that holds it still answers."""
        if self._checking is not None:
            return self._checking
        checking = self._checking = ensureDeferred(self._checked())
        checking.addBoth(self._checked_done)
        return checking

    def _checked_done(self, result: Any) -> None:
        self._checking = None

    async def _checked(self) -> None:
        if not (self.running and self._connection.listening):
            return
        session = self._connection.generation
        try:
            if session != self._session:
                # A new session holds nothing yet.
                self._step_down("its session with PostgreSQL ended")
                await self._connection.query(SESSION, self._settings, timeout=self._timeout)
                self._session = session
            statement = HOLDS if self.leading else TRY
            [(held,)] = await self._connection.query(statement, (LOCK_CLASS, self._key), timeout=self._timeout)
        except Exception as error:
            # A lost session already stepped down (see _lost); anything else is tried next time.
            self.log.warn("{name}: the lock's check failed: {error}", name=self.name, error=str(error).strip())
            return
        if session != self._connection.generation or not self.running:
            return  # what that session held ended with it
        self.following = not (held or self.leading)
        if held and not self.leading:
            self._lead()
        elif self.leading and not held:
            self._step_down("its session no longer holds the lock")

    def _lost(self) -> None:
        self.following = False
        self._step_down("its connection to PostgreSQL was lost")

    # Leading

    def _lead(self) -> None:
        self.leading = True
        self.log.info("{name}: this hub leads", name=self.name)
        self._on_change(True)
        self._change(self._start_children)

    def _step_down(self, why: str) -> None:
        if not self.leading:
            return
        self.leading = False
        self.log.warn("{name}: this hub no longer leads: {why}", name=self.name, why=why)
        self._on_change(False)
        self._change(self._stop_children)

    def _change(self, change: Callable[[], Any]) -> None:
        self._changing = ensureDeferred(self._after(self._changing, change))

    @staticmethod
    async def _after(previous: Deferred[None], change: Callable[[], Any]) -> None:
        try:
            await previous
        except Exception:
            pass  # logged where it failed; the next change runs all the same
        await change()

    async def _start_children(self) -> None:
        for child in self:
            if not self.leading:
                return
            if child.running:
                continue
            try:
                await maybeDeferred(child.startService)
            except Exception:
                # Let another hub try: give the lock up with the session.
                self.log.failure("{name}: starting {child} failed", name=self.name, child=child.name)
                self._connection.reset()
                return

    async def _stop_children(self) -> None:
        for child in reversed(list(self)):
            if child.running:
                try:
                    await maybeDeferred(child.stopService)
                except Exception:
                    self.log.failure("{name}: stopping {child} failed", name=self.name, child=child.name)
