"""
What a table is: its number on the wire, its columns (name, kind, meaning,
allowed values) and its key; and how many rows one SELECT may ask for.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import attrs

from .kinds import Kind

DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000


class SQLTable(IntEnum):
    """A table's number on the wire (the header's table byte)."""

    ACCOUNT = 1
    ASSET = 2
    ORDER = 3
    POSITION = 4
    TRADE = 5
    MARKET_TICK = 6
    ML_MODEL = 7
    ML_PREDICTION = 8
    LABELED_DATA = 9
    FEATURE_SET = 10
    TECHNICAL_INDICATOR = 11


@attrs.frozen
class Column:
    """
    One column. C{choices} are the allowed values of a text column. A
    C{hub_default} column left absent gets the hub's clock. A C{computed}
    column travels on the wire but is not a column of the table: its
    controller writes it elsewhere and its repository reads it back.
    """

    name: str
    kind: Kind
    doc: str
    optional: bool = False
    choices: tuple[str, ...] = ()
    hub_default: bool = False
    computed: bool = False

    @property
    def checked(self) -> bool:
        return self.kind.check is not None or bool(self.choices)

    def check(self, value: Any) -> Any:
        """The value normalised, or ValueError saying which rule it breaks."""
        if self.kind.check is not None:
            value = self.kind.check(value)
        if self.choices and value not in self.choices:
            raise ValueError("must be one of " + ", ".join(self.choices))
        return value


class Table:
    """
    A table: C{series} names the time column of a time-series table (SELECT
    by symbol and time window, in time order); C{sort} is its page order.
    C{follow}: the columns a push subscription may filter on besides the
    symbol. C{written}: what every write answer tells of each row, echoed
    or not: its key and the columns the hub sets.
    """

    def __init__(
        self,
        id: SQLTable,
        sql_name: str,
        columns: list[Column],
        key: tuple[str, ...],
        doc: str,
        series: str | None = None,
        follow: tuple[str, ...] = (),
    ) -> None:
        self.id = id
        self.sql_name = sql_name
        self.columns = tuple(columns)
        self.by_name = {c.name: c for c in self.columns}
        self.key = tuple(key)
        self.doc = doc
        self.series = series
        self.written = self.key + tuple(
            c.name for c in self.columns if (c.hub_default or c.computed) and c.name not in self.key
        )
        self.follow = tuple(follow)
        # Every column a subscription filters on: the symbol first, when the table has one.
        self.filters = (("symbol",) if "symbol" in self.by_name else ()) + self.follow
        self.sort = ((series,) if series else ()) + self.key

    def __repr__(self) -> str:
        return f"Table({self.id.name})"

    def key_of(self, row: dict) -> tuple:
        return tuple(row[k] for k in self.key)
