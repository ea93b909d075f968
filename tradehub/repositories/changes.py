"""
The change log's SQL (the tables, triggers and functions are in
schema/0013_change_log.sql): numbering committed changes, trimming old
ones, and reading one table's changes after a position, each row rebuilt
as its table's repository reads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..errors import Expired
from ..schema.model import SQLTable
from .table import Repository, Row

# The channel change_log_relay() notifies with the last position.
CHANNEL = "tradehub_change"
# Changes numbered per relay statement.
RELAY_BATCH = 10_000


@attrs.define
class Change:
    """
    One committed change: its position, its kind (1 INSERT, 3 UPDATE, 4 DELETE)
    and the row. C{event} keeps its EVENT payload once encoded, so that every
    live subscriber of a table shares one encoding.
    """

    position: int
    op: int
    row: Row
    event: bytes | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class Head:
    """The last position given, and the positions retention removed (at or below C{trimmed_through})."""

    last_position: int
    trimmed_through: int

    def keeps(self, position: int) -> None:
        """Raise L{Expired} unless the log still holds every change after C{position}."""
        if position < self.trimmed_through:
            raise Expired(
                f"position {position} is older than the change log keeps (it keeps positions after "
                f"{self.trimmed_through})"
            )


class ChangeLogRepository:
    RELAY = "SELECT change_log_relay(%s)"
    # Put before a statement sent on its own, it makes the statement number
    # its changes as it commits (schema/0014_insert_alone.sql): no relay after.
    NUMBER_AT_COMMIT = "SELECT set_config('tradehub.number_at_commit', 'on', true); "
    # Sent with each COMMIT of the hub's transactions: they number their own
    # changes (and what else is pending) as they commit, unless a relay holds
    # the head (then they NOTIFY 'pending'): no relay round trip after them.
    NUMBER_PENDING = f"SELECT change_log_number({RELAY_BATCH}, false)"
    # A NOTIFY payload: changes are pending that only a relay will number.
    PENDING = "pending"
    TRIM = "SELECT change_log_trim(now() - %s * interval '1 second', %s)"
    HEAD = "SELECT last_position, trimmed_through FROM change_log_head"

    def __init__(self, repositories: Mapping[SQLTable, Repository]) -> None:
        self._tables = {table: self._reader(repository) for table, repository in repositories.items()}
        self._repositories = dict(repositories)

    @staticmethod
    def _reader(repository: Repository) -> str:
        """
        The page is chosen on the log alone (filters on the stored JSON),
        and only its rows are rebuilt as the table's: however far behind
        a reader is, a page costs its own rows, never the whole gap.
        """
        return (
            (
                "SELECT c.position, c.op, {select_list} FROM (SELECT position, op, row_data FROM change_log"
                " WHERE table_name = %s AND position > %s AND position <= %s{filters}"
                " ORDER BY position LIMIT {limit}) c"
                " CROSS JOIN LATERAL jsonb_populate_record(NULL::{name}, c.row_data) AS t ORDER BY c.position"
            )
            .replace("{select_list}", repository.select_list)
            .replace("{name}", repository.name)
        )

    def changes_statement(
        self, table: SQLTable, after: int, through: int, filters: Mapping[str, Sequence[Any]], limit: int
    ) -> tuple[str, list]:
        """
        The changes of C{table} positioned in (after, through], in position
        order, at most C{limit}; C{filters} maps a column to the values it
        may have (an empty list filters nothing).
        """
        repository = self._repositories[table]
        params: list[Any] = [repository.table.sql_name, after, through]
        conditions = ""
        for column, values in filters.items():
            if not values:
                continue
            kind = repository.table.by_name[column].kind
            [part] = kind.parts
            conditions += f" AND (row_data->>%s)::{part.sql} = ANY(%s::{part.sql}[])"
            params += [column, [kind.params(value)[0] for value in values]]
        statement = self._tables[table].replace("{filters}", conditions).replace("{limit}", str(int(limit)))
        return statement, params

    def changes(self, table: SQLTable, records: list[tuple]) -> list[Change]:
        row = self._repositories[table].row
        return [Change(record[0], record[1], row(record[2:])) for record in records]
