"""
The repository of one table: the only code that writes SQL for it. Every
statement is built once, from the table's declaration (identifiers come
only from code), and every value travels as a parameter. Each column's kind
says which SQL columns hold it and how its values convert.
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Callable, Sequence
from typing import Any

from ..schema.kinds import escaped
from ..schema.model import DEFAULT_LIMIT, Column, Table

Row = dict[str, Any]

# The SQLSTATE of tradehub_guard_refused() (schema/0014_insert_alone.sql).
GUARD_REFUSED = "TH001"


def quote(identifier: str) -> str:
    """Identifiers come from code only; quoting keeps reserved words (order, values) usable."""
    return '"' + identifier + '"'


def cast_parameter(sql_type: str) -> str:
    """
    A parameter cast to its type. Not C{%s::type}: psycopg2 writes a negative
    number as " -9223372036854775808", and "-x::bigint" casts x before the
    minus applies, out of range at the lowest bigint.
    """
    return f"CAST(%s AS {sql_type})"


def _sql_columns(column: Column, prefix: str = "") -> list[str]:
    return [prefix + quote(column.name + part.suffix) for part in column.kind.parts]


class Repository:
    """SQL for one table; rows are dicts keyed by column name."""

    def __init__(self, table: Table, computed_sql: dict[str, str] | None = None) -> None:
        self.table = table
        self.name = quote(table.sql_name)
        self.stored = [c for c in table.columns if not c.computed]
        computed_sql = computed_sql or {}
        names, placeholders, selected, arrays, outputs = [], [], [], [], []
        for column in table.columns:
            if column.computed:
                selected.append(computed_sql[column.name])
                continue
            for part in column.kind.parts:
                name = quote(column.name + part.suffix)
                names.append(name)
                placeholders.append(cast_parameter(part.sql))
                selected.append(f"t.{name}{part.read}")
                # Batch inserts send one array per SQL column (unnest); list kinds travel as
                # array literals in a text[] and are cast back to their type per row.
                arrays.append(f"%s::{part.array}")
                outputs.append(f"u.{name}::{part.sql}")
        column_list = ", ".join(names)
        self._unnest = (
            f"INSERT INTO {self.name} AS t ({column_list}) SELECT {', '.join(outputs)}"
            f" FROM unnest({', '.join(arrays)}) AS u ({column_list})"
        )
        self._row_template = "(" + ", ".join(placeholders) + ")"
        self._insert_one = f"INSERT INTO {self.name} AS t ({column_list}) VALUES {self._row_template}"
        self._insert_one_from = (
            f"INSERT INTO {self.name} AS t ({column_list})"
            f" SELECT * FROM (VALUES {self._row_template}) AS u ({column_list})"
        )
        self.select_list = ", ".join(selected)
        self._returning = f" RETURNING {self.select_list}"
        keys = [table.by_name[k] for k in table.key]
        key_sql = [name for column in keys for name in _sql_columns(column)]
        self._key_list = ", ".join(key_sql)
        self._key_template = "(" + ", ".join(cast_parameter(p.sql) for column in keys for p in column.kind.parts) + ")"
        # A feed's repeated rows are skipped, not refused.
        self.skip_stored = f" ON CONFLICT ({self._key_list}) DO NOTHING"
        updates = [n for n in names if n not in key_sql]
        self._upsert_tail = f" ON CONFLICT ({self._key_list}) DO UPDATE SET " + ", ".join(
            f"{n} = EXCLUDED.{n}" for n in updates
        )
        self._update = (
            f"UPDATE {self.name} AS t SET {', '.join(f'{n} = v.{n}' for n in updates)}"
            f" FROM (VALUES {self._row_template}) AS v ({column_list})"
            f" WHERE {' AND '.join(f't.{k} = v.{k}' for k in key_sql)}{self._returning}"
        )
        self._sort_sql = [n for name in table.sort for n in _sql_columns(table.by_name[name], "t.")]
        self._readers = [(column.name, column.kind, len(column.kind.parts)) for column in table.columns]
        self._writers = [(c.name, c.kind.to_sql, (None,) * len(c.kind.parts)) for c in self.stored]
        # A batch's columns take a kind's text where it has one: literals are text anyway.
        self._column_writers = [
            (n, self.table.by_name[n].kind.to_text or to_sql, nulls) for n, to_sql, nulls in self._writers
        ]

    # Conversions

    def params(self, row: Row) -> list:
        # The hot path of every write: plain values are appended as they are,
        # only kinds that convert (timestamps, floats, lists) call their kind.
        values: list = []
        for name, to_sql, nulls in self._writers:
            value = row[name]
            if to_sql is None:
                values.append(value)
            else:
                values += nulls if value is None else to_sql(value)
        return values

    def columns(self, rows: list[Row]) -> list:
        """
        The parameters of a batch INSERT: one per SQL column, its values
        in row order, made a column at a time (as L{params} makes a row's).
        """
        columns: list = []
        for name, to_sql, nulls in self._column_writers:
            values = [row[name] for row in rows]
            if to_sql is None:
                columns.append(array_param(values))
            elif len(nulls) == 1:
                columns.append(array_param([None if v is None else to_sql(v)[0] for v in values]))
            else:
                columns += map(array_param, zip(*[nulls if v is None else to_sql(v) for v in values], strict=True))
        return columns

    def _params_of(self, names: tuple[str, ...], values: Row) -> list:
        by_name = self.table.by_name
        return [p for name in names for p in by_name[name].kind.params(values[name])]

    def row(self, record: tuple) -> Row:
        row, position = {}, 0
        for name, kind, width in self._readers:
            row[name] = kind.value(*record[position : position + width])
            position += width
        return row

    def _key_values(self, keys: list[Row]) -> tuple[str, list]:
        """A VALUES list of keys and its parameters."""
        params = [p for key in keys for p in self._params_of(self.table.key, key)]
        return ", ".join([self._key_template] * len(keys)), params

    # Statements

    async def insert(self, cursor, rows: list[Row], returning: bool = True) -> list[Row]:
        """One statement for all rows; returns the stored rows (none unless C{returning})."""
        return await self._insert(cursor, "", rows, returning)

    async def upsert(self, cursor, rows: list[Row]) -> list[Row]:
        return await self._insert(cursor, self._upsert_tail, rows)

    async def insert_new(self, cursor, rows: list[Row]) -> list[Row]:
        """Like insert, skipping the rows whose keys are stored already."""
        return await self._insert(cursor, self.skip_stored, rows)

    async def _insert(self, cursor, tail: str, rows: list[Row], returning: bool = True) -> list[Row]:
        statement, params = self.insert_statement(rows, tail=tail, returning=returning)
        await cursor.execute(statement, params)
        return self.stored_rows(cursor.fetchall() if returning else [])

    def insert_statement(
        self, rows: list[Row], guard: str | None = None, tail: str = "", returning: bool = True
    ) -> tuple[str, list]:
        """
        One INSERT of all rows, returning the stored rows if asked. One row:
        plain VALUES. Several: one array per column through unnest, one
        statement whatever the count. C{guard} is an SQL condition on each
        new row (named C{u}): a row for which it does not hold fails the
        whole statement with L{GUARD_REFUSED}.
        """
        many = len(rows) > 1
        if many:
            statement, params = self._unnest, self.columns(rows)
        else:
            statement, params = self._insert_one, self.params(rows[0])
        if guard is not None:
            if not many:
                statement = self._insert_one_from
            statement += f" WHERE CASE WHEN {guard} THEN true ELSE tradehub_guard_refused() END"
        statement += tail
        if returning:
            statement += self._returning
        return statement, params

    def stored_rows(self, records: list[tuple]) -> list[Row]:
        return [self.row(r) for r in records]

    async def update(self, cursor, row: Row) -> Row:
        """Replace the stored row with row's key (the caller locked it); returns it as stored."""
        await cursor.execute(self._update, self.params(row))
        [stored] = cursor.fetchall()
        return self.row(stored)

    async def locked(self, cursor, keys: list[Row]) -> dict[tuple, Row]:
        """The stored rows with these keys, locked for this transaction, by key tuple."""
        if not keys:
            return {}
        values, params = self._key_values(keys)
        await cursor.execute(
            # In key order, so that transactions locking the same rows take them in the same order.
            f"SELECT {self.select_list} FROM {self.name} AS t WHERE ({self._key_list}) IN (VALUES {values})"
            f" ORDER BY {self._key_list} FOR UPDATE",
            params,
        )
        rows = [self.row(r) for r in cursor.fetchall()]
        return {self.table.key_of(r): r for r in rows}

    async def delete(self, cursor, keys: list[Row]) -> int:
        values, params = self._key_values(keys)
        await cursor.execute(f"DELETE FROM {self.name} AS t WHERE ({self._key_list}) IN (VALUES {values})", params)
        return cursor.rowcount

    async def where_in(self, cursor, column: str, values) -> list[Row]:
        """The stored rows whose C{column} (of one SQL column) is one of C{values}."""
        if not values:
            return []
        kind = self.table.by_name[column].kind
        [part] = kind.parts
        await cursor.execute(
            f"SELECT {self.select_list} FROM {self.name} AS t WHERE t.{quote(column)} = ANY(CAST(%s AS {part.sql}[]))",
            ([kind.params(v)[0] for v in values],),
        )
        return [self.row(r) for r in cursor.fetchall()]

    def select_statement(self, query: dict) -> tuple[str, list, int]:
        """
        The SELECT for a query (keys, symbol, since, until, position, limit):
        in sort order, one row more than the limit (to know whether a next
        page exists).
        """
        table = self.table
        where, params = [], []
        if query["keys"]:
            values, key_params = self._key_values(query["keys"])
            where.append(f"({self._key_list}) IN (VALUES {values})")
            params += key_params
        if query.get("symbol") is not None:
            where.append("t.symbol = %s")
            params.append(query["symbol"])
        if table.series:
            series = table.by_name[table.series]
            time_sql = ", ".join(_sql_columns(series, "t."))
            for bound, operator in (("since", ">="), ("until", "<")):
                if query.get(bound) is not None:
                    where.append(f"({time_sql}) {operator} ({', '.join(['%s'] * len(series.kind.parts))})")
                    params += series.kind.params(query[bound])
        if query.get("position") is not None:
            where.append(f"({', '.join(self._sort_sql)}) > ({', '.join(['%s'] * len(self._sort_sql))})")
            params += self._params_of(table.sort, query["position"])
        limit = query["limit"] or DEFAULT_LIMIT
        statement = f"SELECT {self.select_list} FROM {self.name} AS t"
        if where:
            statement += " WHERE " + " AND ".join(where)
        statement += f" ORDER BY {', '.join(self._sort_sql)} LIMIT {int(limit) + 1}"
        return statement, params, limit


# Array literals: a batch INSERT sends each column as one text that PostgreSQL
# parses, where psycopg2 would adapt every item of a list (an ARRAY[...] of
# constants, several times the CPU of both the hub and the server). Only the
# types below are written so, each item as psycopg2 writes it; any other
# column goes as the list, which psycopg2 adapts as before.


def _strs(values: Sequence) -> list[str]:
    return list(map(str, values))


def _finite_decimals(values: Sequence[decimal.Decimal]) -> list[str] | None:
    """As str() writes them; a value not finite sends the column as a list (psycopg2 makes it NaN)."""
    return _strs(values) if all(map(decimal.Decimal.is_finite, values)) else None


def _bools(values: Sequence[bool]) -> list[str]:
    return ["t" if v else "f" for v in values]


# For each type written in array literals: its items' texts (None: send the
# list instead), and whether they are quoted (text, and the spaces of datetimes).
_TEXTS: dict[type, tuple[Callable[[Sequence], list[str] | None], bool]] = {
    str: (escaped, True),
    datetime.datetime: (_strs, True),
    int: (_strs, False),
    decimal.Decimal: (_finite_decimals, False),
    bool: (_bools, False),
}
_NONE = type(None)


def array_param(values: Sequence) -> str | list:
    """
    One column of a batch INSERT as the parameter of its unnest: an array
    literal when its values are None or of one type of L{_TEXTS}, else the
    list of its values.
    """
    kinds = set(map(type, values))
    nulls = _NONE in kinds
    kinds.discard(_NONE)
    if not kinds:
        return "{" + ",".join(["NULL"] * len(values)) + "}"
    way = _TEXTS.get(kinds.pop()) if len(kinds) == 1 else None
    if way is None:
        return list(values)
    texts, quoted = way
    items = texts([v for v in values if v is not None] if nulls else values)
    if items is None:
        return list(values)
    if not nulls:
        return '{"' + '","'.join(items) + '"}' if quoted else "{" + ",".join(items) + "}"
    present = iter(['"' + t + '"' for t in items] if quoted else items)
    return "{" + ",".join(["NULL" if v is None else next(present) for v in values]) + "}"
