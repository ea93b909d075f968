"""
The envelope: the 16-byte header and the session payloads (HELLO,
HELLO_ACK, ERROR, SHUTDOWN, SHUTDOWN_ACK), as attrs values with layouts.
"""

import struct

import attrs

from .enums import ENVELOPE_VERSION, MAGIC, MessageType
from .wire import Field, Layout, i32, string, u8, u16, u32, u64

LENGTH = struct.Struct("<I")


@attrs.frozen
class Header:
    magic: int
    version: int
    type: int
    command: int
    table: int
    flags: int
    request_id: int


HEADER = Layout(
    "header",
    [
        Field("magic", u16, "0x4854, the bytes 54 48 (\"TH\")"),
        Field("version", u8, "envelope version: 1"),
        Field("type", u8, "MessageType"),
        Field("command", u8, "SQLCommand; 0 when the type carries none"),
        Field("table", u8, "SQLTable; 0 when the type carries none"),
        Field("flags", u16, "bit 0 MORE: more frames follow for this request_id"),
        Field("request_id", u64, "chosen by the client, echoed on every answer; 0 on frames the server starts"),
    ],
    Header,
)


@attrs.frozen
class Hello:
    role: int
    min_version: int
    max_version: int
    client_name: str
    token: str = attrs.field(repr=False)


HELLO = Layout(
    "HELLO",
    [
        Field("role", u8, "1 FRONTEND, 2 ML"),
        Field("min_version", u8, "lowest protocol version the client speaks"),
        Field("max_version", u8, "highest protocol version the client speaks"),
        Field("client_name", string, "free text for logs"),
        Field("token", string, "the shared secret of the role"),
    ],
    Hello,
)


@attrs.frozen
class HelloAck:
    version: int
    session_id: int
    heartbeat_ms: int
    max_frame: int
    max_in_flight: int
    server_name: str


HELLO_ACK = Layout(
    "HELLO_ACK",
    [
        Field("version", u8, "the version chosen: the highest both sides speak"),
        Field("session_id", u64, "unique per connection"),
        Field("heartbeat_ms", u32, "idle interval after which each side sends HEARTBEAT"),
        Field("max_frame", u32, "largest body length either side may send"),
        Field("max_in_flight", u32, "unanswered requests before the server stops reading"),
        Field("server_name", string, "free text"),
    ],
    HelloAck,
)


@attrs.frozen
class Error:
    code: int
    row_index: int
    message: str


ERROR = Layout(
    "ERROR",
    [
        Field("code", u16, "ErrorCode"),
        Field("row_index", i32, "the offending row of a multi-row request, or -1"),
        Field("message", string, "human-readable explanation"),
    ],
    Error,
)


@attrs.frozen
class Shutdown:
    reason: int
    deadline_ms: int
    message: str


SHUTDOWN = Layout(
    "SHUTDOWN",
    [
        Field("reason", u8, "1 CLIENT_DONE, 2 SERVER_STOPPING"),
        Field("deadline_ms", u32, "how long the sender waits for the drain"),
        Field("message", string, "free text"),
    ],
    Shutdown,
)


@attrs.frozen
class ShutdownAck:
    completed: int


SHUTDOWN_ACK = Layout(
    "SHUTDOWN_ACK",
    [Field("completed", u32, "requests finished since the SHUTDOWN")],
    ShutdownAck,
)

SESSION_LAYOUTS = {
    MessageType.HELLO: HELLO,
    MessageType.HELLO_ACK: HELLO_ACK,
    MessageType.ERROR: ERROR,
    MessageType.SHUTDOWN: SHUTDOWN,
    MessageType.SHUTDOWN_ACK: SHUTDOWN_ACK,
}


def encode_frame(message_type, payload=b"", request_id=0, command=0, table=0, flags=0):
    """One whole frame: length, header, payload."""
    header = HEADER.pack(MAGIC, ENVELOPE_VERSION, message_type, command, table, flags, request_id)
    return LENGTH.pack(len(header) + len(payload)) + header + payload
