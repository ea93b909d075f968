"""Rules of the market data feed's ticks: a trade has a price and size, a quote has both sides."""

from ..errors import invalid
from ..schema.tables import MARKET_TICK
from .base import TableController

_TRADE_ONLY = ("price", "size")
_QUOTE_ONLY = ("bid_price", "bid_size", "ask_price", "ask_size")


class MarketTickController(TableController):
    table = MARKET_TICK

    def rules(self, row, index):
        present, absent = (_TRADE_ONLY, _QUOTE_ONLY) if row["kind"] == "trade" else (_QUOTE_ONLY, _TRADE_ONLY)
        for name in present:
            if row[name] is None:
                raise invalid(index, name, f"is required for a {row['kind']}")
        for name in absent:
            if row[name] is not None:
                raise invalid(index, name, f"must be absent for a {row['kind']}")
        if row["kind"] == "trade":
            if row["price"] <= 0 or row["size"] <= 0:
                raise invalid(index, "price" if row["price"] <= 0 else "size", "must be above 0")
        else:
            for name in _QUOTE_ONLY:
                if row[name] < 0:
                    raise invalid(index, name, "must not be negative")
