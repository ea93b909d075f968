"""
Every table's wire layouts, derived from its declaration in the schema: its
row, key and cursor, the five commands' request layouts and the response.
"""

import struct

from ..schema.model import DEFAULT_LIMIT, MAX_LIMIT, Column, SQLTable, Table
from ..schema.tables import TABLES
from .enums import SQLCommand
from .wire import (
    FIELD_TYPES,
    LIST_COUNT,
    Field,
    Layout,
    WireType,
    blob,
    boolean,
    list_of,
    opt,
    string,
    timestamp,
    u32,
    u64,
)

# The affected count that opens every response.
COUNT = u32.construct
# Both counts packed as their codecs pack them: construct's generic build costs microseconds per call.
_pack_count = struct.Struct(COUNT.fmtstr).pack
_pack_list_count = struct.Struct(LIST_COUNT.fmtstr).pack


def field_of(column: Column) -> Field:
    base = FIELD_TYPES[column.kind.wire]
    doc = column.doc
    if column.choices:
        doc += " (" + ", ".join(column.choices) + ")"
    if column.hub_default:
        doc += "; absent: the hub's clock"
    return Field(column.name, opt(base) if column.optional else base, doc)


def _row_type(name: str, layout: Layout) -> WireType:
    return WireType(name, layout.struct, layout.size, f"{name} (dict)", layout=layout)


class TableLayouts:
    """A table as the wire sees it."""

    def __init__(self, table: Table) -> None:
        self.table = table
        title = table.id.name
        fields = {column.name: field_of(column) for column in table.columns}
        self.row = Layout(f"{title} row", list(fields.values()))
        self.key_row = Layout(f"{title} key", [fields[k] for k in table.key])
        self.cursor = Layout(f"{title} cursor", [fields[k] for k in table.sort])
        row_type = _row_type(f"{title} row", self.row)
        key_type = _row_type(f"{title} key", self.key_row)
        self.written = Layout(f"{title} written", [fields[n] for n in table.written])
        written_type = _row_type(f"{title} written", self.written)
        self.rows_request = Layout(
            f"{title} rows",
            [
                Field("echo", boolean, "true: the answer's `rows` are these rows as stored; false: no `rows`"),
                Field("rows", list_of(row_type), "the rows, written all or none"),
            ],
        )
        self.keys_request = Layout(f"{title} keys", [Field("keys", list_of(key_type), "the keys of the rows")])
        select_fields = [
            Field("keys", list_of(key_type), "rows with these keys; empty: no key filter"),
            Field("symbol", opt(string), "only rows of this symbol" if "symbol" in table.by_name else "must be absent"),
        ]
        if table.series:
            select_fields += [
                Field("since", opt(timestamp), f"only rows with {table.series} at or after this"),
                Field("until", opt(timestamp), f"only rows with {table.series} before this"),
            ]
        select_fields += [
            Field("limit", u32, f"most rows to return; 0 means {DEFAULT_LIMIT}; at most {MAX_LIMIT}"),
            Field("after", opt(blob), "next_cursor of the previous page; absent for the first page"),
        ]
        self.select_request = Layout(f"{title} select", select_fields)
        self.response = Layout(
            f"{title} response",
            [
                Field("affected", u32, "rows written, or rows in this page"),
                Field("rows", list_of(row_type), "SELECT: the page; a write: the rows as stored, if it asked (echo)"),
                Field(
                    "written",
                    list_of(written_type),
                    "a write: each row's key and the columns the hub set, in the request's order; SELECT: none",
                ),
                Field("next_cursor", opt(blob), "SELECT: pass as `after` for the next page; absent on the last page"),
            ],
        )
        subscribe_fields = [
            Field(
                "from_position",
                opt(u64),
                "absent: changes after the confirmation; present: every matching change after it, then live",
            ),
            Field(
                "symbols",
                list_of(string),
                "only rows of these symbols; empty: every row"
                + ("" if "symbol" in table.by_name else " (this table has no symbol: must be empty)"),
            ),
        ]
        subscribe_fields += [
            Field(
                f"{name}s",
                list_of(FIELD_TYPES[table.by_name[name].kind.wire]),
                f"only rows whose {name} is one of these; empty: every row",
            )
            for name in table.follow
        ]
        self.subscribe = Layout(f"{title} subscribe", subscribe_fields)
        position = Field("position", u64, "the change's position in the change log")
        self.event = Layout(f"{title} event (INSERT, UPDATE)", [position, *fields.values()])
        self.deleted_event = Layout(f"{title} event (DELETE)", [position, *(fields[k] for k in table.key)])
        self._counts: dict[int, bytes] = {}
        self._next_cursor = Layout(f"{title} next cursor", self.response.fields[-1:])

    def answer(
        self, affected: int, rows: list[bytes], next_cursor: bytes | None = None, written: list[bytes] | None = None
    ) -> bytes:
        """
        The response, its rows and written entries already encoded one by one
        (L{row}, L{written}), so that a long page can be encoded in slices:
        the bytes of C{response.encode} with the same values.
        """
        if not rows and not written and next_cursor is None:
            return self._counted(affected)
        written = written or []
        return b"".join(
            (
                _pack_count(affected),
                _pack_list_count(len(rows)),
                *rows,
                _pack_list_count(len(written)),
                *written,
                self._next_cursor.encode({"next_cursor": next_cursor}),
            )
        )

    def _counted(self, affected: int) -> bytes:
        """An answer with a count alone (a DELETE's, an empty page's): made once per count."""
        answer = self._counts.get(affected)
        if answer is None:
            answer = self.response.encode({"affected": affected, "rows": [], "written": [], "next_cursor": None})
            if len(self._counts) < 1024:
                self._counts[affected] = answer
        return answer

    def request(self, command: SQLCommand) -> Layout:
        return {
            SQLCommand.INSERT: self.rows_request,
            SQLCommand.UPSERT: self.rows_request,
            SQLCommand.UPDATE: self.rows_request,
            SQLCommand.DELETE: self.keys_request,
            SQLCommand.SELECT: self.select_request,
        }[command]


LAYOUTS: dict[SQLTable, TableLayouts] = {table_id: TableLayouts(table) for table_id, table in TABLES.items()}
