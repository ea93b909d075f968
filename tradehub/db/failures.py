"""
Which database failures are worth retrying, and which mean the connection
itself is gone.

Retrying is only safe for failures that leave nothing half-done: the
transaction was rolled back by the server (serialization failure, deadlock)
or the connection died before COMMIT was sent. Constraint violations and bad
data are final and never retried.
"""

import psycopg2
from twisted.internet.error import ConnectionDone, ConnectionLost
from txpostgres.txpostgres import RollbackFailed

SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"
# admin_shutdown, crash_shutdown, cannot_connect_now, database_dropped
_SERVER_GOING_AWAY = ("57P01", "57P02", "57P03", "57P04")
TOO_MANY_CONNECTIONS = "53300"


class CommitOutcomeUnknown(Exception):
    """
    The connection died after COMMIT was sent: the transaction may or may not
    have been applied. Never retried, because retrying could apply it twice.
    """


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
