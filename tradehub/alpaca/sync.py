"""
Keep the Alpaca tables in step with Alpaca: account, positions and orders
every few seconds, assets daily. Rows go through the controllers (so every
rule applies) as UPSERTs keyed like Alpaca's objects, so a repeated sync
changes nothing and duplicates nothing. A failing sync is logged and
remembered; it never stops the daemon.
"""

from twisted.application.service import Service
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..errors import Refused
from ..schema.model import SQLTable
from ..schema.timestamp import Timestamp
from .ledger import Ledger, one_by_one

# A reconciliation looks this far before the last event stored: Alpaca's
# `after` is exclusive and events of one instant may straddle it; what is
# fetched twice is stored once.
OVERLAP_NS = 5 * 10**9


class AlpacaSync(Service):
    name = "alpaca-sync"
    log = Logger()

    def __init__(self, alpaca, controllers, clock, every, assets_every, http_pool=None):
        self.alpaca = alpaca
        self.http_pool = http_pool
        self.clock = clock
        self.every = every
        self.assets_every = assets_every
        self.accounts = controllers[SQLTable.ACCOUNT]
        self.assets = controllers[SQLTable.ASSET]
        self.orders = controllers[SQLTable.ORDER]
        self.ledger = Ledger(controllers)
        self.account_id = None
        self.positions = controllers[SQLTable.POSITION]
        self.last_success = {}
        self.last_error = {}
        self._loops = []
        self._running = set()

    def startService(self):
        super().startService()
        for job, interval in ((self.sync_trading, self.every), (self.sync_assets, self.assets_every)):
            loop = LoopingCall(self._run, job)
            loop.clock = self.clock
            loop.start(interval, now=True)
            self._loops.append(loop)

    def _run(self, job):
        running = ensureDeferred(self._guarded(job))
        self._running.add(running)
        running.addBoth(self._finished, running)
        return running

    def _finished(self, result, running):
        self._running.discard(running)
        return result

    def stopService(self):
        """Stop the timers, let a sync under way finish (the pool closes after), close Alpaca connections."""
        super().stopService()
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        return ensureDeferred(self._stopped())

    async def _stopped(self):
        for running in list(self._running):
            await running
        if self.http_pool is not None:
            await self.http_pool.closeCachedConnections()

    async def _guarded(self, job):
        name = job.__name__
        try:
            changes = await job()
        except Exception as error:
            self.last_error[name] = (self.clock.seconds(), str(error))
            self.log.error("{job} failed: {error}", job=name, error=str(error))
            return
        self.last_success[name] = self.clock.seconds()
        if changes:
            self.log.info("{job}: {changes}", job=name, changes=", ".join(changes))

    async def sync_trading(self, since=None):
        """
        Account, then positions, then orders; returns what changed, for the
        log. C{since} (a Timestamp) reconciles a gap in the trading stream:
        the orders submitted and the executions made since then come too.
        """
        account = await self.alpaca.account()
        changes = await self._upsert(self.accounts, [account], "account", ignore=("updated_at",))
        self.account_id = account_id = account["id"]
        fetched = Timestamp.now()
        positions = await self.alpaca.positions(account_id)
        changes += await self._upsert(self.positions, positions, "positions", ignore=("updated_at",), since=fetched)
        changes += await self._forget_closed_positions(account_id, {p["symbol"] for p in positions}, fetched)
        orders, executions = await self._orders(account_id), []
        skipped = orders.skipped
        if since is not None:
            after = since.to_rfc3339()
            recent = await self.alpaca.orders(account_id, status="all", after=after)
            orders, skipped = orders + recent, skipped + recent.skipped
            executions = await self.alpaca.fills(after)
        recorded = await self.ledger.record(_unique(orders), executions)
        for reason in recorded.skipped:
            self.log.warn("alpaca sync skipped {reason}", reason=reason)
        skipped += len(recorded.skipped)
        return changes + recorded.summary() + ([f"orders: {skipped} skipped"] if skipped else [])

    async def reconcile(self, since):
        """
        After a gap in the trading stream whose last event stored was at
        C{since} (None: since the last update of an order stored, as after a
        restart): sync, with the orders and executions since then. Returns
        where it started and what changed.
        """
        if since is None:
            since = await self.orders.pool.transaction(self.orders.repository.last_reported)
        start = None if since is None else Timestamp(since.ns - OVERLAP_NS)
        return start, await self.sync_trading(since=start)

    async def sync_assets(self):
        return await self._upsert(self.assets, await self.alpaca.assets(), "assets", ignore=("updated_at",))

    async def _orders(self, account_id):
        """Open orders, and the final state of every order we hold as live that is no longer open."""
        orders = await self.alpaca.orders(account_id, status="open")
        seen = {o["id"] for o in orders}
        live = await self.orders.pool.transaction(self.orders.repository.live_at_alpaca)
        for alpaca_id in live:
            if alpaca_id not in seen:
                orders += await self.alpaca.order(alpaca_id, account_id)
        return orders

    async def _upsert(self, controller, rows, what, ignore=(), since=None):
        """
        Store the rows that differ from what is stored; with C{since} (when
        they were fetched), not over a row the trading stream moved after it.
        """
        skipped = getattr(rows, "skipped", 0)
        if not rows:
            return [f"{what}: {skipped} skipped"] if skipped else []
        existing = await controller.stored(rows)
        changed = [
            r
            for r in rows
            if _differs(existing.get(controller.table.key_of(r)), r, ignore)
            and not _moved_since(existing.get(controller.table.key_of(r)), since)
        ]
        if changed:
            try:
                await controller.upsert(changed)
            except Refused:
                done, refused = await one_by_one(changed, lambda row: controller.upsert([row]))
                changed = [row for row, _ in done]
                skipped += len(refused)
                for row, why in refused:
                    key = "+".join(str(row[k]) for k in controller.table.key)
                    self.log.warn("alpaca {what} {key} skipped: {why}", what=what, key=key, why=why.message)
        new = sum(1 for r in changed if controller.table.key_of(r) not in existing)
        counts = [f"{what}: {new} new, {len(changed) - new} changed"] if changed else []
        return counts + ([f"{what}: {skipped} skipped"] if skipped else [])

    async def _forget_closed_positions(self, account_id, open_symbols, since):
        held = await self.positions.pool.transaction(self.positions.repository.where_in, "account_id", [account_id])
        closed = [
            {"account_id": account_id, "symbol": p["symbol"]}
            for p in held
            if p["symbol"] not in open_symbols and not _moved_since(p, since)
        ]
        if not closed:
            return []
        await self.positions.delete(closed)
        return [f"positions: {len(closed)} closed"]


def _unique(orders):
    """Each order once (the open ones, the live ones by id and the recent ones overlap)."""
    return list({order["id"]: order for order in orders}.values())


def _moved_since(old, since):
    return since is not None and old is not None and old["updated_at"] > since


def _differs(old, new, ignore):
    if old is None:
        return True
    return any(old[name] != value for name, value in new.items() if name not in ignore and name in old)
