"""
The repository of one table: the only code that writes SQL for it. Every
statement is built once, from the table's declaration (identifiers come
only from code), and every value travels as a parameter.
"""

import datetime

import psycopg2

from ..protocol.tables import DEFAULT_LIMIT
from ..protocol.wire import Timestamp

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
# Every placeholder is cast, so that a NULL in a VALUES list has its column's type.
_CASTS = {
    "uuid": "::uuid",
    "text": "::text",
    "json": "::jsonb",
    "decimal": "::numeric",
    "bool": "::boolean",
    "int": "::bigint",
    "int32": "::integer",
    "float": "::double precision",
    "bytes": "::bytea",
    "text_list": "::text[]",
    "float_list": "::double precision[]",
}
_TIMESTAMP_CASTS = ("%s::timestamptz", "%s::smallint")
# Batch inserts send one array per column (unnest); a list column travels as
# an array of array literals and is cast back per row.
_ARRAY_TYPES = {
    "uuid": "uuid[]",
    "text": "text[]",
    "json": "jsonb[]",
    "decimal": "numeric[]",
    "bool": "boolean[]",
    "int": "bigint[]",
    "int32": "integer[]",
    "float": "double precision[]",
    "bytes": "bytea[]",
    "text_list": "text[]",
    "float_list": "text[]",
}
_FLOAT_WORDS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def text_array_literal(items):
    return "{" + ",".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in items) + "}"


def float_array_literal(items):
    return "{" + ",".join(_FLOAT_WORDS.get(r, r) for r in map(repr, items)) + "}"


class _ExactFloat:
    """
    psycopg2 writes -0.0 as a bare -0.0, which PostgreSQL reads as minus a
    numeric zero: the sign is lost. A quoted float8 literal of the exact
    repr keeps every value, -0.0, NaN and the infinities included.
    """

    def __init__(self, value):
        self.value = value

    def getquoted(self):
        return f"'{_FLOAT_WORDS.get(repr(self.value), repr(self.value))}'::float8".encode()


psycopg2.extensions.register_adapter(float, _ExactFloat)


def quote(identifier):
    """Identifiers come from code only; quoting keeps reserved words (order, values) usable."""
    return '"' + identifier + '"'


def timestamp_params(value):
    """A wire timestamp as (timestamptz at microsecond precision, the nanoseconds within it)."""
    if value is None:
        return None, None
    micros, nanos = divmod(value.ns, 1000)
    return _EPOCH + datetime.timedelta(microseconds=micros), nanos


