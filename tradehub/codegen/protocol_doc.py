"""
Generate docs/protocol.md from the codec definitions, so that the document
and the code cannot drift: `python -m tradehub.codegen.protocol_doc [--check]`.
"""

import decimal
import sys
from pathlib import Path

from ..protocol import permissions
from ..protocol.enums import (
    DEFAULT_MAX_FRAME,
    ENVELOPE_VERSION,
    FLAG_MORE,
    HEADER_SIZE,
    MAGIC,
    ErrorCode,
    MessageType,
    Role,
    ShutdownReason,
    SQLCommand,
    SQLTable,
)
from ..protocol.messages import ERROR, HEADER, HELLO, HELLO_ACK, SHUTDOWN, SHUTDOWN_ACK, encode_frame
from ..protocol.tables import LAYOUTS
from ..protocol.wire import Layout, blob, boolean, decimal_, f64, i32, i64, string, text, timestamp, u8, u16, u32, u64
from ..schema import DEFAULT_LIMIT, MAX_LIMIT, Timestamp
from .output import write_or_check

OUTPUT = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
COMMAND = "python -m tradehub.codegen.protocol_doc"

DIRECTIONS = {
    MessageType.HELLO: ("client → server", "HELLO"),
    MessageType.HELLO_ACK: ("server → client", "HELLO_ACK"),
    MessageType.REQUEST: ("client → server", "the table's request layout for the header's command"),
    MessageType.RESPONSE: ("server → client", "the table's response layout"),
    MessageType.ERROR: ("server → client", "ERROR"),
    MessageType.HEARTBEAT: ("both", "empty"),
    MessageType.SHUTDOWN: ("both", "SHUTDOWN"),
    MessageType.SHUTDOWN_ACK: ("both", "SHUTDOWN_ACK"),
    MessageType.SUBSCRIBE: ("client → server", "reserved: answered with ERROR UNKNOWN_TYPE in v1"),
    MessageType.EVENT: ("server → client", "reserved: never sent in v1"),
}

WHEN_SENT = {
    ErrorCode.BAD_FRAME: (
        "length below 16, bad magic, or a version byte other than 1; or nothing received for three heartbeat intervals"
    ),
    ErrorCode.UNSUPPORTED_VERSION: "the HELLO's version range does not include 1",
    ErrorCode.NOT_HANDSHAKEN: "a first frame other than HELLO, or no complete HELLO within the handshake timeout",
    ErrorCode.AUTH_FAILED: "unknown role, or a token that does not match the role's",
    ErrorCode.PERMISSION_DENIED: "a write to a table outside the role's side (see the matrix)",
    ErrorCode.UNKNOWN_TYPE: "a message type that is unknown, reserved (SUBSCRIBE) or only sent by servers",
    ErrorCode.UNKNOWN_TABLE: "a table byte outside 1..11",
    ErrorCode.UNKNOWN_COMMAND: "a command byte outside 1..5",
    ErrorCode.MALFORMED_PAYLOAD: (
        "the payload does not decode: short, trailing bytes, bad UTF-8, bool or presence byte not 0/1"
    ),
    ErrorCode.VALIDATION_FAILED: "a value breaks a rule; the message names the field and rule, row_index the row",
    ErrorCode.NOT_FOUND: "a referenced or updated row does not exist",
    ErrorCode.CONFLICT: "a uniqueness rule (for example client_order_id) is already taken",
    ErrorCode.BUSY: (
        "Alpaca did not answer an order submission or cancel in time: the order stays pending_new; "
        "send the same request again"
    ),
    ErrorCode.DB_UNAVAILABLE: "PostgreSQL stayed unreachable through every retry, or a COMMIT's outcome is unknown",
    ErrorCode.SHUTTING_DOWN: "a request that arrived after SHUTDOWN, or was still queued at the drain deadline",
    ErrorCode.FRAME_TOO_LARGE: "a length above the negotiated max_frame",
    ErrorCode.INTERNAL: "a bug, or a table whose command is not implemented yet",
    ErrorCode.POSITION_EXPIRED: "a SUBSCRIBE, or a subscription that fell behind, at a position retention removed",
}

FIELD_TYPES = [u8, u16, u32, u64, i32, i64, f64, boolean, string, text, blob, timestamp, decimal_]
FIELD_ENCODINGS = {
    "bool": "u8, 0 or 1; anything else is MALFORMED_PAYLOAD",
    "str": "u16 byte length, then strict UTF-8",
    "text": "u32 byte length, then strict UTF-8",
    "bytes": "u32 byte length, then raw bytes",
    "timestamp": "i64 nanoseconds since 1970-01-01T00:00:00Z",
    "decimal": "i64 count of 10^-9 units (1.5 is 1500000000)",
}


