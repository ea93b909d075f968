"""
This hub's view of the change log.

Committed changes are numbered as they commit (this hub's transactions
number their own: the pool sends the numbering with each COMMIT), or by a
relay when changes wait ('pending' NOTIFYs, and a sweep for writers outside
any hub). The feed learns of the positions every hub numbered (NOTIFY),
reads the new changes of the tables someone follows once per window of
positions, and hands them to the live subscriptions. A subscription that is behind (it resumes from an old
position, or its client reads slowly) reads the log by itself until it
reaches the feed's head, then goes live: the head only moves once the
changes up to it were handed out, so nothing falls between the two.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import FirstError, ensureDeferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..db.failures import PoolClosed
from ..db.listener import Listener
from ..db.pool import Pool, prepared
from ..repositories.changes import CHANNEL, RELAY_BATCH, Change, ChangeLogRepository, Head
from ..schema.model import SQLTable
from . import watched
from .watched import WatchedSymbols

if TYPE_CHECKING:
    from ..controllers import TableController
    from .subscription import Subscription

# Positions read per live step.
WINDOW = 1_000


class Feed:
    log = Logger()

    def __init__(
        self,
        pool: Pool,
        repository: ChangeLogRepository,
        clock: IReactorTime,
        *,
        sweep: float = 1.0,
        retention: float = 7 * 86400.0,
        trim_every: float = 60.0,
    ) -> None:
        self.pool = pool
        self.repository = repository
        self.head = 0
        self._known = 0
        self._followers: dict[SQLTable, set[Subscription]] = defaultdict(set)
        self.watched = WatchedSymbols(pool, clock)
        self._relaying = False
        self._relay_again = False
        self._advancing = False
        self._retention = retention
        self._loops = [(LoopingCall(self.relay), sweep), (LoopingCall(self._trim), trim_every)]
        for loop, _ in self._loops:
            loop.clock = clock

    async def start(self) -> None:
        head = await self.read_head()
        self.head = self._known = head.last_position
        for loop, interval in self._loops:
            loop.start(interval, now=True).addErrback(lambda f: self.log.failure("change-log loop stopped", f))
        self.watched.start()

    async def stop(self) -> None:
        for loop, _ in self._loops:
            if loop.running:
                loop.stop()
        for followers in self._followers.values():
            for subscription in list(followers):
                subscription.end()
        await self.watched.stop()

    @property
    def known(self) -> int:
        """The last position this hub knows was given."""
        return self._known

    async def read_head(self) -> Head:
        [(last, trimmed)] = await self.pool.query(ChangeLogRepository.HEAD)
        return Head(last, trimmed)

    # Subscriptions

    def follow(self, subscription: Subscription) -> None:
        self._followers[subscription.table].add(subscription)
        self._followers_changed(subscription.table)

    def unfollow(self, subscription: Subscription) -> None:
        self._followers[subscription.table].discard(subscription)
        self._followers_changed(subscription.table)

    def watch_symbols(self, table: SQLTable, watcher: Callable[[frozenset[str]], None]) -> None:
        """
        Tell C{watcher(symbols)}, now and whenever they change, the symbols
        the followers of C{table} name, on this hub and every other one
        (Alpaca's market data follows them).
        """
        self.watched.watch(table, watcher)

    def _followers_changed(self, table: SQLTable) -> None:
        symbols = frozenset(s for f in self._followers[table] for s in f.filters.get("symbol", ()))
        self.watched.followed_here(table, symbols)

    # Numbering

    def relay(self) -> None:
        """Number what is committed; called after this hub's commits and by the sweep. Runs coalesced."""
        if self._relaying:
            self._relay_again = True
            return
        self._relaying = True
        ensureDeferred(self._relay()).addErrback(self._failed, "change-log relay failed")

    async def _relay(self) -> None:
        try:
            while True:
                self._relay_again = False
                await self.number()
                if not self._relay_again:
                    return
        finally:
            self._relaying = False

    async def number(self) -> int:
        """Number every change committed so far (by any writer); returns the last position."""
        while True:
            [(last,)] = await self.pool.query(ChangeLogRepository.RELAY, (RELAY_BATCH,))
            numbered = last - self._known
            self.learned(last)
            if numbered < RELAY_BATCH:
                return last

    def learned(self, last: int) -> None:
        """
        Positions up to C{last} exist (this hub's relay, or another hub's
        NOTIFY). Also the retry of a window whose read failed: every relay,
        the sweep's included, ends here.
        """
        self._known = max(self._known, last)
        if self.head < self._known and not self._advancing:
            self._advancing = True
            ensureDeferred(self._advance()).addErrback(self._failed, "change-log read failed")

    def _failed(self, failure: Failure, what: str) -> None:
        """A relay or read that failed; one the closing pool ended (a NOTIFY heard as the hub stops) is no failure."""
        error: Any = failure.value
        cause = error.subFailure if isinstance(error, FirstError) else failure
        if not cause.check(PoolClosed):
            self.log.failure(what, failure)

    def notified(self, notify: Any) -> None:
        """
        A NOTIFY on the change channel: the last position, that changes wait
        for a relay, or that some hub's watched symbols changed.
        """
        if notify.payload == ChangeLogRepository.PENDING:
            self.relay()
            return
        if notify.payload == watched.CHANGED:
            self.watched.notified()
            return
        try:
            last = int(notify.payload)
        except (TypeError, ValueError):
            return
        self.learned(last)

    # Handing changes out

    async def _advance(self) -> None:
        try:
            while self.head < self._known:
                start, through = self.head, min(self._known, self.head + WINDOW)
                tables = [t for t, followers in self._followers.items() if any(s.live for s in followers)]
                reads = [ensureDeferred(self.read(t, start, through, {}, WINDOW)) for t in tables]
                read = await gatherResults(reads, consumeErrors=True)
                self.head = through
                for table, changes in zip(tables, read, strict=True):
                    for subscription in list(self._followers[table]):
                        subscription.deliver(start, through, changes)
                for table, followers in self._followers.items():
                    if table not in tables:
                        for subscription in list(followers):
                            subscription.deliver(start, through, None)
        finally:
            self._advancing = False

    async def read(
        self, table: SQLTable, after: int, through: int, filters: Mapping[str, Sequence[Any]], limit: int
    ) -> list[Change]:
        """At most C{limit} changes of C{table} positioned in (after, through] that match C{filters}, in order."""
        statement, params = self.repository.changes_statement(table, after, through, filters, limit)
        return self.repository.changes(table, await self.pool.query(prepared(statement), params))

    async def _trim(self) -> None:
        removed = 1
        while removed:
            [(removed,)] = await self.pool.query(ChangeLogRepository.TRIM, (self._retention, RELAY_BATCH))
            if removed:
                self.log.info("change log: {count} changes past retention removed", count=removed)


def build_feed(
    pool: Pool,
    controllers: dict[SQLTable, TableController],
    dsn: str,
    reactor: Any,
    *,
    sweep: float,
    retention: float,
    connect_timeout: float,
) -> tuple[Feed, Listener]:
    """A hub's feed over the tables its controllers read, and the LISTEN connection that wakes it."""
    repository = ChangeLogRepository({table: controller.repository for table, controller in controllers.items()})
    feed = Feed(pool, repository, reactor, sweep=sweep, retention=retention)
    listener = Listener(
        dsn,
        CHANNEL,
        reactor=reactor,
        clock=reactor,
        notified=feed.notified,
        connected=feed.relay,
        connect_timeout=connect_timeout,
    )
    return feed, listener
