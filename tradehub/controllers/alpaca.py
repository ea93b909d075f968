"""Rules of the Alpaca tables: accounts, assets, orders, positions and their trades."""

import re

from ..errors import invalid, not_found, row_error
from ..protocol.enums import ErrorCode, SQLCommand
from ..protocol.errors import ProtocolError
from ..protocol.tables import ACCOUNT, ASSET, ORDER, POSITION, TRADE
from ..repositories.orders import OrderRepository
from ..repositories.table import Repository
from .base import ROW_ERRORS, TableController, key_tuple

_CURRENCY = re.compile(r"^[A-Z]{3}$")

# How far along its life an order is: a status may only stay or move up, and
# a final status never changes.
ORDER_PROGRESS = {
    "pending_new": 0,
    "accepted_for_bidding": 1,
    "new": 1,
    "accepted": 1,
    "held": 1,
    "suspended": 1,
    "calculated": 2,
    "partially_filled": 2,
    "pending_cancel": 2,
    "pending_replace": 2,
    "stopped": 2,
    "done_for_day": 2,
    "filled": 3,
    "canceled": 3,
    "expired": 3,
    "replaced": 3,
    "rejected": 3,
}
FINAL_STATUSES = frozenset(s for s, progress in ORDER_PROGRESS.items() if progress == 3)


def status_may_move(old, new):
    return old == new or (old not in FINAL_STATUSES and ORDER_PROGRESS[new] >= ORDER_PROGRESS[old])


def _positive(row, index, *names):
    for name in names:
        if row[name] is not None and row[name] <= 0:
            raise invalid(index, name, "must be above 0")


class AccountController(TableController):
    def __init__(self, pool):
        super().__init__(ACCOUNT, pool)

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
    def __init__(self, pool):
        super().__init__(ASSET, pool)

    def rules(self, row, index):
        _positive(row, index, "min_order_size", "min_trade_increment", "price_increment")


class OrderController(TableController):
    def __init__(self, pool):
        super().__init__(ORDER, pool)
        self.repository = OrderRepository(ORDER)
        self.assets = Repository(ASSET)

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
            raise invalid(index, "trail_price", "trailing_stop orders need exactly one of trail_price and trail_percent")
        _positive(row, index, "qty", "notional", "limit_price", "stop_price", "trail_price", "trail_percent")
        if row["filled_qty"] < 0:
            raise invalid(index, "filled_qty", "must not be negative")
        if row["qty"] is not None and row["filled_qty"] > row["qty"]:
            raise invalid(index, "filled_qty", f"must not exceed qty {row['qty']}")
        if row["parent_client_order_id"] == row["client_order_id"]:
            raise invalid(index, "parent_client_order_id", "must name another order")

    async def prepare(self, cursor, rows, command, existing):
        for index, row in enumerate(rows):
            old = existing.get(key_tuple(self.spec, row))
            if old is not None and not status_may_move(old["status"], row["status"]):
                raise invalid(index, "status", f"may not move from {old['status']} to {row['status']}")
        await self._check_price_increments(cursor, rows)

    async def _check_price_increments(self, cursor, rows):
        assets = await self.assets.where_in(cursor, "symbol", {row["symbol"] for row in rows})
        by_id = {a["id"]: a for a in assets}
        by_symbol = {(a["class"], a["symbol"]): a for a in assets}
        for index, row in enumerate(rows):
            asset = by_id.get(row["asset_id"]) or by_symbol.get((row["asset_class"], row["symbol"]))
            increment = asset and asset["price_increment"]
            if not increment:
                continue
            for name in ("limit_price", "stop_price", "trail_price"):
                price = row[name]
                if price is not None and price % increment:
                    raise invalid(index, name, f"{price} is not a multiple of {asset['symbol']}'s price increment {increment}")

    def deletable(self, row, index):
        if row["status"] not in FINAL_STATUSES:
            raise ProtocolError(
                ErrorCode.CONFLICT,
                f"row {index}: order {row['client_order_id']} is live ({row['status']}): "
                "cancel it with an UPDATE to status canceled instead",
                row_index=index,
            )


class PositionController(TableController):
    def __init__(self, pool):
        super().__init__(POSITION, pool)

    def rules(self, row, index):
        qty = row["qty"]
        if (row["side"] == "long" and qty < 0) or (row["side"] == "short" and qty > 0):
            raise invalid(index, "side", f"{row['side']} disagrees with the sign of qty {qty}")
        if qty != 0 and row["avg_entry_price"] <= 0:
            raise invalid(index, "avg_entry_price", "must be above 0 while qty is not 0")


class TradeController(TableController):
    """Each fill moves its order's filled_qty, filled_avg_price and status in the same transaction."""

    def __init__(self, pool):
        super().__init__(TRADE, pool)
        self.orders = OrderRepository(ORDER)

    def rules(self, row, index):
        _positive(row, index, "qty", "price")
        if row["fee"] < 0:
            raise invalid(index, "fee", "must not be negative")

    async def prepare(self, cursor, rows, command, existing):
        if command is not SQLCommand.INSERT:
            raise ProtocolError(
                ErrorCode.VALIDATION_FAILED,
                f"trades are executions: {command.name} would leave their orders' fills wrong; insert corrections",
            )
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

    async def written(self, cursor, rows, command):
        for index, row in enumerate(rows):
            try:
                await self.orders.apply_fill(cursor, row)
            except ROW_ERRORS as error:
                raise row_error(error, index) from None
