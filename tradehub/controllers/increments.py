"""
The assets' price increments, kept in memory so that an order's check
costs no round trip (its INSERT is then one statement on its own).

Filled on demand, a symbol at a time. Any statement that changes the asset
table NOTIFYs every hub at its commit (schema/0016_asset_notify.sql):
each empties its copy. NOTIFYs sent while a hub's LISTEN connection is down
are lost, so the copy serves only while that connection is up, and is
emptied whenever it comes back. An answer read while a change was heard is
not kept (it may predate the change): its caller checks in the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import NamedTuple

from ..db.pool import Pool, prepared
from ..errors import invalid
from ..repositories.table import Row

# The NOTIFY payload on the change channel that says the asset table changed.
CHANGED = "asset"
# Symbols kept at most; past it the copy starts again (a client naming
# endless unknown symbols costs the hub a bounded amount of memory).
MAX_SYMBOLS = 100_000


class Asset(NamedTuple):
    id: str
    asset_class: str
    price_increment: Decimal | None


class PriceIncrements:
    ASSETS = "SELECT symbol, id::text, class, price_increment FROM asset WHERE symbol = ANY(%s::text[])"

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._assets: dict[str, list[Asset]] = {}
        # Counts the changes heard: an answer read across one is not kept.
        self.changes_heard = 0
        self.hearing = False

    def __contains__(self, symbol: str) -> bool:
        """Whether C{symbol}'s assets are in memory."""
        return symbol in self._assets

    @staticmethod
    def by_symbol(records: Iterable[tuple]) -> dict[str, list[Asset]]:
        """The records of L{ASSETS}, by symbol."""
        assets: dict[str, list[Asset]] = {}
        for symbol, *asset in records:
            assets.setdefault(symbol, []).append(Asset(*asset))
        return assets

    # What the LISTEN connection hears

    def heard(self) -> None:
        """The LISTEN connection is (again) in place: changes are heard from now on."""
        self.hearing = True
        self.changed()

    def deaf(self) -> None:
        """The LISTEN connection was lost: changes made now would go unheard."""
        self.hearing = False
        self.changed()

    def changed(self) -> None:
        """The asset table changed (a NOTIFY)."""
        self._assets.clear()
        self.changes_heard += 1

    # Checks

    async def check(self, rows: list[Row]) -> bool:
        """
        Refuse (L{invalid}) an order whose prices are not multiples of its
        asset's price increment. Returns False, having checked nothing, when
        the copy cannot be trusted: the caller checks in the database.
        """
        assets = await self._of({row["symbol"] for row in rows})
        if assets is None:
            return False
        for index, row in enumerate(rows):
            check_prices(index, row, assets.get(row["symbol"], ()))
        return True

    async def _of(self, symbols: set[str]) -> dict[str, list[Asset]] | None:
        if not self.hearing:
            return None
        missing = [symbol for symbol in symbols if symbol not in self._assets]
        if not missing:
            return self._assets
        changes = self.changes_heard
        none: dict[str, list[Asset]] = {symbol: [] for symbol in missing}
        read = none | self.by_symbol(await self.pool.query(prepared(self.ASSETS), (sorted(missing),)))
        if changes != self.changes_heard or not self.hearing:
            return None
        if len(self._assets) + len(read) > MAX_SYMBOLS:
            self._assets.clear()
        self._assets.update(read)
        return {symbol: self._assets.get(symbol) or read[symbol] for symbol in symbols}


def check_prices(index: int, row: Row, assets: Iterable[Asset]) -> None:
    """Refuse a price of the order that is not a multiple of its asset's (by id, else by class) increment."""
    assets = list(assets)
    asset = next((a for a in assets if row["asset_id"] is not None and a.id == row["asset_id"]), None) or next(
        (a for a in assets if a.asset_class == row["asset_class"]), None
    )
    if asset is None or not asset.price_increment:
        return
    increment = asset.price_increment
    for name in ("limit_price", "stop_price", "trail_price"):
        price = row[name]
        if price is not None and price % increment:
            raise invalid(
                index, name, f"{price} is not a multiple of {row['symbol']}'s price increment {increment.normalize():f}"
            )
