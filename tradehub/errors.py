"""
Every failure below the session as the typed error a client sees: database
errors by SQLSTATE, with the offending row's index when it is known.
"""

import psycopg2
from psycopg2 import errorcodes
from twisted.python.failure import Failure

from .db.failures import CommitOutcomeUnknown, PoolClosed, is_transient
from .protocol.enums import ErrorCode
from .protocol.errors import ProtocolError

_CONSTRAINT_CODES = {
    errorcodes.UNIQUE_VIOLATION: (ErrorCode.CONFLICT, "already exists"),
    errorcodes.EXCLUSION_VIOLATION: (ErrorCode.CONFLICT, "conflicts with an existing row"),
    errorcodes.FOREIGN_KEY_VIOLATION: (ErrorCode.NOT_FOUND, "refers to a row that does not exist"),
    errorcodes.CHECK_VIOLATION: (ErrorCode.VALIDATION_FAILED, "breaks a rule"),
    errorcodes.NOT_NULL_VIOLATION: (ErrorCode.VALIDATION_FAILED, "misses a required value"),
    errorcodes.NUMERIC_VALUE_OUT_OF_RANGE: (ErrorCode.VALIDATION_FAILED, "is out of range"),
    errorcodes.INVALID_TEXT_REPRESENTATION: (ErrorCode.VALIDATION_FAILED, "is not valid"),
    errorcodes.STRING_DATA_RIGHT_TRUNCATION: (ErrorCode.VALIDATION_FAILED, "is too long"),
}


def as_protocol_error(error):
    """The typed error a client sees for any failure below the session."""
    if isinstance(error, ProtocolError):
        return error
    if isinstance(error, PoolClosed):
        return ProtocolError(ErrorCode.SHUTTING_DOWN, "the hub is shutting down")
    if isinstance(error, CommitOutcomeUnknown):
        return ProtocolError(
            ErrorCode.DB_UNAVAILABLE, "the database connection was lost during COMMIT: the outcome is unknown"
        )
    if isinstance(error, psycopg2.Error):
        known = _CONSTRAINT_CODES.get(error.pgcode)
        if known is not None:
            code, what = known
            diag = error.diag
            detail = (diag.message_detail or diag.message_primary or "").strip()
            if error.pgcode == errorcodes.FOREIGN_KEY_VIOLATION and "is still referenced" in detail:
                code, what = ErrorCode.CONFLICT, "is still referenced"
            subject = diag.constraint_name or diag.column_name or "the row"
            return ProtocolError(code, f"{subject} {what}: {detail}")
        if is_transient(error):
            return ProtocolError(ErrorCode.DB_UNAVAILABLE, "the database is unavailable; try again")
    return ProtocolError(ErrorCode.INTERNAL, f"internal error ({type(error).__name__})", cause=Failure(error))


def row_error(error, index):
    """The typed error for a failure caused by row C{index} of a request."""
    typed = as_protocol_error(error)
    return ProtocolError(typed.code, f"row {index}: {typed.message}", row_index=index)


def invalid(index, field, rule):
    """VALIDATION_FAILED naming the row, the field and the rule it breaks."""
    return ProtocolError(ErrorCode.VALIDATION_FAILED, f"row {index}: {field} {rule}", row_index=index)


def not_found(index, table, column, value):
    """NOT_FOUND naming the row of the request and the row it refers to."""
    return ProtocolError(ErrorCode.NOT_FOUND, f"row {index}: no {table} with {column} {value}", row_index=index)
