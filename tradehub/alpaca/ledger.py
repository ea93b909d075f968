"""
Alpaca's word on the account's orders, executions and positions, stored
through the controllers' rules: from the trading stream one event at a
time, from the REST sync and the reconciliation after a gap a batch at a
time. Each report is one transaction, so an order, its fill and the
position it moved are stored together or not at all, and together they
reach subscribers through the change log.

Reports arrive late and twice (the stream and REST overlap), so:
an order report behind the stored row changes nothing; an execution
already stored is not stored again; and an order's filled quantity and
average price are always Alpaca's own, never summed by the hub, so no
overlap can count a fill twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any

import attrs

from ..errors import Refused
from ..repositories.table import Row
from ..schema.model import SQLTable
from ..schema.timestamp import Timestamp

NANO = Decimal("1e-9")


@attrs.frozen
class Execution:
    """One fill of the Alpaca order C{order_id}: a TRADE row but for its order, which the ledger fills in."""

    order_id: str
    id: str
    qty: Decimal
    price: Decimal
    executed_at: Timestamp


@attrs.frozen
class PositionReport:
    """The stream's word on a position after a fill: its new quantity (negative when short)."""

    account_id: str
    symbol: str
    qty: Decimal
    price: Decimal
    asset_id: str | None
    asset_class: str
    at: Timestamp


@attrs.define
class Recorded:
    """What a report changed: for the log lines."""

    new_orders: int = 0
    changed_orders: int = 0
    executions: int = 0
    positions: int = 0
    skipped: list[str] = attrs.field(factory=list)

    def add(self, other: Recorded) -> None:
        self.new_orders += other.new_orders
        self.changed_orders += other.changed_orders
        self.executions += other.executions
        self.positions += other.positions
        self.skipped += other.skipped

    def summary(self) -> list[str]:
        parts = []
        if self.new_orders or self.changed_orders:
            parts.append(f"orders: {self.new_orders} new, {self.changed_orders} changed")
        if self.executions:
            parts.append(f"trades: {self.executions} new")
        if self.positions:
            parts.append(f"positions: {self.positions} moved")
        return parts


class Ledger:
    def __init__(self, controllers: dict[SQLTable, Any]) -> None:
        self.orders = controllers[SQLTable.ORDER]
        self.trades = controllers[SQLTable.TRADE]
        self.positions = controllers[SQLTable.POSITION]

    @property
    def pool(self) -> Any:
        return self.orders.pool

    async def record(
        self, orders: list[Row], executions: Sequence[Execution] = (), positions: Sequence[PositionReport] = ()
    ) -> Recorded:
        """
        Store one report (orders as Alpaca last saw them, their executions,
        moved positions). When the rules refuse an order, the others are
        stored each on its own, then the executions and positions (facts all
        the same, stored if their orders are), and the refused one is named
        in C{skipped}.
        """
        try:
            return await self.pool.transaction(self._record, orders, list(executions), list(positions))
        except Refused:
            if not orders:
                raise
        done, refused = await one_by_one(orders, lambda order: self.pool.transaction(self._record, [order], [], []))
        recorded = Recorded()
        for _, each in done:
            recorded.add(each)
        recorded.skipped += [f"order {order['client_order_id']}: {why.message}" for order, why in refused]
        if executions or positions:
            recorded.add(await self.pool.transaction(self._record, [], list(executions), list(positions)))
        return recorded

    async def _record(self, cursor, orders, executions, positions) -> Recorded:
        recorded = Recorded()
        known: dict[str, Row] = {}
        if orders:
            reported = await self.orders.reported_in(cursor, orders)
            recorded.new_orders, recorded.changed_orders = reported.new, reported.changed
            known = {str(order["id"]): order for order in reported.rows if order["id"]}
        if executions:
            recorded.executions = len(await self._executions(cursor, executions, known, recorded))
        for report in positions:
            recorded.positions += await self._position(cursor, report)
        return recorded

    async def _executions(
        self, cursor, executions: list[Execution], known: dict[str, Row], recorded: Recorded
    ) -> list[Row]:
        """
        TRADE rows for the executions of stored orders (C{known} by Alpaca
        id: those of this report), each stored once; an unknown order's are skipped.
        """
        missing = {e.order_id for e in executions} - set(known)
        by_alpaca_id = dict(known)
        if missing:
            by_alpaca_id.update((str(o["id"]), o) for o in await self.orders.repository.where_in(cursor, "id", missing))
        rows = []
        for execution in executions:
            order = by_alpaca_id.get(execution.order_id)
            if order is None:
                recorded.skipped.append(f"execution {execution.id}: order {execution.order_id} is not stored")
                continue
            rows.append(
                {
                    "id": execution.id,
                    "client_order_id": order["client_order_id"],
                    "symbol": order["symbol"],
                    "side": order["side"],
                    "qty": execution.qty,
                    "price": execution.price,
                    "fee": Decimal(0),
                    "liquidity": None,
                    "executed_at": execution.executed_at,
                }
            )
        return await self.trades.record_in(cursor, rows) if rows else []

    async def _position(self, cursor, report: PositionReport) -> int:
        """The position after a fill, until the REST sync confirms Alpaca's own figures; 1 when it moved."""
        key = {"account_id": report.account_id, "symbol": report.symbol}
        existing = await self.positions.repository.locked(cursor, [key])
        old = existing.get(self.positions.table.key_of(key))
        if old is not None and old["updated_at"] > report.at:
            return 0  # the REST sync stored a later view
        if report.qty == 0:
            return await self.positions.delete_in(cursor, [key]) if old is not None else 0
        if old is not None and old["qty"] == report.qty:
            return 0
        await self.positions.upsert_in(cursor, [moved(old, report)], existing)
        return 1


async def one_by_one(items: Sequence[Any], store: Callable[[Any], Awaitable[Any]]) -> tuple[list, list]:
    """
    Each item stored on its own, after the rules refused them together:
    (item, what C{store} returned) for each it took, (item, refusal) for the others.
    """
    done, refused = [], []
    for item in items:
        try:
            done.append((item, await store(item)))
        except Refused as refusal:
            refused.append((item, refusal))
    return done, refused


def moved(old: Row | None, report: PositionReport) -> Row:
    """
    A position moved to the reported quantity: the entry price averages in
    the fill's price while it grows, stays while it shrinks, and starts over
    when it flips side. Figures that need a market price are left to the sync.
    """
    qty, price = report.qty, report.price
    if old is None or old["qty"] == 0 or (old["qty"] > 0) != (qty > 0):
        entry = price
    elif abs(qty) > abs(old["qty"]):
        entry = ((old["qty"] * old["avg_entry_price"] + (qty - old["qty"]) * price) / qty).quantize(NANO)
    else:
        entry = old["avg_entry_price"]
    row: Row = dict(old) if old is not None else {"exchange": "", "current_price": None, "lastday_price": None}
    row.update(
        account_id=report.account_id,
        symbol=report.symbol,
        asset_id=row.get("asset_id") or report.asset_id,
        asset_class=row.get("asset_class") or report.asset_class,
        side="long" if qty > 0 else "short",
        qty=qty,
        qty_available=qty,
        avg_entry_price=entry,
        cost_basis=(qty * entry).quantize(NANO),
        market_value=None,
        unrealized_pl=None,
        unrealized_plpc=None,
        unrealized_intraday_pl=None,
        unrealized_intraday_plpc=None,
        change_today=None if old is None else old["change_today"],
        updated_at=report.at,
    )
    return row
