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

from ..schema.model import SQLTable


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

    async def sync_trading(self):
        """Account, then positions, then orders; returns what changed, for the log."""
        account = await self.alpaca.account()
        changes = await self._upsert(self.accounts, [account], "account", ignore=("updated_at",))
        account_id = account["id"]
        positions = await self.alpaca.positions(account_id)
        changes += await self._upsert(self.positions, positions, "positions", ignore=("updated_at",))
        changes += await self._forget_closed_positions(account_id, {p["symbol"] for p in positions})
        changes += await self._upsert(self.orders, await self._orders(account_id), "orders")
        return changes

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
        return await self._keep_our_identities(orders)

    async def _keep_our_identities(self, orders):
        """
        Rows the hub submitted keep their client_order_id (legs' ids are ours,
        not Alpaca's) and their submit flag, matched by Alpaca's order id.
        """
        ids = [o["id"] for o in orders]
        if not ids:
            return orders
        by_id = await self.orders.pool.transaction(self.orders.repository.identities, ids)
        renamed = {o["client_order_id"]: by_id[o["id"]][0] for o in orders if o["id"] in by_id}
        for order in orders:
            if order["id"] in by_id:
                order["client_order_id"], order["submit"], order["parent_client_order_id"] = by_id[order["id"]]
            elif order["parent_client_order_id"] in renamed:
                order["parent_client_order_id"] = renamed[order["parent_client_order_id"]]
        return orders

    async def _upsert(self, controller, rows, what, ignore=()):
        if not rows:
            return []
        existing = await controller.stored(rows)
        changed = [r for r in rows if _differs(existing.get(controller.table.key_of(r)), r, ignore)]
        if not changed:
            return []
        await controller.upsert(changed)
        new = sum(1 for r in changed if controller.table.key_of(r) not in existing)
        return [f"{what}: {new} new, {len(changed) - new} changed"]

    async def _forget_closed_positions(self, account_id, open_symbols):
        held = await self.positions.pool.transaction(self.positions.repository.where_in, "account_id", [account_id])
        closed = [{"account_id": account_id, "symbol": p["symbol"]} for p in held if p["symbol"] not in open_symbols]
        if not closed:
            return []
        await self.positions.delete(closed)
        return [f"positions: {len(closed)} closed"]


def _differs(old, new, ignore):
    if old is None:
        return True
    return any(old[name] != value for name, value in new.items() if name not in ignore and name in old)
