"""
The five commands of one table, on rows: validation, then one transaction
through the table's repository. A table's controller declares its table and
adds its domain rules through the hooks; everything else is shared. The
wire, the Alpaca sync and the streams all call this one API.

Writes are all or none: a request's rows are checked before anything is
written, then written in one transaction; when the database refuses a row of
a batch, the refusal names that row's index.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, ClassVar

import attrs
import psycopg2

from ..db.failures import ROW_ERRORS, CommitOutcomeUnknown, is_transient, row_refusal
from ..db.pool import Pool, prepared
from ..errors import Invalid, invalid, not_found
from ..repositories.changes import ChangeLogRepository
from ..repositories.table import GUARD_REFUSED, Repository, Row
from ..schema.kinds import text
from ..schema.model import MAX_LIMIT, Table
from ..schema.timestamp import Timestamp
from ..slices import in_slices

# A write whose COMMIT answer is lost this many times in a row is left unknown.
MAX_LOST_COMMITS = 3


@attrs.frozen
class Page:
    """One page of a SELECT: its rows (shaped), whether more follow, and its last row (for the next page's cursor)."""

    rows: list[Any]
    more: bool
    last: Row | None


class TableController:
    """
    Hooks for a table's rules: C{rules(row, index)} checks one row on its
    own; C{prepare(cursor, rows, command, existing)} checks rows against the
    database inside the write's transaction; C{written(cursor, rows, command)}
    makes the writes that follow from them; C{deletable(row, index)} guards
    DELETE. C{broker} is the Alpaca client, or None when it is off.
    """

    table: ClassVar[Table]
    repository_class: ClassVar[type[Repository]] = Repository
    computed_sql: ClassVar[dict[str, str] | None] = None
    # An SQL condition on each new row (named u) that holds exactly when
    # prepare() accepts it on INSERT. With it, or with neither prepare() nor
    # written(), an INSERT is one statement on its own: one round trip.
    insert_guard: ClassVar[str | None] = None

    def __init__(self, pool: Pool, broker: Any = None) -> None:
        self.pool = pool
        self.broker = broker
        self.repository = self.repository_class(self.table, self.computed_sql)
        self._checked = [c for c in self.table.columns if c.checked]
        self._hub_defaults = [c.name for c in self.table.columns if c.hub_default]
        self._key_checked = [c for c in self._checked if c.name in self.table.key]
        cls = type(self)
        self._insert_alone = self.insert_guard is not None or (
            cls.prepare is TableController.prepare and cls.written is TableController.written
        )

    # Row checks

    def checked(self, rows: list[Row]) -> list[Row]:
        """The rows normalized (canonical uuids, upper-case symbols), or Invalid."""
        for index, row in enumerate(rows):
            _normalize(self._checked, row, index)
            for name in self._hub_defaults:
                if row[name] is None:
                    row[name] = Timestamp.now()
            self.rules(row, index)
        return rows

    def rules(self, row: Row, index: int) -> None:
        """Domain rules of one row; raise L{invalid} to refuse it."""

    async def prepare(self, cursor, rows: list[Row], command: str, existing: dict[tuple, Row]) -> None:
        """Rules that need the database; C{existing} maps keys to stored rows (UPDATE, UPSERT)."""

    async def written(self, cursor, rows: list[Row], command: str) -> None:
        """Writes that follow from these rows, in the same transaction."""

    def deletable(self, row: Row, index: int) -> None:
        """Refuse the DELETE of a stored row by raising."""

    # Commands

    def echoes(self, rows: list[Row], echo: bool) -> bool:
        """Whether a write of these rows answers with them as stored (C{echo}: what its client asked)."""
        return echo

    async def insert(self, rows: list[Row], echo: bool = True) -> list[Row]:
        """
        The rows as stored; without C{echo}, the rows as the hub wrote them
        (the database returns nothing: the cheaper path).
        """
        return await self._new(self.checked(rows), echo=echo)

    async def insert_batches(self, batches: list[list[Row]], echo: bool = True) -> list[list[Row]]:
        """Coalesced INSERTs: one statement, the rows of each batch (as L{insert} returns them)."""
        for batch in batches:
            self.checked(batch)
        rows = await self._new([row for batch in batches for row in batch], echo=echo)
        answers, start = [], 0
        for batch in batches:
            answers.append(rows[start : start + len(batch)])
            start += len(batch)
        return answers

    async def insert_feed(self, rows: list[Row]) -> list[str]:
        """
        INSERT what a feed reports (Alpaca's market data): a row that breaks
        a rule is left out, and why is returned; a row whose key is stored
        already is a repeat, and skipped; the rest go in together.
        """
        kept, left = rows, []
        try:
            self.checked(rows)
        except Invalid:
            # Checking is idempotent: the rows checked before the refused one pass again.
            kept = []
            for index, row in enumerate(rows):
                try:
                    kept += self.checked([row])
                except Invalid as error:
                    left.append(f"row {index}: {error.message.removeprefix('row 0: ')}")
        if kept:
            await self._new(kept, skip_stored=True, echo=False)
        return left

    async def _new(self, rows: list[Row], skip_stored: bool = False, echo: bool = True) -> list[Row]:
        """
        INSERT new rows: as one statement on its own where the table allows
        it. When the database refuses that statement (a row, or the guard),
        it stored nothing: the transaction that follows names the row and why.
        Returns the rows as stored, or (without C{echo}) as written.
        """
        if self._insert_alone:
            try:
                stored = await self._inserted(lambda rows: self._alone(rows, skip_stored, echo), rows)
                return stored if echo else rows
            except ROW_ERRORS:
                pass
            except psycopg2.Error as error:
                if error.pgcode != GUARD_REFUSED:
                    raise
        write = partial(self._insert, skip_stored=skip_stored, echo=echo)
        stored = await self._inserted(self.in_transaction(write), rows)
        return stored if echo else rows

    def in_transaction(self, write) -> Callable[[list[Row]], Awaitable[list[Row]]]:
        """An attempt for L{_inserted}: C{write(cursor, rows, one_by_one)} in one transaction."""
        return lambda rows: self._in_transaction(write, rows)

    async def _alone(self, rows: list[Row], skip_stored: bool, echo: bool) -> list[Row]:
        tail = self.repository.skip_stored if skip_stored else ""
        statement, params = self.repository.insert_statement(rows, self.insert_guard, tail, echo)
        records = await self.pool.write(prepared(statement, ChangeLogRepository.NUMBER_AT_COMMIT), params)
        return self.repository.stored_rows(records)

    async def _in_transaction(self, write, rows: list[Row]) -> list[Row]:
        """
        Run a batch write in one transaction. When the database refuses the
        batch (it was rolled back whole), write it again row by row in a new
        transaction to name the row it refuses.
        """
        try:
            return await self.pool.transaction(write, rows, False)
        except _BatchRefused:
            return await self.pool.transaction(write, rows, True)

    async def _inserted(
        self, attempt: Callable[[list[Row]], Awaitable[list[Row]]], rows: list[Row], lost_commits: int = 0
    ) -> list[Row]:
        """
        Insert new rows (C{attempt(rows)}), learning the truth when the answer
        to COMMIT is lost: the rows went in one transaction, so either every key is stored or
        none of them by it. Once the server process that received the COMMIT
        has ended, the keys tell which: all present, the rows were stored;
        otherwise they were not, and are written again (a key someone else
        stored meanwhile is then refused like any other). Still unknown, the
        error stands: the client hears DB_UNAVAILABLE saying so.
        """
        try:
            return await attempt(rows)
        except CommitOutcomeUnknown as outcome:
            if lost_commits >= MAX_LOST_COMMITS:
                raise
            await self.pool.settled(outcome)
            try:
                found = await self.stored(rows)
            except Exception as error:
                if is_transient(error):
                    raise outcome from error
                raise
            keys = [self.table.key_of(row) for row in rows]
            if all(key in found for key in keys):
                return [found[key] for key in keys]
            return await self._inserted(attempt, rows, lost_commits + 1)

    async def _insert(
        self, cursor, rows: list[Row], one_by_one: bool, skip_stored: bool = False, echo: bool = True
    ) -> list[Row]:
        await self.prepare(cursor, rows, "INSERT", {})
        write = self.repository.insert_new if skip_stored else partial(self.repository.insert, returning=echo)
        stored = await self._write(cursor, rows, write, one_by_one)
        await self.written(cursor, rows, "INSERT")
        return stored

    async def upsert(self, rows: list[Row]) -> list[Row]:
        return await self._in_transaction(self._upsert, self.checked(rows))

    async def upsert_in(self, cursor, rows: list[Row], existing: dict[tuple, Row] | None = None) -> list[Row]:
        """
        UPSERT within the caller's transaction, beside other tables' writes
        that stand or fall with it; C{existing}: the rows the caller locked.
        """
        return await self._upsert(cursor, self.checked(rows), True, existing=existing)

    async def _upsert(
        self,
        cursor,
        rows: list[Row],
        one_by_one: bool,
        command: str = "UPSERT",
        existing: dict[tuple, Row] | None = None,
    ) -> list[Row]:
        self._no_repeated_keys(rows)
        if existing is None:
            existing = await self.repository.locked(cursor, rows)
        await self.prepare(cursor, rows, command, existing)
        stored = await self._write(cursor, rows, self.repository.upsert, one_by_one)
        await self.written(cursor, rows, command)
        return stored

    async def update(self, rows: list[Row]) -> list[Row]:
        return await self.pool.transaction(self._update, self.checked(rows))

    async def stored(self, keys: list[Row]) -> dict[tuple, Row]:
        """The stored rows with these keys, by key tuple."""
        return await self.pool.transaction(self.repository.locked, list(keys))

    async def _update(self, cursor, rows: list[Row]) -> list[Row]:
        self._no_repeated_keys(rows)
        existing = await self.repository.locked(cursor, rows)
        for index, row in enumerate(rows):
            if self.table.key_of(row) not in existing:
                raise self._missing(index, row)
        await self.prepare(cursor, rows, "UPDATE", existing)
        stored = []
        for index, row in enumerate(rows):
            try:
                stored.append(await self.repository.update(cursor, row))
            except ROW_ERRORS as error:
                raise row_refusal(error, index) from None
        await self.written(cursor, rows, "UPDATE")
        return stored

    async def delete(self, keys: list[Row]) -> int:
        """How many rows were deleted: every key must name a stored row."""
        return await self.pool.transaction(self.delete_in, keys)

    async def delete_in(self, cursor, keys: list[Row]) -> int:
        """DELETE within the caller's transaction."""
        for index, key in enumerate(keys):
            _normalize(self._key_checked, key, index)
        return await self._delete(cursor, keys)

    async def _delete(self, cursor, keys: list[Row]) -> int:
        self._no_repeated_keys(keys)
        existing = await self.repository.locked(cursor, keys)
        for index, key in enumerate(keys):
            row = existing.get(self.table.key_of(key))
            if row is None:
                raise self._missing(index, key)
            self.deletable(row, index)
        try:
            return await self.repository.delete(cursor, keys)
        except ROW_ERRORS as error:
            raise row_refusal(error, 0 if len(keys) == 1 else -1) from None

    async def select(self, query: dict[str, Any], shape: Callable[[Row], Any] | None = None) -> Page:
        """
        One page of rows: C{query} holds keys, symbol, since and until (time
        series), limit, and position (the sort columns of the previous page's
        last row, or None). C{shape}, when given, is what each row becomes
        (the wire encodes it): applied a slice at a time as rows are made, so
        that a page's rows never all exist as dicts at once.
        """
        if query["limit"] > MAX_LIMIT:
            raise Invalid(f"limit must be at most {MAX_LIMIT}")
        if len(query["keys"]) > MAX_LIMIT:
            raise Invalid(f"at most {MAX_LIMIT} keys per SELECT")
        for index, key in enumerate(query["keys"]):
            _normalize(self._key_checked, key, index)
        if query["symbol"] is not None:
            if "symbol" not in self.table.by_name:
                raise Invalid(f"{self.table.id.name} has no symbol to filter on")
            try:
                symbol = text(query["symbol"]).upper()
            except ValueError as error:
                raise Invalid(f"symbol {error}") from None
            query = dict(query, symbol=symbol)
        statement, params, limit = self.repository.select_statement(query)
        records = await self.pool.query(statement, params)
        more = len(records) > limit
        del records[limit:]
        row = self.repository.row
        shaped = await in_slices(row if shape is None else lambda record: shape(row(record)), records)
        return Page(shaped, more, row(records[-1]) if records else None)

    async def _write(self, cursor, rows: list[Row], write, one_by_one: bool) -> list[Row]:
        """
        One statement for all rows; or, looking for the row the database
        refuses, one statement per row.
        """
        if len(rows) == 1 or one_by_one:
            stored = []
            for index, row in enumerate(rows):
                try:
                    stored += await write(cursor, [row])
                except ROW_ERRORS as error:
                    raise row_refusal(error, index) from None
            return stored
        try:
            return await write(cursor, rows)
        except ROW_ERRORS as error:
            raise _BatchRefused() from error

    def _missing(self, index: int, row: Row):
        key = self.table.key
        return not_found(index, self.table.sql_name, "+".join(key), "+".join(str(row[k]) for k in key))

    def _no_repeated_keys(self, rows: list[Row]) -> None:
        seen: dict[tuple, int] = {}
        for index, row in enumerate(rows):
            key = self.table.key_of(row)
            if key in seen:
                raise invalid(index, "key", f"repeats row {seen[key]}'s key in one request")
            seen[key] = index


class _BatchRefused(Exception):
    """The database refused a multi-row statement; which row is not known yet."""


def _normalize(columns, row: Row, index: int) -> None:
    for column in columns:
        value = row[column.name]
        if value is None:
            continue
        try:
            row[column.name] = column.check(value)
        except ValueError as error:
            raise invalid(index, column.name, str(error)) from None