def _table(headings, rows):
    lines = ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _field_types() -> str:
    encodings = [
        (f"`{t.name}`", FIELD_ENCODINGS.get(t.name, f"{t.size}-byte little-endian"), t.python) for t in FIELD_TYPES
    ]
    return _table(("type", "encoding", "Python value"), encodings)


def _errors() -> str:
    rows = [(c.value, c.name, "connection closed" if c.closes else "stays open", WHEN_SENT[c]) for c in ErrorCode]
    return _table(("code", "name", "after it", "when the server sends it"), rows)


def layout_table(layout: Layout) -> str:
    """Fields with their byte offsets while the layout is fixed, '+' after the first variable field."""
    rows = []
    offset: int | None = 0
    for field in layout.fields:
        rows.append((offset if offset is not None else "+", f"`{field.name}`", f"`{field.type.name}`", field.doc))
        if offset is not None and field.type.size is not None:
            offset += field.type.size
        else:
            offset = None
    return _table(("offset", "field", "type", "meaning"), rows)


def _enum(enum, extra=None):
    return _table(
        ("value", "name") + ((extra[0],) if extra else ()),
        [(member.value, member.name) + ((extra[1](member),) if extra else ()) for member in enum],
    )


def _hex(frame):
    return "\n".join(frame[i : i + 16].hex(" ") for i in range(0, len(frame), 16))


def _example(title, frame, explanation):
    return f"{title} ({len(frame)} bytes):\n\n```\n{_hex(frame)}\n```\n\n{explanation}\n"


def _session_examples():
    hello = encode_frame(
        MessageType.HELLO,
        HELLO.encode({"role": Role.ML, "min_version": 1, "max_version": 1, "client_name": "ml-1", "token": "s3cret"}),
    )
    body = len(hello) - 4
    return _example(
        "HELLO from an ML module named `ml-1` with token `s3cret`",
        hello,
        f"`{body.to_bytes(4, 'little').hex(' ')}`: body length {body}. `54 48`: magic. `01`: version 1. "
        "`01`: HELLO. `00 00`: no command or table. `00 00`: flags. `00 … 00`: request_id 0. "
        "Payload: `02` role ML, `01` `01` versions 1..1, "
        "`04 00` + `ml-1`, `06 00` + `s3cret`.",
    )


COMMON_LAYOUTS = f"""Every table has the same five request layouts, built from its row and key:

| command | request payload |
|---|---|
| INSERT | `rows: list<row>`: new rows, all or none |
| UPSERT | `rows: list<row>`: insert, or replace the row with the same key; all or none |
| UPDATE | `rows: list<row>`: replace the rows with these keys (every field); NOT_FOUND if one is missing |
| DELETE | `keys: list<key>`: delete these rows; NOT_FOUND if one is missing |
| SELECT | the table's select layout below |

and one RESPONSE layout: `affected: u32` (rows written, or rows in this page), `rows: list<row>`
(the rows as stored after a write; the page for SELECT), `next_cursor: opt<bytes>` (SELECT only:
present when more rows follow; send it back as `after`). A RESPONSE payload larger than one
frame is split over several RESPONSE frames at any byte: concatenate the payloads of every frame
of the request_id (MORE set on all but the last) and decode the result once. A REQUEST payload
larger than one frame travels the same way: consecutive REQUEST frames with the same request_id,
command and table, MORE on all but the last. Joined, it may be at most the server's
TRADEHUB_MAX_REQUEST bytes (default 64 MiB): a larger one is answered MALFORMED_PAYLOAD (the
session stays open). A different request_id before the last frame answers the unfinished one
with MALFORMED_PAYLOAD.

SELECT returns rows in key order, or for a time-series table in (time, key) order; `keys`,
`symbol` and the time window combine (AND). `limit` 0 means {DEFAULT_LIMIT}; more than {MAX_LIMIT} is
VALIDATION_FAILED. Walk a large result by passing each page's `next_cursor` as the next request's
`after`, with the same filters.

Values: symbols are stored upper-case; UUIDs in canonical lower-case form; JSON is stored as
jsonb, so it reads back with jsonb's key order and spacing (`{{"a": 1}}`); decimals read back with
their value unchanged (the wire carries units of 10^-9, so 1.5 and 1.500000000 are the same
bytes); timestamps keep their nanoseconds. A write refused by a rule is VALIDATION_FAILED naming
the field and the rule, with `row_index` the offending row; a duplicate key or unique value is
CONFLICT; a missing referenced row is NOT_FOUND. Nothing of a refused request is written.
"""