def timestamp_value(moment, nanos):
    if moment is None:
        return None
    delta = moment - _EPOCH
    return Timestamp(((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds) * 1000 + nanos)


class Repository:
    """SQL for one L{TableSpec}; rows are dicts keyed by column name."""

    def __init__(self, spec, computed_sql=None):
        self.spec = spec
        self.table = quote(spec.sql_name)
        self.stored = [c for c in spec.columns if not c.computed]
        computed_sql = computed_sql or {}
        names, placeholders, selected = [], [], []
        for column in spec.columns:
            if column.computed:
                selected.append(computed_sql[column.name])
                continue
            name = quote(column.name)
            if column.kind == "timestamp":
                names += [name, quote(column.name + "_ns")]
                placeholders += _TIMESTAMP_CASTS
                selected += [f"t.{name}", f"t.{quote(column.name + '_ns')}"]
            else:
                names.append(name)
                placeholders.append("%s" + _CASTS[column.kind])
                selected.append(f"t.{name}::text" if column.kind == "json" else f"t.{name}")
        self._column_list = ", ".join(names)
        arrays, outputs, aliases = [], [], []
        for column in self.stored:
            if column.kind == "timestamp":
                for suffix, array in (("", "timestamptz[]"), ("_ns", "smallint[]")):
                    alias = quote(column.name + suffix)
                    arrays.append(f"%s::{array}")
                    aliases.append(alias)
                    outputs.append(f"u.{alias}")
                continue
            alias = quote(column.name)
            arrays.append(f"%s::{_ARRAY_TYPES[column.kind]}")
            aliases.append(alias)
            cast = {"text_list": "::text[]", "float_list": "::double precision[]"}.get(column.kind, "")
            outputs.append(f"u.{alias}{cast}")
        self._unnest = (
            f"INSERT INTO {self.table} AS t ({self._column_list}) SELECT {', '.join(outputs)}"
            f" FROM unnest({', '.join(arrays)}) AS u ({', '.join(aliases)})"
        )
        self._list_converters = {
            i: (text_array_literal if c.kind == "text_list" else float_array_literal)
            for i, c in enumerate(self._expanded_kinds())
            if c.kind in ("text_list", "float_list")
        }
        self.row_template = "(" + ", ".join(placeholders) + ")"
        self._insert_one = f"INSERT INTO {self.table} AS t ({self._column_list}) VALUES {self.row_template}"
        self.select_list = ", ".join(selected)
        self._returning = f" RETURNING {self.select_list}"
        key_sql = self._expand(spec.key)
        self._key_list = ", ".join(key_sql)
        self.key_template = "(" + ", ".join(
            ", ".join(_TIMESTAMP_CASTS) if spec.by_name[k].kind == "timestamp" else "%s" + _CASTS[spec.by_name[k].kind]
            for k in spec.key
        ) + ")"
        updates = [n for n in names if n not in key_sql]
        self._upsert_tail = (
            f" ON CONFLICT ({self._key_list}) DO UPDATE SET "
            + ", ".join(f"{n} = EXCLUDED.{n}" for n in updates)
        )
        self._set_list = ", ".join(f"{n} = v.{n}" for n in updates)
        self._key_match = " AND ".join(f"t.{k} = v.{k}" for k in key_sql)
        self.sort_sql = self._expand(spec.sort, prefix="t.")

    def _expanded_kinds(self):
        """The stored columns as the parameters list them (a timestamp twice)."""
        for column in self.stored:
            yield column
            if column.kind == "timestamp":
                yield column

    def _columns_of(self, rows):
        """Rows to one list per parameter, for unnest."""
        columns = [list(values) for values in zip(*(self.params(row) for row in rows))]
        for index, convert in self._list_converters.items():
            columns[index] = [None if v is None else convert(v) for v in columns[index]]
        return columns

    def _expand(self, names, prefix=""):
        expanded = []
        for name in names:
            expanded.append(prefix + quote(name))
            if self.spec.by_name[name].kind == "timestamp":
                expanded.append(prefix + quote(name + "_ns"))
        return expanded

    # Conversions

    def params(self, row):
        values = []
        for column in self.stored:
            value = row[column.name]
            if column.kind == "timestamp":
                values += timestamp_params(value)
            elif column.kind == "bytes" and value is not None:
                values.append(psycopg2.Binary(value))
            else:
                values.append(value)
        return values

    def key_params(self, key):
        values = []
        for name in self.spec.key:
            if self.spec.by_name[name].kind == "timestamp":
                values += timestamp_params(key[name])
            else:
                values.append(key[name])
        return values

    def row(self, record):
        row = {}
        position = 0
        for column in self.spec.columns:
            if column.kind == "timestamp" and not column.computed:
                row[column.name] = timestamp_value(record[position], record[position + 1])
                position += 2
                continue
            value = record[position]
            if column.kind == "bytes" and value is not None:
                value = bytes(value)
            row[column.name] = value
            position += 1
        return row

    def _values(self, cursor, template, rows):
        return b", ".join(cursor.mogrify(template, values) for values in rows)

    # Statements

    async def insert(self, cursor, rows):
        """One statement for all rows; returns the stored rows (or [] when writes are not echoed)."""
        return await self._insert(cursor, "", rows)

    async def upsert(self, cursor, rows):
        return await self._insert(cursor, self._upsert_tail, rows)

    async def _insert(self, cursor, tail, rows):
        # One row: plain VALUES. Several: one array per column through unnest,
        # one statement whatever the count.
        if len(rows) == 1:
            statement, params = self._insert_one + tail, self.params(rows[0])
        else:
            statement, params = self._unnest + tail, self._columns_of(rows)
        if self.spec.echo_writes:
            await cursor.execute(statement + self._returning, params)
            return [self.row(r) for r in cursor.fetchall()]
        await cursor.execute(statement, params)
        return []

    async def update(self, cursor, row):
        """Replace the row with row's key; returns it as stored, or None when there is none."""
        values = self._values(cursor, self.row_template, [self.params(row)])
        statement = (
            f"UPDATE {self.table} AS t SET {self._set_list} FROM (VALUES ".encode()
            + values
            + f") AS v ({self._column_list}) WHERE {self._key_match}".encode()
            + self._returning.encode()
        )
        await cursor.execute(statement)
        stored = cursor.fetchall()
        return self.row(stored[0]) if stored else None

    async def locked(self, cursor, keys):
        """The stored rows with these keys, locked for this transaction, by key tuple."""
        if not keys:
            return {}
        values = self._values(cursor, self.key_template, [self.key_params(k) for k in keys])
        statement = (
            f"SELECT {self.select_list} FROM {self.table} AS t WHERE ({self._key_list}) IN (VALUES ".encode()
            + values
            + b") FOR UPDATE"
        )
        await cursor.execute(statement)
        rows = [self.row(r) for r in cursor.fetchall()]
        return {self.key_of(r): r for r in rows}

    async def delete(self, cursor, keys):
        values = self._values(cursor, self.key_template, [self.key_params(k) for k in keys])
        statement = (
            f"DELETE FROM {self.table} AS t WHERE ({self._key_list}) IN (VALUES ".encode() + values + b")"
        )
        await cursor.execute(statement)
        return cursor.rowcount

    async def where_in(self, cursor, column, values):
        """The stored rows whose C{column} is one of C{values}."""
        if not values:
            return []
        cast = _CASTS[self.spec.by_name[column].kind]
        await cursor.execute(
            f"SELECT {self.select_list} FROM {self.table} AS t WHERE t.{quote(column)} = ANY(%s{cast}[])",
            (list(values),),
        )
        return [self.row(r) for r in cursor.fetchall()]

    def key_of(self, row):
        return tuple(row[k] for k in self.spec.key)

    def select_statement(self, query):
        """
        The SELECT for a decoded select request: key filter, symbol, time
        window, keyset position; in sort order, one row more than the limit
        (to know whether a next page exists).
        """
        spec = self.spec
        where, params = [], []
        if query["keys"]:
            where.append(f"({self._key_list}) IN (VALUES {', '.join([self.key_template] * len(query['keys']))})")
            for key in query["keys"]:
                params += self.key_params(key)
        if query.get("symbol") is not None:
            where.append("t.symbol = %s")
            params.append(query["symbol"])
        if spec.series:
            time_sql = ", ".join(self._expand((spec.series,), prefix="t."))
            if query.get("since") is not None:
                where.append(f"({time_sql}) >= (%s, %s)")
                params += timestamp_params(query["since"])
            if query.get("until") is not None:
                where.append(f"({time_sql}) < (%s, %s)")
                params += timestamp_params(query["until"])
        if query.get("position") is not None:
            where.append(f"({', '.join(self.sort_sql)}) > ({', '.join(['%s'] * len(self.sort_sql))})")
            for name in spec.sort:
                value = query["position"][name]
                params += timestamp_params(value) if spec.by_name[name].kind == "timestamp" else [value]
        limit = query["limit"] or DEFAULT_LIMIT
        statement = f"SELECT {self.select_list} FROM {self.table} AS t"
        if where:
            statement += " WHERE " + " AND ".join(where)
        statement += f" ORDER BY {', '.join(self.sort_sql)} LIMIT {int(limit) + 1}"
        return statement, params, limit
