"""The order table's own statement beyond the generic ones: applying a fill."""

from .table import Repository, timestamp_params

FINAL = "('filled', 'canceled', 'expired', 'replaced', 'rejected')"


class OrderRepository(Repository):
    async def apply_fill(self, cursor, trade):
        """
        Add one execution to its order: filled_qty grows, filled_avg_price
        becomes the quantity-weighted average, and a live order becomes
        partially_filled or filled. The table's CHECK refuses a fill past qty.
        """
        executed_at, executed_at_ns = timestamp_params(trade["executed_at"])
        await cursor.execute(
            f"""
            UPDATE {self.table} SET
                filled_avg_price = (coalesce(filled_avg_price, 0) * filled_qty + %(qty)s * %(price)s)
                    / (filled_qty + %(qty)s),
                filled_qty = filled_qty + %(qty)s,
                status = CASE
                    WHEN status IN {FINAL} THEN status
                    WHEN qty IS NOT NULL AND filled_qty + %(qty)s >= qty THEN 'filled'
                    ELSE 'partially_filled' END,
                filled_at = CASE WHEN qty IS NOT NULL AND filled_qty + %(qty)s >= qty
                    AND status NOT IN {FINAL} THEN %(at)s ELSE filled_at END,
                filled_at_ns = CASE WHEN qty IS NOT NULL AND filled_qty + %(qty)s >= qty
                    AND status NOT IN {FINAL} THEN %(at_ns)s ELSE filled_at_ns END,
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
            },
        )
