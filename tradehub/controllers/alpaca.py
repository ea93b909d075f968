"""Rules of the Alpaca tables: accounts, assets, orders, positions and their trades."""

import re
from decimal import Decimal

import attrs

from ..alpaca.client import AlpacaRejected, AlpacaUnavailable
from ..db.failures import ROW_ERRORS, row_refusal
from ..errors import Busy, Conflict, Invalid, ServeAlone, invalid, not_found
from ..repositories.orders import OrderRepository
from ..schema.tables import (
    ACCOUNT,
    ASSET,
    FINAL_STATUSES,
    ORDER,
    ORDER_PROGRESS,
    POSITION,
    TRADE,
    report_may_move,
    status_may_move,
)
from .base import TableController

_CURRENCY = re.compile(r"^[A-Z]{3}$")


def _merge(parent, legs, answer):
    """Our rows with what Alpaca answered: its ids, statuses and times; legs matched by type."""
    alpaca_parent, *alpaca_legs = answer
    merged = [dict(parent, **_from_alpaca(alpaca_parent))]
    for leg in legs:
        match = next((a for a in alpaca_legs if a["type"] == leg["type"]), None)
        merged.append(dict(leg, **_from_alpaca(match)) if match else leg)
    return merged


def _from_alpaca(row):
    names = (
        "id",
        "asset_id",
        "status",
        "filled_qty",
        "filled_avg_price",
        "hwm",
        "created_at",
        "updated_at",
        "submitted_at",
        "filled_at",
        "expired_at",
        "canceled_at",
        "failed_at",
        "replaced_at",
    )
    return {name: row[name] for name in names}


# The command under which Alpaca's own reports of orders are stored.
REPORTED = "REPORTED"


@attrs.frozen
class Reported:
    """Orders as stored after Alpaca's report, and how many of them it added and changed."""

    rows: list
    new: int
    changed: int


def _news(old, new):
    """Whether Alpaca's report of an order says something the stored row does not, and is not behind it."""
    if old is None:
        return True
    if not report_may_move(old["status"], new["status"]):
        return False
    if new["filled_qty"] != old["filled_qty"]:
        return new["filled_qty"] > old["filled_qty"]
    forward = ORDER_PROGRESS[new["status"]] > ORDER_PROGRESS[old["status"]]
    # A move forward is news whatever its time (the hub's own clock stamped pending_new).
    if not forward and new["updated_at"] < old["updated_at"]:
        return False
    return any(old[name] != value for name, value in new.items() if name in old)


def _positive(row, index, *names):
    for name in names:
        if row[name] is not None and row[name] <= 0:
            raise invalid(index, name, "must be above 0")


class AccountController(TableController):
    table = ACCOUNT

    def rules(self, row, index):
        if not _CURRENCY.match(row["currency"]):
            raise invalid(index, "currency", "must be a three-letter upper-case code")
        if row["multiplier"] < 1:
            raise invalid(index, "multiplier", "must be at least 1")
        if row["multiplier"] == 1 and row["cash"] < 0:
            raise invalid(index, "cash", "must not be negative in a cash account (multiplier 1)")
        if row["daytrade_count"] < 0:
            raise invalid(index, "daytrade_count", "must not be negative")


class AssetController(TableController):
    table = ASSET

    def rules(self, row, index):
        _positive(row, index, "min_order_size", "min_trade_increment", "price_increment")


