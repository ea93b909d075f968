"""
Which database failures are worth retrying, which mean the connection
itself is gone, which refusal a client sees for each, and what each is
called in the daemon's metrics.

Retrying is only safe for failures that leave nothing half-done: the
transaction was rolled back by the server (serialization failure, deadlock)
or the connection died before COMMIT was sent. Constraint violations and bad
data are final and never retried.
"""

from __future__ import annotations

from typing import Protocol

import psycopg2
from psycopg2 import errorcodes
from twisted.internet.error import ConnectionDone, ConnectionLost
from txpostgres.txpostgres import RollbackFailed

from ..errors import Busy, Closing, Conflict, Internal, Invalid, Missing, Refused, Unavailable

SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"
# admin_shutdown, crash_shutdown, cannot_connect_now, database_dropped
_SERVER_GOING_AWAY = ("57P01", "57P02", "57P03", "57P04")
TOO_MANY_CONNECTIONS = "53300"


class CommitOutcomeUnknown(Exception):
    """
    The connection died after COMMIT was sent: the transaction may or may not
    have been applied. Never retried, because retrying could apply it twice.
    C{backend} is the server process that received the COMMIT (None when
    not known): once it has ended, what it stored is final.
    """

    def __init__(self, message: str, backend: int | None = None) -> None:
        super().__init__(message)
        self.backend = backend


class DatabaseStalled(ConnectionLost):
    """The server did not answer a statement in time; the connection was dropped (nothing committed)."""


class StatementTimeout(Exception):
    """The server cancelled a statement that ran past the statement timeout; final, not retried."""


class ConnectTimeout(ConnectionLost):
    """No connection could be opened in time."""


class PoolClosed(Exception):
    """The pool was closed while the work waited for a connection."""


def connection_is_gone(error):
    """True when the error means the connection cannot be used again."""
    if isinstance(error, (ConnectionDone, ConnectionLost, RollbackFailed)):
        return True
    if not isinstance(error, psycopg2.Error):
        return False
    code = error.pgcode
    if code:
        return code.startswith("08") or code in _SERVER_GOING_AWAY
    return isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError))


def is_transient(error):
    """True when the same work may succeed if tried again on a fresh connection."""
    if isinstance(error, CommitOutcomeUnknown):
        return False
    if isinstance(error, psycopg2.Error) and error.pgcode in (
        SERIALIZATION_FAILURE,
        DEADLOCK_DETECTED,
        TOO_MANY_CONNECTIONS,
    ):
        return True
    return connection_is_gone(error)


_CONSTRAINT_CODES = {
    errorcodes.UNIQUE_VIOLATION: (Conflict, "already exists"),
    errorcodes.EXCLUSION_VIOLATION: (Conflict, "conflicts with an existing row"),
    errorcodes.FOREIGN_KEY_VIOLATION: (Missing, "refers to a row that does not exist"),
    errorcodes.CHECK_VIOLATION: (Invalid, "breaks a rule"),
    errorcodes.NOT_NULL_VIOLATION: (Invalid, "misses a required value"),
    errorcodes.NUMERIC_VALUE_OUT_OF_RANGE: (Invalid, "is out of range"),
    errorcodes.INVALID_TEXT_REPRESENTATION: (Invalid, "is not valid"),
    errorcodes.STRING_DATA_RIGHT_TRUNCATION: (Invalid, "is too long"),
}
# Errors that a row's values cause (constraint violations, bad data): they
# are final, and worth finding the row for.
ROW_ERRORS = (psycopg2.IntegrityError, psycopg2.DataError)


class FailureObserver(Protocol):
    """Who hears of the pool's retries and of its work that failed for good: the daemon's metrics."""

    def database_retried(self, error: Exception) -> None: ...
    def database_failed(self, error: Exception) -> None: ...


def failure_kind(error: Exception) -> str | None:
    """
    What a database failure is called in metrics: PostgreSQL's name of its
    condition (serialization_failure, unique_violation, ...), connection_lost,
    commit_outcome_unknown, or driver_error for one psycopg2 raised itself.
    None when the error is not the database's (a refusal the work raised, the
    pool closing), so that it is not counted as one.
    """
    if isinstance(error, CommitOutcomeUnknown):
        return "commit_outcome_unknown"
    if isinstance(error, psycopg2.Error) and error.pgcode:
        try:
            return errorcodes.lookup(error.pgcode).lower()
        except KeyError:
            return f"sqlstate_{error.pgcode.lower()}"
    if connection_is_gone(error):
        return "connection_lost"
    if isinstance(error, psycopg2.Error):
        return "driver_error"
    return None


def refusal(error: Exception) -> Refused | None:
    """The refusal a client sees for a database failure, or None when it is not one (a bug)."""
    if isinstance(error, PoolClosed):
        return Closing("the hub is shutting down")
    if isinstance(error, CommitOutcomeUnknown):
        return Unavailable("the database connection was lost during COMMIT: the outcome is unknown")
    if isinstance(error, StatementTimeout):
        return Busy(str(error))
    if isinstance(error, (DatabaseStalled, ConnectTimeout)):
        return Unavailable(f"the database is unavailable: {error}")
    if is_transient(error):
        return Unavailable("the database is unavailable; try again")
    if not isinstance(error, psycopg2.Error):
        return None
    known = _CONSTRAINT_CODES.get(error.pgcode or "")
    if known is not None:
        kind, what = known
        diag = error.diag
        detail = (diag.message_detail or diag.message_primary or "").strip()
        if error.pgcode == errorcodes.FOREIGN_KEY_VIOLATION and "is still referenced" in detail:
            kind, what = Conflict, "is still referenced"
        subject = diag.constraint_name or diag.column_name or "the row"
        return kind(f"{subject} {what}: {detail}")
    return None


def row_refusal(error: Exception, index: int) -> Refused:
    """The refusal for a failure caused by row C{index} of a request, an unexpected one included."""
    refused = refusal(error) or Internal(f"internal error ({type(error).__name__})")
    return refused.at_row(index)
