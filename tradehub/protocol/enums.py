"""
Every enumeration of the wire contract, in one place. SQLTable, the table
numbers, is declared with the tables in the schema and re-exported here.
"""

from enum import IntEnum

from ..schema.model import SQLTable as SQLTable

MAGIC = 0x4854
ENVELOPE_VERSION = 1
SUPPORTED_VERSIONS = (1,)
HEADER_SIZE = 16
DEFAULT_MAX_FRAME = 1048576
FLAG_MORE = 0x0001
# SUBSCRIBE only: end the subscription named by the request_id.
FLAG_CANCEL = 0x0002


class MessageType(IntEnum):
    HELLO = 1
    HELLO_ACK = 2
    REQUEST = 3
    RESPONSE = 4
    ERROR = 5
    HEARTBEAT = 6
    SHUTDOWN = 7
    SHUTDOWN_ACK = 8
    SUBSCRIBE = 9
    EVENT = 10


class SQLCommand(IntEnum):
    INSERT = 1
    SELECT = 2
    UPDATE = 3
    DELETE = 4
    UPSERT = 5

    @property
    def writes(self):
        return self is not SQLCommand.SELECT


class Role(IntEnum):
    FRONTEND = 1
    ML = 2


class ShutdownReason(IntEnum):
    CLIENT_DONE = 1
    SERVER_STOPPING = 2


class ErrorCode(IntEnum):
    """Each code knows whether the connection closes after it."""

    BAD_FRAME = 1
    UNSUPPORTED_VERSION = 2
    NOT_HANDSHAKEN = 3
    AUTH_FAILED = 4
    PERMISSION_DENIED = 5
    UNKNOWN_TYPE = 6
    UNKNOWN_TABLE = 7
    UNKNOWN_COMMAND = 8
    MALFORMED_PAYLOAD = 9
    VALIDATION_FAILED = 10
    NOT_FOUND = 11
    CONFLICT = 12
    BUSY = 13
    DB_UNAVAILABLE = 14
    SHUTTING_DOWN = 15
    FRAME_TOO_LARGE = 16
    INTERNAL = 17
    POSITION_EXPIRED = 18

    @property
    def closes(self):
        return self in _CLOSING


_CLOSING = frozenset(
    {
        ErrorCode.BAD_FRAME,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.NOT_HANDSHAKEN,
        ErrorCode.AUTH_FAILED,
        ErrorCode.FRAME_TOO_LARGE,
    }
)