def _table_section(layouts):
    spec = layouts.table
    kind = f"time series on `{spec.series}`" if spec.series else "keyed"
    writes = "" if spec.echo_writes else " Write answers carry `affected` only (no rows): this is the hot path."
    return f"""### {spec.id.value} {spec.id.name} (`{spec.sql_name}`)

{spec.doc} {kind.capitalize()}.{writes} The key layout is
{", ".join(f"`{f.name}: {f.type.name}`" for f in layouts.key_row.fields)}, in that order.

Row:

{layout_table(layouts.row)}

Select:

{layout_table(layouts.select_request)}
"""


def _table_sections():
    return COMMON_LAYOUTS + "\n" + "\n".join(_table_section(layouts) for layouts in LAYOUTS.values())


def _request_example():
    spec = LAYOUTS[SQLTable.MARKET_TICK]
    row = {
        "symbol": "AAPL",
        "ts": Timestamp(1_700_000_000_123_456_789),
        "seq": 7,
        "kind": "trade",
        "price": decimal.Decimal("189.12"),
        "size": decimal.Decimal("100"),
        "bid_price": None,
        "bid_size": None,
        "ask_price": None,
        "ask_size": None,
        "exchange": "V",
        "conditions": ["@"],
        "tape": "C",
    }
    request = encode_frame(
        MessageType.REQUEST,
        spec.rows_request.encode({"rows": [row]}),
        request_id=42,
        command=SQLCommand.INSERT,
        table=SQLTable.MARKET_TICK,
    )
    response = encode_frame(
        MessageType.RESPONSE, spec.response.encode({"affected": 1, "rows": [], "next_cursor": None}), request_id=42
    )
    return (
        _example(
            "REQUEST: INSERT one MARKET_TICK (a trade of 100 AAPL at 189.12, request_id 42)",
            request,
            "Header: type `03` REQUEST, command `01` INSERT, table `06` MARKET_TICK, request_id 42 (`2a 00 …`). "
            "Payload: `01 00 00 00` one row; `04 00` + `AAPL`; ts as i64 nanoseconds; seq `07 00 …`; "
            "`05 00` + `trade`; price `01` present + 189120000000 units of 10^-9; size `01` + 100000000000; "
            "four `00` (no bid/ask); exchange `01` + `01 00` + `V`; conditions `01 00 00 00` + `01 00` + `@`; "
            "tape `01` + `01 00` + `C`.",
        )
        + "\n"
        + _example(
            "RESPONSE to it",
            response,
            "Header: type `04` RESPONSE, flags 0 (complete), request_id 42. Payload: affected `01 00 00 00`, "
            "rows `00 00 00 00` (tick writes echo no rows), next_cursor `00` absent.",
        )
    )


