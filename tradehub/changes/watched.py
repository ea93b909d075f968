"""
The symbols that MARKET_TICK subscribers follow, on every hub sharing the
database: the hub that leads Alpaca's market-data stream subscribes for
them all, whichever hub they are connected to.

Each hub writes what its own subscribers follow into `watched_symbols`
(schema/0015) when it changes, and NOTIFYs the change channel; every hub
reads the union then, and every L{REFRESH} seconds, when it also refreshes
its own rows. A row older than L{STALE} seconds is a dead hub's: it counts
no more, and is removed. A hub's own symbols count at once, before any of
it reaches the database.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..db.pool import Pool
from ..repositories.changes import CHANNEL
from ..schema.model import SQLTable

REFRESH = 10.0
STALE = 30.0
# The NOTIFY payload on the change channel that says some hub's symbols changed.
CHANGED = "watched"

# One statement (a transaction of its own): this hub's row, the dead hubs' gone, and (changed) the NOTIFY.
# (The dead first: two hubs removing them while each holds its own row could deadlock.)
_WRITE = (
    "DELETE FROM watched_symbols WHERE seen_at <= now() - %s * interval '1 second';"
    " INSERT INTO watched_symbols (hub, table_name, symbols) VALUES (%s, %s, %s)"
    " ON CONFLICT (hub, table_name) DO UPDATE SET symbols = excluded.symbols, seen_at = now()"
)
_NOTIFY = "; SELECT pg_notify(%s, %s)"
_READ = (
    "SELECT table_name, array_agg(DISTINCT symbol) FROM watched_symbols, unnest(symbols) AS symbol"
    " WHERE seen_at > now() - %s * interval '1 second' GROUP BY table_name"
)
_FORGET_MINE = "DELETE FROM watched_symbols WHERE hub = %s"

Watcher = Callable[[frozenset[str]], None]


class WatchedSymbols:
    log = Logger()

    def __init__(self, pool: Pool, clock: IReactorTime, *, refresh: float = REFRESH, stale: float = STALE) -> None:
        self.hub = str(uuid.uuid4())
        self._pool = pool
        self._refresh = refresh
        self._stale = stale
        self._watchers: dict[SQLTable, list[Watcher]] = defaultdict(list)
        self._mine: dict[SQLTable, frozenset[str]] = defaultdict(frozenset)
        self._everyone: dict[SQLTable, frozenset[str]] = defaultdict(frozenset)
        self._told: dict[SQLTable, frozenset[str]] = {}
        self._changed = False  # this hub's symbols changed since it last wrote them
        self._due = False  # this hub's rows are due for a refresh
        self._syncing: Deferred[None] | None = None
        self._again = False
        self._started = False
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = clock

    def watch(self, table: SQLTable, watcher: Watcher) -> None:
        """Tell C{watcher(symbols)}, now and whenever they change, what the followers of C{table} on every hub name."""
        self._watchers[table].append(watcher)
        watcher(self.symbols(table))
        if self._started and not self._loop.running:
            self._loop.start(self._refresh, now=True)

    def symbols(self, table: SQLTable) -> frozenset[str]:
        return self._mine[table] | self._everyone[table]

    def followed_here(self, table: SQLTable, symbols: frozenset[str]) -> None:
        """This hub's followers of C{table} name C{symbols} now."""
        if not self._watchers.get(table) or symbols == self._mine[table]:
            return
        self._mine[table] = symbols
        self._tell()
        self._changed = True
        self.sync()

    def notified(self) -> None:
        """Another hub's symbols changed."""
        self.sync()

    # Sharing with the other hubs

    def start(self) -> None:
        self._started = True
        if self._watchers:
            self._loop.start(self._refresh, now=True)

    async def stop(self) -> None:
        self._started = False
        if self._loop.running:
            self._loop.stop()
        if self._syncing is not None:
            await self._syncing
        if self._watchers:
            try:
                await self._pool.query(_FORGET_MINE, (self.hub,))
            except Exception as error:
                self.log.warn("cannot remove this hub's watched symbols: {error}", error=str(error).strip())

    def refresh(self) -> Deferred[None]:
        """Refresh this hub's rows (and remove the dead hubs'), then read everyone's."""
        self._due = True
        return self.sync()

    def sync(self) -> Deferred[None]:
        """
        Write this hub's rows when they changed (NOTIFYing the others) or
        are due, then read everyone's. One at a time; asked again meanwhile,
        it runs once more.
        """
        if self._syncing is not None:
            self._again = True
            return self._syncing
        syncing = self._syncing = ensureDeferred(self._sync())
        return syncing

    async def _sync(self) -> None:
        try:
            while True:
                self._again = False
                changed, due = self._changed, self._due
                self._changed = self._due = False
                try:
                    if changed or due:
                        await self._write(changed)
                    rows = await self._pool.query(_READ, (self._stale,))
                except Exception as error:
                    self._changed, self._due = self._changed or changed, self._due or due
                    self.log.warn("cannot share the watched symbols: {error}", error=str(error).strip())
                    return
                self._everyone = defaultdict(frozenset, {SQLTable[name]: frozenset(s) for name, s in rows})
                self._tell()
                if not self._again:
                    return
        finally:
            self._syncing = None

    async def _write(self, changed: bool) -> None:
        for table in self._watchers:
            params = [self._stale, self.hub, table.name, sorted(self._mine[table])]
            statement = _WRITE + _NOTIFY if changed else _WRITE
            await self._pool.query(statement, [*params, CHANNEL, CHANGED] if changed else params)

    def _tell(self) -> None:
        for table, watchers in self._watchers.items():
            symbols = self.symbols(table)
            if self._told.get(table) != symbols:
                self._told[table] = symbols
                for watcher in watchers:
                    watcher(symbols)
