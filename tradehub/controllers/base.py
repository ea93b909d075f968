"""
The five commands of one table: validation, then one transaction through
the table's repository. A table's controller adds its domain rules through
the hooks; everything else is shared.

Writes are all or none: a request's rows are checked before anything is
written, then written in one transaction; when the database refuses a row of
a batch, the error names that row's index.
"""

import json
import time
import uuid

import psycopg2

from ..errors import invalid, not_found, row_error
from ..protocol.enums import ErrorCode, SQLCommand
from ..protocol.errors import ProtocolError
from ..protocol.tables import MAX_LIMIT
from ..protocol.wire import Timestamp
from ..repositories.table import Repository

# Errors that a row's values cause (constraint violations, bad data): they
# are final, and worth finding the row for.
ROW_ERRORS = (psycopg2.IntegrityError, psycopg2.DataError)


def key_tuple(spec, row):
    return tuple(row[k] for k in spec.key)


class TableController:
    """
    Hooks for a table's rules: C{rules(row, index)} checks one row on its
    own; C{prepare(cursor, rows, command, existing)} checks rows against the
    database inside the write's transaction; C{written(cursor, rows, command)}
    makes the writes that follow from them; C{deletable(row, index)} guards
    DELETE.
    """

    computed_sql = None

    def __init__(self, spec, pool):
        self.spec = spec
        self.pool = pool
        self.repository = Repository(spec, self.computed_sql)
        self._checks = [(c.name, self._column_check(c)) for c in spec.columns if self._column_check(c)]
        self._hub_defaults = [c.name for c in spec.columns if c.hub_default]
        self._key_checks = [(name, check) for name, check in self._checks if name in spec.key]

    # Row checks

    def _column_check(self, column):
        if column.kind == "uuid":
            return _canonical_uuid
        if column.kind == "json":
            return _json_object
        if column.name == "symbol":
            return _symbol
        if column.choices:
            choices = frozenset(column.choices)

            def choice(value):
                if value not in choices:
                    raise ValueError("must be one of " + ", ".join(column.choices))
                return value

            return choice
        return None

    def checked(self, rows):
        """The rows normalized (canonical uuids, upper-case symbols), or VALIDATION_FAILED."""
        for index, row in enumerate(rows):
            for name, check in self._checks:
                value = row[name]
                if value is None:
                    continue
                try:
                    row[name] = check(value)
                except ValueError as error:
                    raise invalid(index, name, str(error)) from None
            for name in self._hub_defaults:
                if row[name] is None:
                    row[name] = Timestamp(time.time_ns())
            self.rules(row, index)
        return rows

    def rules(self, row, index):
        """Domain rules of one row; raise L{invalid} to refuse it."""

    async def prepare(self, cursor, rows, command, existing):
        """Rules that need the database; C{existing} maps keys to stored rows (UPDATE, UPSERT)."""

    async def written(self, cursor, rows, command):
        """Writes that follow from these rows, in the same transaction."""

    def deletable(self, row, index):
        """Refuse the DELETE of a stored row by raising."""

    # Commands

    async def insert(self, request):
        rows = self.checked(request["rows"])
        stored = await self._in_transaction(self._insert, rows)
        return self._answer(len(rows), stored)

    async def insert_group(self, requests):
        """Coalesced INSERTs: one transaction, one statement, one answer each."""
        batches = [self.checked(request["rows"]) for request in requests]
        rows = [row for batch in batches for row in batch]
        stored = await self._in_transaction(self._insert, rows)
        answers, start = [], 0
        for batch in batches:
            answers.append(self._answer(len(batch), stored[start : start + len(batch)]))
            start += len(batch)
        return answers

    async def _in_transaction(self, write, rows):
        """
        Run a batch write in one transaction. When the database refuses the
        batch (it was rolled back whole), write it again row by row in a new
        transaction to name the row it refuses.
        """
        try:
            return await self.pool.transaction(write, rows, False)
        except _BatchRefused:
            return await self.pool.transaction(write, rows, True)

    async def _insert(self, cursor, rows, one_by_one):
        await self.prepare(cursor, rows, SQLCommand.INSERT, {})
        stored = await self._write(cursor, rows, self.repository.insert, one_by_one)
        await self.written(cursor, rows, SQLCommand.INSERT)
        return stored

    async def upsert(self, request):
        stored = await self.upsert_rows(request["rows"])
        return self._answer(len(request["rows"]), stored)

    async def upsert_rows(self, rows):
        """UPSERT from inside the hub (the Alpaca sync): the same rules as over the wire."""
        return await self._in_transaction(self._upsert, self.checked(rows))

    async def _upsert(self, cursor, rows, one_by_one):
        _no_repeated_keys(self.spec, rows)
        existing = await self.repository.locked(cursor, rows)
        await self.prepare(cursor, rows, SQLCommand.UPSERT, existing)
        stored = await self._write(cursor, rows, self.repository.upsert, one_by_one)
        await self.written(cursor, rows, SQLCommand.UPSERT)
        return stored

    async def update(self, request):
        stored = await self.update_rows(request["rows"])
        return self._answer(len(request["rows"]), stored)

    async def update_rows(self, rows):
        return await self.pool.transaction(self._update, self.checked(rows))

    async def stored(self, keys):
        """The stored rows with these keys, by key tuple."""
        return await self.pool.transaction(self.repository.locked, list(keys))

    async def _update(self, cursor, rows):
        _no_repeated_keys(self.spec, rows)
        existing = await self.repository.locked(cursor, rows)
        for index, row in enumerate(rows):
            if key_tuple(self.spec, row) not in existing:
                raise _missing(index, self.spec, row)
        await self.prepare(cursor, rows, SQLCommand.UPDATE, existing)
        stored = []
        for index, row in enumerate(rows):
            try:
                stored.append(await self.repository.update(cursor, row))
            except ROW_ERRORS as error:
                raise row_error(error, index) from None
        await self.written(cursor, rows, SQLCommand.UPDATE)
        return stored

    async def delete(self, request):
        affected = await self.delete_keys(request["keys"])
        return self._answer(affected, [])

    async def delete_keys(self, keys):
        for index, key in enumerate(keys):
            self._check_key(key, index)
        return await self.pool.transaction(self._delete, keys)

    async def _delete(self, cursor, keys):
        _no_repeated_keys(self.spec, keys)
        existing = await self.repository.locked(cursor, keys)
        for index, key in enumerate(keys):
            row = existing.get(key_tuple(self.spec, key))
            if row is None:
                raise _missing(index, self.spec, key)
            self.deletable(row, index)
        try:
            return await self.repository.delete(cursor, keys)
        except ROW_ERRORS as error:
            raise row_error(error, 0 if len(keys) == 1 else -1) from None

    async def select(self, request):
        query = dict(request)
        if query["limit"] > MAX_LIMIT:
            raise ProtocolError(ErrorCode.VALIDATION_FAILED, f"limit must be at most {MAX_LIMIT}")
        if len(query["keys"]) > MAX_LIMIT:
            raise ProtocolError(ErrorCode.VALIDATION_FAILED, f"at most {MAX_LIMIT} keys per SELECT")
        for index, key in enumerate(query["keys"]):
            self._check_key(key, index)
        if query["symbol"] is not None:
            if "symbol" not in self.spec.by_name:
                raise ProtocolError(ErrorCode.VALIDATION_FAILED, f"{self.spec.table.name} has no symbol to filter on")
            query["symbol"] = query["symbol"].upper()
        query["position"] = self._position(query["after"])
        statement, params, limit = self.repository.select_statement(query)
        records = await self.pool.query(statement, params)
        rows = [self.repository.row(r) for r in records[:limit]]
        next_cursor = None
        if len(records) > limit:
            next_cursor = self.spec.cursor.encode({name: rows[-1][name] for name in self.spec.sort})
        return self.spec.response.encode({"affected": len(rows), "rows": rows, "next_cursor": next_cursor})

    def _position(self, after):
        if after is None:
            return None
        try:
            return self.spec.cursor.decode(after)
        except ProtocolError:
            raise ProtocolError(ErrorCode.VALIDATION_FAILED, "after is not a cursor of this table") from None

    def _check_key(self, key, index):
        """A key gets the same normalization as its columns (canonical uuid, upper-case symbol)."""
        for name, check in self._key_checks:
            try:
                key[name] = check(key[name])
            except ValueError as error:
                raise invalid(index, name, str(error)) from None

    async def _write(self, cursor, rows, write, one_by_one):
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
                    raise row_error(error, index) from None
            return stored
        try:
            return await write(cursor, rows)
        except ROW_ERRORS as error:
            raise _BatchRefused() from error

    def _answer(self, affected, stored):
        rows = stored if self.spec.echo_writes else []
        return self.spec.response.encode({"affected": affected, "rows": rows, "next_cursor": None})


class _BatchRefused(Exception):
    """The database refused a multi-row statement; which row is not known yet."""


def _missing(index, spec, row):
    return not_found(index, spec.sql_name, "+".join(spec.key), "+".join(str(row[k]) for k in spec.key))


def _no_repeated_keys(spec, rows):
    seen = {}
    for index, row in enumerate(rows):
        key = key_tuple(spec, row)
        if key in seen:
            raise invalid(index, "key", f"repeats row {seen[key]}'s key in one request")
        seen[key] = index


def _canonical_uuid(value):
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise ValueError(f"{value!r} is not a UUID") from None


def _symbol(value):
    value = value.strip().upper()
    if not 1 <= len(value) <= 64:
        raise ValueError("must be 1 to 64 characters")
    return value


def _json_object(value):
    try:
        parsed = json.loads(value)
    except ValueError:
        raise ValueError("is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ValueError("must be a JSON object")
    return value
