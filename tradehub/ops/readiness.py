"""
What /readyz reports: whether each part the hub needs to serve its clients
is ready. Every part is checked at once and each within a timeout, so the
answer never waits on a database that does not answer.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError, ensureDeferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from ..alpaca.sync import AlpacaSync
from ..alpaca.trade_updates import TradeUpdates
from ..db.leadership import Leadership
from ..db.migrations import applied_versions, discover
from ..db.pool import Pool
from ..server.connection import describe
from ..service import ListenerService
from ..workers import Workers

# Seconds a check may take before its part is reported not ready: about a
# load balancer's or Kubernetes' own probe timeout (one second by default).
CHECK_TIMEOUT = 1.0

# A check returns what it saw when its part is ready, and raises when not.
Check = Callable[[], Coroutine[Any, Any, str]]


class NotReady(Exception):
    """A part answered, and is not ready; str() says why."""


class Degraded(Exception):
    """
    A part works, less well than it should: the hub stays ready (serving
    its clients), and the part says what is missing; str() says what.
    """


class Readiness:
    """Each part's check, run together, each bounded by C{timeout} seconds on C{clock}."""

    def __init__(self, clock: IReactorTime, timeout: float, checks: Mapping[str, Check]) -> None:
        self._clock = clock
        self._timeout = timeout
        self._checks = {name: _OneRunAtATime(check) for name, check in checks.items()}

    async def report(self) -> dict[str, dict[str, Any]]:
        """Each part's name, mapped to C{{"ready": bool, "detail": what the check saw, or why not}}."""
        parts = await gatherResults([self._outcome(check()) for check in self._checks.values()])
        return dict(zip(self._checks, parts, strict=True))

    def _outcome(self, running: Deferred[str]) -> Deferred[dict[str, Any]]:
        running.addTimeout(self._timeout, self._clock)
        return running.addCallbacks(self._ready, self._not_ready)

    @staticmethod
    def _ready(detail: str) -> dict[str, Any]:
        return {"ready": True, "detail": detail}

    def _not_ready(self, failure: Failure) -> dict[str, Any]:
        if failure.check(Degraded):
            return {"ready": True, "degraded": True, "detail": str(failure.value)}
        if failure.check(TimeoutError):
            detail = f"no answer within {self._timeout:g}s"
        else:
            detail = " ".join(str(failure.value).split()) or type(failure.value).__name__
        return {"ready": False, "detail": detail}


class _OneRunAtATime:
    """
    A check that runs once at a time: a probe that comes while it runs waits
    for that same run. A probe that stops waiting (its timeout) leaves the run
    going: cancelling a pool query could lose its connection, and a database
    that does not answer then gets one query at a time, not one per probe.
    """

    def __init__(self, check: Check) -> None:
        self._check = check
        self._waiting: list[Deferred[str]] | None = None

    def __call__(self) -> Deferred[str]:
        waiter: Deferred[str] = Deferred()
        if self._waiting is not None:
            self._waiting.append(waiter)
            return waiter
        self._waiting = [waiter]
        ensureDeferred(self._check()).addBoth(self._finished)
        return waiter

    def _finished(self, outcome: str | Failure) -> None:
        waiting, self._waiting = self._waiting or [], None
        for waiter in waiting:
            if isinstance(outcome, Failure):
                waiter.errback(outcome)
            else:
                waiter.callback(outcome)


def database(pool: Pool) -> Check:
    """The database answers a query through the pool."""

    async def check() -> str:
        await pool.query("SELECT 1")
        return "answers SELECT 1"

    return check


def migrations(pool: Pool, folder: Path) -> Check:
    """The database has exactly the migrations in C{folder} applied."""

    async def check() -> str:
        available = [migration.version for migration in discover(folder)]
        applied = await applied_versions(pool)
        pending = sorted(set(available) - set(applied))
        unknown = sorted(set(applied) - set(available))
        if pending:
            raise NotReady(f"not applied: {_versions(pending)}")
        if unknown:
            raise NotReady(f"the database has {_versions(unknown)}, which this tradehub does not")
        return f"all {len(applied)} applied"

    return check


def listening(listeners: Sequence[ListenerService]) -> Check:
    """Every client listener accepts connections."""

    async def check() -> str:
        up, down = [], []
        for listener in listeners:
            port = listener.port
            if listener.running and port is not None:
                up.append(f"{listener.name} on {describe(port.getHost())}")
            else:
                down.append(f"{listener.name}")
        if down:
            raise NotReady(f"not listening: {', '.join(down)}")
        return ", ".join(up)

    return check


# What a hub that does not lead says of the sync and the streams it does not run.
FOLLOWING = "another hub leads the Alpaca sync and streams; this one takes over if it dies"
NO_LEADER = "this hub cannot reach PostgreSQL to hold or contest the Alpaca lead; no hub may be syncing"


def _following(leadership: Leadership | None) -> bool:
    """True when another hub leads; raises L{Degraded} when this hub cannot tell."""
    if leadership is None or leadership.leading:
        return False
    if leadership.following:
        return True
    raise Degraded(NO_LEADER)


def alpaca(sync: AlpacaSync, leadership: Leadership | None = None) -> Check:
    """
    Alpaca answered the last sync of account, positions and orders. A probe
    reads the sync's outcome rather than calling Alpaca, so that probing
    spends nothing of Alpaca's rate limit.
    """
    job = sync.sync_trading.__name__

    async def check() -> str:
        if _following(leadership):
            return FOLLOWING
        succeeded = sync.last_success.get(job)
        failed = sync.last_error.get(job)
        if failed is not None and (succeeded is None or failed[0] >= succeeded):
            raise NotReady(f"the last sync failed: {failed[1]}")
        if succeeded is None:
            raise NotReady("no sync has finished yet")
        return f"the last sync succeeded {sync.clock.seconds() - succeeded:.0f}s ago"

    return check


def trade_stream(updates: TradeUpdates, leadership: Leadership | None = None) -> Check:
    """
    The trading stream is up and reconciled. While it is not, the hub is
    degraded, not unready: orders are still submitted, and fills still
    reach it through the REST sync, only later.
    """

    async def check() -> str:
        if _following(leadership):
            return FOLLOWING
        if not updates.trusted:
            raise Degraded(updates.describe())
        return updates.describe()

    return check


def serving(workers: Workers) -> Check:
    """Every worker process runs and is ready (TRADEHUB_WORKERS)."""

    async def check() -> str:
        up, down = workers.describe()
        if down:
            raise NotReady(f"not serving: worker {', '.join(down)}")
        return f"{len(up)} more workers serving: {', '.join(up)}"

    return check


def hub_readiness(
    clock: IReactorTime,
    pool: Pool,
    schema: Path,
    listeners: Sequence[ListenerService],
    leadership: Leadership | None = None,
    sync: AlpacaSync | None = None,
    trade_updates: TradeUpdates | None = None,
    workers: Workers | None = None,
) -> Readiness:
    """
    The daemon's parts: its database, its schema, its client listeners and,
    when configured, Alpaca (the sync and the stream of the hub that leads)
    and its worker processes.
    """
    checks = {"database": database(pool), "migrations": migrations(pool, schema), "listeners": listening(listeners)}
    if sync is not None:
        checks["alpaca"] = alpaca(sync, leadership)
    if trade_updates is not None:
        checks["alpaca_trade_stream"] = trade_stream(trade_updates, leadership)
    if workers is not None:
        checks["workers"] = serving(workers)
    return Readiness(clock, CHECK_TIMEOUT, checks)


def _versions(versions: list[int]) -> str:
    return ", ".join(f"{version:04d}" for version in versions)
