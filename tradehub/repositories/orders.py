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

    async def live_at_alpaca(self, cursor, final_statuses):
        """Alpaca ids of the orders stored as still live."""
        await cursor.execute(
            f"SELECT id::text FROM {self.table} WHERE id IS NOT NULL AND status <> ALL(%s)", (sorted(final_statuses),)
        )
        return [alpaca_id for (alpaca_id,) in cursor.fetchall()]

    async def identities(self, cursor, alpaca_ids):
        """{Alpaca id: (client_order_id, submit, parent_client_order_id)} of the stored orders among them."""
        await cursor.execute(
            f"SELECT id::text, client_order_id, submit, parent_client_order_id FROM {self.table}"
            " WHERE id = ANY(%s::uuid[])",
            (list(alpaca_ids),),
        )
        return {alpaca_id: rest for alpaca_id, *rest in cursor.fetchall()}