class OrderController(TableController):
    """
    Orders, and trading through the hub: an INSERT whose order says submit
    is stored as pending_new, submitted to Alpaca with its client_order_id,
    and answered only once Alpaca's answer is stored; an UPDATE to canceled
    of a submitted order cancels it at Alpaca first. C{broker} is the
    AlpacaClient, or None when no keys are configured.
    """

    table = ORDER
    repository_class = OrderRepository
    repository: OrderRepository
    # The asset whose price increment an order's prices must sit on: the
    # order's asset_id when it names one of its symbol's assets, else its
    # symbol's asset of its class.
    ASSET_OF_ROW = (
        "SELECT a.price_increment FROM asset a WHERE a.symbol = u.symbol"
        " AND (a.id = u.asset_id OR a.class = u.asset_class) ORDER BY a.id = u.asset_id DESC NULLS LAST LIMIT 1"
    )
    # What prepare() checks on INSERT, in the statement itself: an order is
    # one INSERT on its own, checked against the assets as they are when it
    # commits, whichever hub or writer changed them last.
    insert_guard = (
        f"NOT EXISTS (SELECT FROM ({ASSET_OF_ROW}) i WHERE u.limit_price %% i.price_increment <> 0"
        " OR u.stop_price %% i.price_increment <> 0 OR u.trail_price %% i.price_increment <> 0)"
    )
    # The same choice for rows a transaction checks: each row's price increment, in order.
    INCREMENTS = (
        f"SELECT ({ASSET_OF_ROW}) FROM unnest(%s::text[], %s::uuid[], %s::text[])"
        " WITH ORDINALITY AS u(symbol, asset_id, asset_class, n) ORDER BY n"
    )

    def echoes(self, rows, echo):
        """A submitted order is answered as stored: Alpaca set its id, status and times."""
        return echo or any(row["submit"] for row in rows)

    async def insert(self, rows, echo=True):
        if not any(row["submit"] for row in rows):
            return await super().insert(rows, echo)
        parent, legs = self._submission(self.checked(rows))
        await self._inserted(self.in_transaction(self._insert_or_resume), [parent, *legs])
        stored = {row["client_order_id"]: row for row in await self._submit(parent, legs)}
        return [stored[row["client_order_id"]] for row in rows]

    async def insert_batches(self, batches, echo=True):
        if any(row["submit"] for batch in batches for row in batch):
            raise ServeAlone()
        return await super().insert_batches(batches, echo)

    def _submission(self, rows):
        """The one order a submitting request may carry, and its legs."""
        if self.broker is None:
            raise invalid(0, "submit", "needs Alpaca: set APCA_API_KEY_ID and APCA_API_SECRET_KEY")
        parents = [r for r in rows if r["parent_client_order_id"] not in {o["client_order_id"] for o in rows}]
        if len(parents) != 1:
            raise invalid(0, "submit", "submit one order per request (a bracket, oco or oto order with its legs)")
        parent = parents[0]
        legs = [r for r in rows if r is not parent]
        for index, row in enumerate(rows):
            if not row["submit"]:
                raise invalid(index, "submit", "must be set on every row of a submitted order")
            row["status"], row["id"], row["filled_qty"] = "pending_new", None, Decimal(0)
        return parent, legs

    async def _insert_or_resume(self, cursor, rows, one_by_one):
        """
        Store new rows; a row already stored as pending_new by an earlier
        submission is a retry of it, and is submitted again rather than refused.
        """
        existing = await self.repository.locked(cursor, rows)
        fresh = []
        for index, row in enumerate(rows):
            old = existing.get(self.table.key_of(row))
            if old is None:
                fresh.append(row)
            elif not (old["submit"] and old["status"] == "pending_new"):
                raise Conflict(f"row {index}: order {row['client_order_id']} already exists ({old['status']})", index)
        return await self._insert(cursor, fresh, one_by_one) if fresh else []

    async def _submit(self, parent, legs):
        try:
            answer = await self.broker.submit(parent, legs, parent["account_id"])
        except AlpacaRejected as refusal:
            failed = [dict(row, status="rejected", status_message=refusal.message[:500]) for row in (parent, *legs)]
            await self.pool.transaction(self._update, failed)
            kind = Conflict if refusal.conflict else Invalid
            raise kind(f"row 0: Alpaca refused the order: {refusal.message}", 0) from None
        except AlpacaUnavailable as failure:
            raise Busy(
                f"Alpaca did not answer ({failure}): the order stays pending_new; "
                "send the same request again to resume (it is never submitted twice)"
            ) from None
        reported = await self.pool.transaction(self.reported_in, _merge(parent, legs, answer))
        return reported.rows

    async def reported_in(self, cursor, orders):
        """
        Alpaca's word on orders (its answers, its stream, the sync), stored
        where it says something new: an order never moves back, the orders
        the hub submitted keep its identities, and the checks made of what
        clients ask (price increments) are not made of what Alpaca accepted.
        """
        key_of = self.table.key_of
        orders, stored = await self._ours(cursor, orders)
        unknown = [order for order in orders if key_of(order) not in stored]
        if unknown:
            stored |= await self.repository.locked(cursor, unknown)
        news = [order for order in orders if _news(stored.get(key_of(order)), order)]
        written = await self._upsert(cursor, self.checked(news), True, REPORTED, stored) if news else []
        now = {**stored, **{key_of(row): row for row in written}}
        new = sum(1 for order in news if key_of(order) not in stored)
        return Reported([now[key_of(order)] for order in orders], new, len(news) - new)

    async def _ours(self, cursor, orders):
        """
        Orders the hub submitted keep their client_order_id (legs' ids are
        the hub's, not Alpaca's), their submit flag and parent, matched by
        Alpaca's id; or, while the hub waits for Alpaca's answer (its stream
        may speak first), by client_order_id, and legs by their type.
        Returns the orders so named, and the stored rows found by Alpaca's
        id, locked, by key (a fill's order is usually one: no second lookup).
        """
        known = await self.repository.locked_by_id(cursor, [o["id"] for o in orders])
        by_id = {
            str(row["id"]): [row["client_order_id"], row["submit"], row["parent_client_order_id"]] for row in known
        }
        waiting = [o for o in orders if o["id"] not in by_id]
        if waiting:
            submitted = {
                row["client_order_id"]: row
                for row in await self.repository.where_in(
                    cursor, "client_order_id", {o["client_order_id"] for o in waiting}
                )
                if row["submit"] and row["id"] is None
            }
            legs = await self.repository.where_in(cursor, "parent_client_order_id", set(submitted)) if submitted else []
            for order in waiting:
                row = submitted.get(order["client_order_id"])
                if row is None:
                    row = next(
                        (
                            leg
                            for leg in legs
                            if leg["id"] is None
                            and leg["parent_client_order_id"] == order["parent_client_order_id"]
                            and leg["type"] == order["type"]
                        ),
                        None,
                    )
                if row is not None:
                    legs = [leg for leg in legs if leg is not row]
                    by_id[order["id"]] = [row["client_order_id"], True, row["parent_client_order_id"]]
        renamed = {o["client_order_id"]: by_id[o["id"]][0] for o in orders if o["id"] in by_id}
        for order in orders:
            if order["id"] in by_id:
                order["client_order_id"], order["submit"], order["parent_client_order_id"] = by_id[order["id"]]
            elif order["parent_client_order_id"] in renamed:
                order["parent_client_order_id"] = renamed[order["parent_client_order_id"]]
        return orders, {self.table.key_of(row): row for row in known}

    async def update(self, rows):
        rows = self.checked(rows)
        if self.broker is not None:
            await self._cancel_at_alpaca(rows)
        return await self.pool.transaction(self._update, rows)

    async def _cancel_at_alpaca(self, rows):
        """Cancels of submitted orders go to Alpaca first; its answer decides the stored status."""
        existing = await self.stored(rows)
        for index, row in enumerate(rows):
            old = existing.get(self.table.key_of(row))
            if not (
                old
                and old["submit"]
                and old["id"]
                and row["status"] == "canceled"
                and old["status"] not in FINAL_STATUSES
            ):
                continue
            try:
                await self.broker.cancel(old["id"])
                [now] = (await self.broker.order(old["id"], old["account_id"]))[:1]
            except AlpacaRejected as refusal:
                raise invalid(index, "status", f"Alpaca would not cancel: {refusal.message}") from None
            except AlpacaUnavailable as failure:
                raise Busy(f"row {index}: Alpaca did not answer the cancel ({failure})", index) from None
            for name in ("id", "status", "updated_at", "canceled_at", "filled_qty", "filled_avg_price", "filled_at"):
                row[name] = now[name]

    def rules(self, row, index):
        if (row["qty"] is None) == (row["notional"] is None):
            raise invalid(index, "qty", "exactly one of qty and notional must be given")
        if row["notional"] is not None and (row["type"], row["time_in_force"]) != ("market", "day"):
            raise invalid(index, "notional", "is only allowed for market orders with time_in_force day")
        kind = row["type"]
        if kind in ("limit", "stop_limit") and row["limit_price"] is None:
            raise invalid(index, "limit_price", f"is required for {kind} orders")
        if kind in ("stop", "stop_limit") and row["stop_price"] is None:
            raise invalid(index, "stop_price", f"is required for {kind} orders")
        if kind == "trailing_stop" and (row["trail_price"] is None) == (row["trail_percent"] is None):
            raise invalid(
                index, "trail_price", "trailing_stop orders need exactly one of trail_price and trail_percent"
            )
        _positive(row, index, "qty", "notional", "limit_price", "stop_price", "trail_price", "trail_percent")
        if row["filled_qty"] < 0:
            raise invalid(index, "filled_qty", "must not be negative")
        if row["qty"] is not None and row["filled_qty"] > row["qty"]:
            raise invalid(index, "filled_qty", f"must not exceed qty {row['qty']}")
        if row["parent_client_order_id"] == row["client_order_id"]:
            raise invalid(index, "parent_client_order_id", "must name another order")

    async def prepare(self, cursor, rows, command, existing):
        if command == REPORTED:
            return  # reported_in keeps only what may move, at prices Alpaca accepted
        for index, row in enumerate(rows):
            old = existing.get(self.table.key_of(row))
            if old is not None and not status_may_move(old["status"], row["status"]):
                raise invalid(index, "status", f"may not move from {old['status']} to {row['status']}")
        await self._check_price_increments(cursor, rows)

    async def _check_price_increments(self, cursor, rows):
        """Name the row and price that L{insert_guard} refuses."""
        columns = ([row[name] for row in rows] for name in ("symbol", "asset_id", "asset_class"))
        await cursor.execute(self.INCREMENTS, tuple(columns))
        for index, (row, (increment,)) in enumerate(zip(rows, cursor.fetchall(), strict=True)):
            for name in ("limit_price", "stop_price", "trail_price"):
                price = row[name]
                if increment and price is not None and price % increment:
                    raise invalid(
                        index,
                        name,
                        f"{price} is not a multiple of {row['symbol']}'s price increment {increment.normalize():f}",
                    )

    def deletable(self, row, index):
        if row["status"] not in FINAL_STATUSES:
            raise Conflict(
                f"row {index}: order {row['client_order_id']} is live ({row['status']}): "
                "cancel it with an UPDATE to status canceled instead",
                index,
            )