def render() -> str:
    """The whole document, as the committed file must read."""
    matrix_rows = [
        (f"{table.value} {table.name}", *(" ".join(c.name for c in commands[role]) for role in Role))
        for table, commands in permissions.matrix()
    ]
    return f"""# tradehub wire protocol v{ENVELOPE_VERSION}

Generated by `{COMMAND}` from the codec definitions in `tradehub/protocol/`; a
test fails when this file differs from what that command writes. The envelope is fixed by the
contract (`shared/specs/wire-envelope.md`); this document adds the per-table layouts and every
decision the contract leaves to the server.

All integers are little-endian. Offsets are in bytes; `+` marks a field whose offset depends on
the variable-length fields before it.

## Frame

```
frame := length:u32 body[length]
body  := header ({HEADER_SIZE} bytes) payload (length - {HEADER_SIZE} bytes)
```

`length` counts the body only. A length below {HEADER_SIZE} is BAD_FRAME; above the negotiated
`max_frame` (default {DEFAULT_MAX_FRAME}) it is FRAME_TOO_LARGE. The length is checked before
any of the body is buffered, and the magic and version byte as soon as the header's first bytes
are in: in every case the server sends ERROR and closes.

## Header

{layout_table(HEADER)}

Magic is 0x{MAGIC:04x}. Flags: bit 0 (0x{FLAG_MORE:04x}) MORE, set on every frame of a chunked
RESPONSE but the last; a client may chunk a large REQUEST the same way (see Tables). The server
ignores every other flag bit, and MORE on frames other than REQUEST.

## Message types

{_table(("value", "name", "direction", "payload"), [(t.value, t.name, *DIRECTIONS[t]) for t in MessageType])}

## Enumerations

### SQLCommand

{_enum(SQLCommand, ("writes", lambda c: "yes" if c.writes else "no"))}

### SQLTable

{_enum(SQLTable)}

### Role

{_enum(Role)}

### ShutdownReason

{_enum(ShutdownReason)}

## Field types

{_field_types()}

`opt<T>`: u8 presence (0 absent, 1 present; anything else is MALFORMED_PAYLOAD), then T when
present. `list<T>`: u32 count, then the items. A payload with bytes left over after its last field
is MALFORMED_PAYLOAD. Money, prices and quantities are always `decimal`, never `f64`.

## Session

### HELLO (client → server, the first frame)

{layout_table(HELLO)}

### HELLO_ACK

{layout_table(HELLO_ACK)}

### ERROR

{layout_table(ERROR)}

### SHUTDOWN

{layout_table(SHUTDOWN)}

### SHUTDOWN_ACK

{layout_table(SHUTDOWN_ACK)}

### Handshake

The first frame must be HELLO; anything else is answered with ERROR NOT_HANDSHAKEN and the
connection closes. A HELLO whose payload does not decode is answered with MALFORMED_PAYLOAD and
the connection closes (there is no session to keep open). The version is checked before the
token: no common version gives UNSUPPORTED_VERSION, an unknown role or wrong token AUTH_FAILED,
both followed by close. The token is compared in constant time and never logged. Both roles may
connect to either listener; the role decides what the session may do. `session_id` is unique per
connection (a random per-process prefix and a counter).

### Requests, ordering and backpressure

Requests of one connection run in arrival order and are answered in that order, errors included
(an ERROR for request n is never sent before the answers to requests 1..n-1). Consecutive one-row
INSERTs (or UPSERTs) of the same table may be executed together in one transaction; each still
gets its own RESPONSE, and if the group fails each request is retried alone so that each gets
its own correct answer. When `max_in_flight` requests are unanswered the server stops reading the
connection and resumes once at most half that many remain; when the connection's send buffer is
full (the client is not reading), the server stops executing its requests until it drains. A
flooding client slows only itself.

### Heartbeats

Each side sends HEARTBEAT (request_id 0, empty payload) when it has sent nothing else for
`heartbeat_ms`. A peer from which the server has received nothing for three intervals gets
ERROR BAD_FRAME (request_id 0) saying so, and the server closes the connection as it always does
(see Shutdown): FIN after the ERROR, and an abort if the connection is not gone 5 s later. Work
of a connection that is lost, or that the server closes after a closing error: the request
running at that moment finishes (its transaction commits or rolls back whole); requests not yet
started are not executed. A request is thus executed if and only if it was answered, or was
running when the connection was lost or closed.

### Shutdown

Client-initiated: after SHUTDOWN the server answers every request received before it, answers
any later request with ERROR SHUTTING_DOWN, then sends SHUTDOWN_ACK (`completed` = requests
answered since the SHUTDOWN) and closes; what arrives after the SHUTDOWN_ACK can no longer be
answered (a client sends nothing after its SHUTDOWN). Server-initiated (the daemon stops): the
listeners stop accepting, every session gets SHUTDOWN (reason SERVER_STOPPING, the drain deadline
in `deadline_ms`), requests already received are answered, later ones get SHUTTING_DOWN, and each
connection closes once every request it has received is answered. In both cases a request that
has only begun to arrive when the last answer is sent (part of a frame, or a chunked request
without its last frame) counts as received: the server waits for its rest and answers it, so it
never closes in the middle of a request. At the deadline, requests not started get SHUTTING_DOWN,
the one running is allowed to finish and is answered, and a request still arriving is no longer
waited for. Five seconds after the deadline, a connection whose running request still has not
finished (a database that no longer answers) is closed without its answer, so the daemon always
stops. The server closes a TCP connection by half-closing it (FIN after its last answer) and
reading and dropping whatever the client still sends until the client closes (5 s at most):
closing with unread data would make the kernel send RST, which can destroy answers the client has
not read yet. A client's SHUTDOWN_ACK is accepted and needs no answer. The database pool closes
only after every session is drained.

## Errors

{_errors()}

Every failed request gets exactly one ERROR, with its request_id, instead of its RESPONSE.
Framing and handshake errors carry request_id 0 unless the offending frame had one.

## Permissions

Each role reads every table and writes only its own side's tables: a write outside them is
PERMISSION_DENIED.

{_table(("table", *(f"{role.name} may" for role in Role)), matrix_rows)}

## Tables

{_table_sections()}
## Worked examples

{_session_examples()}
{_request_example()}"""


def main(argv: list[str]) -> int:
    """Write the document, or with --check return 1 when the committed one is stale."""
    return write_or_check(OUTPUT, render(), COMMAND, "--check" in argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
