"""
The envelope: the 16-byte header and the session payloads (HELLO,
HELLO_ACK, ERROR, SHUTDOWN, SHUTDOWN_ACK), each an attrs class whose fields
carry their wire type and meaning; the layouts derive from the classes.
"""

import struct

import attrs

from .enums import ENVELOPE_VERSION, FLAG_MORE, HEADER_SIZE, MAGIC
from .wire import Layout, i32, string, u8, u16, u32, u64, wire

LENGTH = struct.Struct("<I")


@attrs.frozen
class Header:
    magic: int = wire(u16, '0x4854, the bytes 54 48 ("TH")')
    version: int = wire(u8, "envelope version: 1")
    type: int = wire(u8, "MessageType")
    command: int = wire(u8, "SQLCommand; 0 when the type carries none")
    table: int = wire(u8, "SQLTable; 0 when the type carries none")
    flags: int = wire(u16, "bit 0 MORE: more frames follow for this request_id; bit 1 CANCEL (SUBSCRIBE only)")
    request_id: int = wire(u64, "chosen by the client, echoed on every answer; 0 on frames the server starts")


@attrs.frozen
class Hello:
    role: int = wire(u8, "1 FRONTEND, 2 ML")
    min_version: int = wire(u8, "lowest protocol version the client speaks")
    max_version: int = wire(u8, "highest protocol version the client speaks")
    client_name: str = wire(string, "free text for logs")
    token: str = wire(string, "the shared secret of the role", repr=False)


@attrs.frozen
class HelloAck:
    version: int = wire(u8, "the version chosen: the highest both sides speak")
    session_id: int = wire(u64, "unique per connection")
    heartbeat_ms: int = wire(u32, "idle interval after which each side sends HEARTBEAT")
    max_frame: int = wire(u32, "largest body length either side may send")
    max_in_flight: int = wire(u32, "unanswered requests before the server stops reading")
    server_name: str = wire(string, "free text")


@attrs.frozen
class Error:
    code: int = wire(u16, "ErrorCode")
    row_index: int = wire(i32, "the offending row of a multi-row request, or -1")
    message: str = wire(string, "human-readable explanation")


@attrs.frozen
class Shutdown:
    reason: int = wire(u8, "1 CLIENT_DONE, 2 SERVER_STOPPING")
    deadline_ms: int = wire(u32, "how long the sender waits for the drain")
    message: str = wire(string, "free text")


@attrs.frozen
class Subscribed:
    position: int = wire(
        u64, "the change-log position the subscription is current to: resume from it if no EVENT follows"
    )


@attrs.frozen
class ShutdownAck:
    completed: int = wire(u32, "requests finished since the SHUTDOWN")


HEADER = Layout.of("header", Header)
HELLO = Layout.of("HELLO", Hello)
HELLO_ACK = Layout.of("HELLO_ACK", HelloAck)
ERROR = Layout.of("ERROR", Error)
SHUTDOWN = Layout.of("SHUTDOWN", Shutdown)
SHUTDOWN_ACK = Layout.of("SHUTDOWN_ACK", ShutdownAck)
SUBSCRIBED = Layout.of("SUBSCRIBE answer", Subscribed)


def encode_frame(message_type, payload=b"", request_id=0, command=0, table=0, flags=0):
    """One whole frame: length, header, payload."""
    header = HEADER.pack(MAGIC, ENVELOPE_VERSION, message_type, command, table, flags, request_id)
    return LENGTH.pack(len(header) + len(payload)) + header + payload


def split_frames(message_type, payload, request_id, max_frame, command=0, table=0):
    """
    A REQUEST or RESPONSE payload as frames of at most max_frame bytes,
    MORE set on all but the last: how both sides send what one frame cannot hold.
    """
    room = max_frame - HEADER_SIZE
    if len(payload) <= room:
        return encode_frame(message_type, payload, request_id, command, table)
    parts = [payload[start : start + room] for start in range(0, len(payload), room)]
    last = len(parts) - 1
    return b"".join(
        encode_frame(message_type, part, request_id, command, table, FLAG_MORE if index < last else 0)
        for index, part in enumerate(parts)
    )