class PositionController(TableController):
    table = POSITION

    def rules(self, row, index):
        qty = row["qty"]
        if (row["side"] == "long" and qty < 0) or (row["side"] == "short" and qty > 0):
            raise invalid(index, "side", f"{row['side']} disagrees with the sign of qty {qty}")
        if qty != 0 and row["avg_entry_price"] <= 0:
            raise invalid(index, "avg_entry_price", "must be above 0 while qty is not 0")


class TradeController(TableController):
    """Each fill moves its order's filled_qty, filled_avg_price and status in the same transaction."""

    table = TRADE
    orders = OrderRepository(ORDER)

    def rules(self, row, index):
        _positive(row, index, "qty", "price")
        if row["fee"] < 0:
            raise invalid(index, "fee", "must not be negative")

    async def prepare(self, cursor, rows, command, existing):
        if command != "INSERT":
            raise Invalid(f"trades are executions: {command} would leave their orders' fills wrong; insert corrections")
        orders = await self.orders.where_in(cursor, "client_order_id", {row["client_order_id"] for row in rows})
        by_id = {o["client_order_id"]: o for o in orders}
        for index, row in enumerate(rows):
            order = by_id.get(row["client_order_id"])
            if order is None:
                raise not_found(index, "order", "client_order_id", row["client_order_id"])
            for name in ("symbol", "side"):
                if row[name] != order[name]:
                    raise invalid(index, name, f"{row[name]} disagrees with its order's {order[name]}")

    def deletable(self, row, index):
        raise invalid(index, "id", "is an execution: deleting it would leave its order's fills wrong")

    async def record_in(self, cursor, rows):
        """
        Executions Alpaca reported with their orders' state, which the caller
        stored in this transaction and made these rows from (so they name a
        stored order, with its symbol and side): each is stored once (an id
        already stored is a repeat), and its order is not moved again, since
        Alpaca's filled quantity and average price are already its own.
        Returns those stored.
        """
        key_of = self.table.key_of
        rows = list({key_of(row): row for row in self.checked(rows)}.values())
        # One statement each: stored unless its id is (a repeat), which the RETURNING leaves out.
        inserted = {key_of(row) for row in await self._write(cursor, rows, self.repository.insert_new, True)}
        return [row for row in rows if key_of(row) in inserted]

    async def written(self, cursor, rows, command):
        for index, row in enumerate(rows):
            try:
                await self.orders.apply_fill(cursor, row)
            except ROW_ERRORS as error:
                raise row_refusal(error, index) from None
