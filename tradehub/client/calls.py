"""
The table calls both Python clients share: request payloads from rows, keys
and queries, chunked REQUEST frames, and decoded answers.
"""

from collections.abc import Iterable
from typing import Any

import attrs

from ..protocol.enums import MessageType, SQLCommand, SQLTable
from ..protocol.messages import split_frames
from ..protocol.tables import LAYOUTS


def request_frames(payload, request_id, command, table, max_frame):
    """A REQUEST as frames of at most max_frame bytes."""
    return split_frames(MessageType.REQUEST, payload, request_id, max_frame, command, table)


@attrs.frozen
class Result:
    """
    A decoded RESPONSE: rows written or returned; the rows (a SELECT's page,
    or a write's rows as stored when it asked for them with C{echo});
    C{written}: each written row's key and the columns the hub set; and the
    cursor of the next page.
    """

    affected: int
    rows: list
    next_cursor: bytes | None = None
    written: list = attrs.field(factory=list)


def select_payload(table, keys=(), symbol=None, since=None, until=None, limit=0, after=None):
    """The SELECT request payload of a table (time window only for time-series tables)."""
    layouts = LAYOUTS[SQLTable(table)]
    query = {"keys": list(keys), "symbol": symbol, "limit": limit, "after": after}
    if layouts.table.series:
        query.update(since=since, until=until)
    elif since is not None or until is not None:
        raise ValueError(f"{layouts.table.id.name} is not a time series")
    return layouts.select_request.encode(query)


def rows_payload(table, rows, echo=False):
    """
    The INSERT, UPSERT or UPDATE payload: rows are dicts keyed by column
    name; with C{echo}, the answer carries them as stored.
    """
    return LAYOUTS[SQLTable(table)].rows_request.encode({"echo": echo, "rows": list(rows)})


def keys_payload(table, keys):
    return LAYOUTS[SQLTable(table)].keys_request.encode({"keys": list(keys)})


@attrs.frozen
class Event:
    """
    One committed change pushed to a subscription: its change-log position,
    its kind (INSERT, UPDATE or DELETE) and the row as stored (for DELETE,
    only the row's key).
    """

    position: int
    kind: SQLCommand
    table: SQLTable
    row: dict


def subscribe_payload(table, from_position=None, symbols=(), **filters):
    """
    A table's SUBSCRIBE payload. C{filters} are the table's own (model_ids,
    account_ids, names): each keeps only rows whose column is one of the
    values; empty keeps every row.
    """
    layout = LAYOUTS[SQLTable(table)].subscribe
    value = {"from_position": from_position, "symbols": list(symbols)}
    for field in layout.fields[2:]:
        value[field.name] = list(filters.pop(field.name, ()))
    if filters:
        known = ", ".join(f.name for f in layout.fields[1:])
        raise TypeError(f"{SQLTable(table).name} has no filter {', '.join(filters)}; its filters are {known}")
    return layout.encode(value)


def decode_event(command, table, payload):
    """An EVENT's payload (joined when it came in several frames) as an L{Event}."""
    kind, table = SQLCommand(command), SQLTable(table)
    layouts = LAYOUTS[table]
    value = dict((layouts.deleted_event if kind == SQLCommand.DELETE else layouts.event).decode(payload))
    position = value.pop("position")
    return Event(position, kind, table, value)


def decode_result(table, payload):
    """A table's RESPONSE payload (joined when it came in several frames) as a L{Result}."""
    answer = LAYOUTS[SQLTable(table)].response.decode(payload)
    rows, written = ([dict(row) for row in answer[name]] for name in ("rows", "written"))
    return Result(answer["affected"], rows, answer["next_cursor"], written)


class TableCalls:
    """
    The five commands of any table, for a client whose C{execute(command,
    table, payload)} returns a L{Result} (blocking) or a Deferred of one (Twisted).
    """

    def execute(self, command: SQLCommand, table: SQLTable, payload: bytes) -> Any:
        raise NotImplementedError

    def insert(self, table: SQLTable, rows: Iterable[dict], echo: bool = False) -> Any:
        """
        Write rows, all or none. The answer's C{written} gives each row's key
        and the columns the hub set; its C{rows}, only with C{echo}, the rows
        as stored (a submitted order's always: Alpaca set its id and status).
        """
        return self.execute(SQLCommand.INSERT, table, rows_payload(table, rows, echo))

    def upsert(self, table: SQLTable, rows: Iterable[dict], echo: bool = False) -> Any:
        return self.execute(SQLCommand.UPSERT, table, rows_payload(table, rows, echo))

    def update(self, table: SQLTable, rows: Iterable[dict], echo: bool = False) -> Any:
        return self.execute(SQLCommand.UPDATE, table, rows_payload(table, rows, echo))

    def delete(self, table: SQLTable, keys: Iterable[dict]) -> Any:
        return self.execute(SQLCommand.DELETE, table, keys_payload(table, keys))

    def select(self, table: SQLTable, **query: Any) -> Any:
        """One page: keys=, symbol=, since=, until=, limit=, after=."""
        return self.execute(SQLCommand.SELECT, table, select_payload(table, **query))
