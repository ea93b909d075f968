"""
Requests to controllers: one registry maps (command, table) to a route, and
every failure becomes a typed L{ProtocolError} for the ERROR frame.
"""

import attrs
import psycopg2
from psycopg2 import errorcodes
from twisted.logger import Logger
from twisted.python.failure import Failure

from .db.failures import CommitOutcomeUnknown, PoolClosed, is_transient
from .protocol.enums import ErrorCode
from .protocol.errors import ProtocolError

log = Logger()


@attrs.frozen
class Route:
    """
    How one (command, table) is served. C{handle(value)} answers one
    decoded request with a list of RESPONSE payloads (several when the result
    is chunked). C{handle_group(values)}, when given, serves consecutive
    requests of the same route in one go: the lane may coalesce them.
    """

    command: object
    table: object
    request: object
    handle: object
    handle_group: object = None


class Registry:
    def __init__(self, routes=()):
        self._routes = {}
        for route in routes:
            self.add(route)

    def add(self, route):
        key = (route.command, route.table)
        if key in self._routes:
            raise ValueError(f"{route.command.name} {route.table.name} is registered twice")
        self._routes[key] = route

    def route(self, command, table):
        return self._routes.get((command, table))

    def __iter__(self):
        return iter(self._routes.values())


async def serve_one(route, value):
    """Run one request; any failure comes back as a ProtocolError value, not raised."""
    try:
        return await route.handle(value)
    except Exception as error:
        return as_protocol_error(error)


async def serve_group(route, values):
    """
    Run coalesced requests together; if the group fails as a whole, run them
    one by one so that each gets its own correct answer (the failed group
    wrote nothing: it was one transaction).
    """
    if len(values) == 1:
        return [await serve_one(route, values[0])]
    try:
        return await route.handle_group(values)
    except Exception:
        return [await serve_one(route, value) for value in values]


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
            subject = diag.constraint_name or diag.column_name or "the row"
            return ProtocolError(code, f"{subject} {what}: {(diag.message_detail or diag.message_primary or '').strip()}")
        if is_transient(error):
            return ProtocolError(ErrorCode.DB_UNAVAILABLE, "the database is unavailable; try again")
    log.failure("internal error serving a request", Failure(error))
    return ProtocolError(ErrorCode.INTERNAL, f"internal error ({type(error).__name__})")
