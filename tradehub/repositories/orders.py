"""The order table's own statements beyond the generic ones: applying a fill, finding live orders."""

from __future__ import annotations

from ..schema.tables import FINAL_STATUSES
from ..schema.timestamp import Timestamp
from .table import Repository, Row

_FINAL = sorted(FINAL_STATUSES)


class OrderRepository(Repository):
    async def apply_fill(self, cursor, trade: dict) -> None:
        """
        Add one execution to its order: filled_qty grows, filled_avg_price
        becomes the quantity-weighted average, and a live order becomes
        partially_filled or filled. The table's CHECK refuses a fill past qty.
        """
        executed_at, executed_at_ns = trade["executed_at"].to_pg()
        await cursor.execute(
            f"""
            UPDATE {self.name} SET
                filled_avg_price = (coalesce(filled_avg_price, 0) * filled_qty + %(qty)s * %(price)s)
                    / (filled_qty + %(qty)s),
                filled_qty = filled_qty + %(qty)s,
                status = CASE
                    WHEN status = ANY(%(final)s) THEN status
                    WHEN qty IS NOT NULL AND filled_qty + %(qty)s >= qty THEN 'filled'
                    ELSE 'partially_filled' END,
                filled_at = CASE WHEN qty IS NOT NULL AND filled_qty + %(qty)s >= qty
                    AND status <> ALL(%(final)s) THEN %(at)s ELSE filled_at END,
                filled_at_ns = CASE WHEN qty IS NOT NULL AND filled_qty + %(qty)s >= qty
                    AND status <> ALL(%(final)s) THEN %(at_ns)s ELSE filled_at_ns END,
                updated_at = greatest(updated_at, %(at)s),
                updated_at_ns = CASE WHEN %(at)s > updated_at THEN %(at_ns)s ELSE updated_at_ns END
            WHERE client_order_id = %(order)s
            """,
            {
                "qty": trade["qty"],
                "price": trade["price"],
                "at": executed_at,
                "at_ns": executed_at_ns,
                "order": trade["client_order_id"],
                "final": _FINAL,
            },
        )

    async def live_at_alpaca(self, cursor) -> list[str]:
        """Alpaca ids of the orders stored as still live."""
        await cursor.execute(f"SELECT id::text FROM {self.name} WHERE id IS NOT NULL AND status <> ALL(%s)", (_FINAL,))
        return [alpaca_id for (alpaca_id,) in cursor.fetchall()]

    async def last_reported(self, cursor) -> Timestamp | None:
        """
        Where a reconciliation starts after a restart: the last execution
        stored of an Alpaca order (the sync moves orders on, never their
        executions), or, before the first, the latest update of one.
        """
        await cursor.execute(
            f"SELECT t.executed_at, t.executed_at_ns FROM trade AS t JOIN {self.name} AS o USING (client_order_id)"
            " WHERE o.id IS NOT NULL ORDER BY t.executed_at DESC, t.executed_at_ns DESC LIMIT 1"
        )
        found = cursor.fetchall()
        if not found:
            await cursor.execute(
                f"SELECT updated_at, updated_at_ns FROM {self.name} WHERE id IS NOT NULL"
                " ORDER BY updated_at DESC, updated_at_ns DESC LIMIT 1"
            )
            found = cursor.fetchall()
        return Timestamp.from_pg(*found[0]) if found else None

    async def locked_by_id(self, cursor, alpaca_ids: list[str]) -> list[Row]:
        """The stored orders with these Alpaca ids, locked for this transaction (in key order, as L{locked})."""
        await cursor.execute(
            f"SELECT {self.select_list} FROM {self.name} AS t WHERE t.id = ANY(%s::uuid[])"
            " ORDER BY t.client_order_id FOR UPDATE",
            (list(alpaca_ids),),
        )
        return [self.row(r) for r in cursor.fetchall()]
