"""
Column kinds: how a column's values travel on the wire (the contract's field
type, by name), how they are stored (SQL types, one or more columns), how a
value is checked and normalised, and how it converts to and from a SQL
parameter. Every layer asks the kind; none branches on its name.

Floats travel as their exact text (cast to double precision), so -0.0, NaN
and the infinities keep their bits; a float passed to SQL any other way
would not (psycopg2 writes -0.0 as a bare literal, which reads as 0).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import attrs

from .timestamp import Timestamp

_FLOAT_WORDS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}

# A decimal travels as an i64 count of 10^-9 units: these are the values it can
# be. The database holds no other (schema/0016_decimal_range.sql checks them).
DECIMAL_PLACES = 9
DECIMAL_MIN = Decimal(-(2**63)).scaleb(-DECIMAL_PLACES)
DECIMAL_MAX = Decimal(2**63 - 1).scaleb(-DECIMAL_PLACES)


def decimal_in_range(value: Decimal) -> Decimal:
    """A decimal the wire can carry (its places aside), or ValueError saying the range."""
    if not DECIMAL_MIN <= value <= DECIMAL_MAX:
        raise ValueError(f"{value} is outside the decimal range, {DECIMAL_MIN} to {DECIMAL_MAX}")
    return value


@attrs.frozen
class Part:
    """One SQL column of a kind: the suffix of its name, its type, its unnest array type, its read cast."""

    suffix: str
    sql: str
    array: str
    read: str = ""


@attrs.frozen
class Kind:
    """
    C{wire} names the contract's field type ("str", "decimal", "list<f64>").
    C{check} normalises a valid value (canonical uuid, upper-case symbol) or
    raises ValueError saying what is wrong. C{to_sql} turns a value into one
    parameter per part; C{from_sql} turns the parts' stored values back.
    C{to_text}, when given, is C{to_sql} for a batch INSERT's array literals:
    the same parts, as text PostgreSQL reads as the parts' types.
    """

    name: str
    wire: str
    parts: tuple[Part, ...]
    check: Callable[[Any], Any] | None = None
    to_sql: Callable[[Any], tuple] | None = None
    from_sql: Callable[..., Any] | None = None
    to_text: Callable[[Any], tuple] | None = None

    def params(self, value: Any) -> tuple:
        if value is None:
            return (None,) * len(self.parts)
        return self.to_sql(value) if self.to_sql is not None else (value,)

    def value(self, *stored: Any) -> Any:
        if stored[0] is None:
            return None
        return self.from_sql(*stored) if self.from_sql is not None else stored[0]


def _single(name: str, wire: str, sql: str, read: str = "", **conversions: Any) -> Kind:
    return Kind(name, wire, (Part("", sql, sql + "[]", read),), **conversions)


def text(value: str) -> str:
    """PostgreSQL text cannot hold NUL: refused here, by name, instead of failing in the driver."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (0x00) characters")
    return value


def texts(values: list[str]) -> list[str]:
    for value in values:
        text(value)
    return values


def canonical_uuid(value: Any) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise ValueError(f"{value!r} is not a UUID") from None


def symbol(value: str) -> str:
    value = text(value).strip().upper()
    if not 1 <= len(value) <= 64:
        raise ValueError("must be 1 to 64 characters")
    return value


def json_object(value: str) -> str:
    text(value)
    try:
        parsed = json.loads(value)
    except ValueError:
        raise ValueError("is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ValueError("must be a JSON object")
    return value


def exact_float(value: float) -> str:
    """
    A float as the text PostgreSQL reads back to the same double: -0.0, NaN
    and the infinities included (a bare -0.0 would be read as numeric zero).
    """
    text = repr(float(value))
    return _FLOAT_WORDS.get(text, text)


def escaped(items) -> list[str]:
    """
    Strings with backslashes and quotes escaped for a quoted array item:
    all at once when no item holds a NUL (text never does), else one by one.
    """
    joined = "\x00".join(items)
    if joined.count("\x00") != len(items) - 1:
        return [s.replace("\\", "\\\\").replace('"', '\\"') for s in items]
    return joined.replace("\\", "\\\\").replace('"', '\\"').split("\x00")


def text_array_literal(items: list[str]) -> str:
    return '{"' + '","'.join(escaped(items)) + '"}' if items else "{}"


def float_array_literal(items: list[float]) -> str:
    return "{" + ",".join(map(exact_float, items)) + "}"


UUID = _single("uuid", "str", "uuid", check=canonical_uuid)
TEXT = _single("text", "str", "text", check=text)
SYMBOL = _single("symbol", "str", "text", check=symbol)
JSON = _single("json", "text", "jsonb", read="::text", check=json_object)
DECIMAL = _single("decimal", "decimal", "numeric")
BOOL = _single("bool", "bool", "boolean")
INT64 = _single("int", "i64", "bigint")
INT32 = _single("int32", "i32", "integer")
FLOAT = _single("float", "f64", "double precision", to_sql=lambda v: (exact_float(v),))
BYTES = _single("bytes", "bytes", "bytea", from_sql=bytes)
# Lists travel as array literals: one text value per row, so a batch is a flat text[] for unnest.
TEXT_LIST = Kind(
    "text_list", "list<str>", (Part("", "text[]", "text[]"),), check=texts, to_sql=lambda v: (text_array_literal(v),)
)
FLOAT_LIST = Kind(
    "float_list", "list<f64>", (Part("", "double precision[]", "text[]"),), to_sql=lambda v: (float_array_literal(v),)
)
# timestamptz keeps microseconds; <name>_ns keeps the nanoseconds within them.
TIMESTAMP = Kind(
    "timestamp",
    "timestamp",
    (Part("", "timestamptz", "timestamptz[]"), Part("_ns", "smallint", "smallint[]")),
    to_sql=Timestamp.to_pg,
    from_sql=Timestamp.from_pg,
    to_text=Timestamp.to_pg_text,
)
