"""
Generate docs/protocol.md from the codec definitions, so that the document
and the code cannot drift: `python -m tradehub.codegen.protocol_doc [--check]`.
"""

import decimal
import sys
from pathlib import Path

from ..changes.feed import WINDOW
from ..changes.subscription import PAGE
from ..protocol import permissions
from ..protocol.enums import (
    DEFAULT_MAX_FRAME,
    ENVELOPE_VERSION,
    FLAG_CANCEL,
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
from ..protocol.messages import ERROR, HEADER, HELLO, HELLO_ACK, SHUTDOWN, SHUTDOWN_ACK, SUBSCRIBED, encode_frame
from ..protocol.tables import LAYOUTS
from ..protocol.wire import Layout, blob, boolean, decimal_, f64, i32, i64, string, text, timestamp, u8, u16, u32, u64
from ..schema import DEFAULT_LIMIT, MAX_LIMIT, Timestamp
from ..schema.kinds import DECIMAL_MAX, DECIMAL_MIN, DECIMAL_PLACES
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
    MessageType.SUBSCRIBE: ("client → server", "the table's subscribe layout; empty with the CANCEL flag"),
    MessageType.EVENT: ("server → client", "the table's event layout (see Push subscriptions)"),
}

WHEN_SENT = {
    ErrorCode.BAD_FRAME: (
        "length below 16, bad magic, or a version byte other than 1; or nothing received for three heartbeat intervals"
    ),
    ErrorCode.UNSUPPORTED_VERSION: "the HELLO's version range does not include 1",
    ErrorCode.NOT_HANDSHAKEN: "a first frame other than HELLO, or no complete HELLO within the handshake timeout",
    ErrorCode.AUTH_FAILED: "unknown role, or a token that does not match the role's",
    ErrorCode.PERMISSION_DENIED: (
        "a write to a table outside the role's side, or a SUBSCRIBE to a table the role may not follow "
        "(see Permissions)"
    ),
    ErrorCode.UNKNOWN_TYPE: "a message type that is unknown or only sent by servers",
    ErrorCode.UNKNOWN_TABLE: "a table byte outside 1..11",
    ErrorCode.UNKNOWN_COMMAND: "a command byte outside 1..5",
    ErrorCode.MALFORMED_PAYLOAD: (
        "the payload does not decode: short, trailing bytes, bad UTF-8, bool or presence byte not 0/1"
    ),
    ErrorCode.VALIDATION_FAILED: "a value breaks a rule; the message names the field and rule, row_index the row",
    ErrorCode.NOT_FOUND: "a referenced or updated row does not exist; a cancel of no live subscription",
    ErrorCode.CONFLICT: (
        "a uniqueness rule (for example client_order_id) is already taken; a SUBSCRIBE whose request_id names "
        "a live subscription"
    ),
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
| INSERT | `echo: bool`, `rows: list<row>`: new rows, all or none |
| UPSERT | `echo: bool`, `rows: list<row>`: insert, or replace the row with the same key; all or none |
| UPDATE | `echo: bool`, `rows: list<row>`: replace the rows with these keys; NOT_FOUND if one is not stored |
| DELETE | `keys: list<key>`: delete these rows; NOT_FOUND if one is missing |
| SELECT | the table's select layout below |

and one RESPONSE layout: `affected: u32` (rows written, or rows in this page), `rows: list<row>`
(the page for SELECT; after a write, the rows as stored, only when the request set `echo`),
`written: list<written>` (after a write, whatever `echo` says: one entry per row, in the
request's order, with the row's key and the columns the hub set, such as a `created_at` left
absent; each table's written layout is below), `next_cursor: opt<bytes>` (SELECT only: present
when more rows follow; send it back as `after`). Leave `echo` false unless the stored rows are
needed: an INSERT then returns nothing from the database, and no write encodes its rows, which
makes a write cheaper for the hub and the database. An ORDER INSERT that submits to Alpaca is
answered as stored whatever `echo` says (Alpaca set its id, status and times).

A RESPONSE payload larger than one frame is split over several RESPONSE frames at any byte:
concatenate the payloads of every frame of the request_id (MORE set on all but the last) and
decode the result once. A REQUEST payload larger than one frame travels the same way: consecutive
REQUEST frames with the same request_id, command and table, MORE on all but the last. Joined, it
may be at most the server's TRADEHUB_MAX_REQUEST bytes (default 64 MiB): a larger one is answered
MALFORMED_PAYLOAD (the session stays open). A different request_id before the last frame answers
the unfinished one with MALFORMED_PAYLOAD.

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
    return f"""### {spec.id.value} {spec.id.name} (`{spec.sql_name}`)

{spec.doc} {kind.capitalize()}. The key layout is
{", ".join(f"`{f.name}: {f.type.name}`" for f in layouts.key_row.fields)}, in that order; the written layout
{", ".join(f"`{f.name}: {f.type.name}`" for f in layouts.written.fields)}.

Row:

{layout_table(layouts.row)}

Select:

{layout_table(layouts.select_request)}

Subscribe:

{layout_table(layouts.subscribe)}
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
        spec.rows_request.encode({"echo": False, "rows": [row]}),
        request_id=42,
        command=SQLCommand.INSERT,
        table=SQLTable.MARKET_TICK,
    )
    response = encode_frame(
        MessageType.RESPONSE,
        spec.response.encode({"affected": 1, "rows": [], "written": [row], "next_cursor": None}),
        request_id=42,
    )
    return (
        _example(
            "REQUEST: INSERT one MARKET_TICK (a trade of 100 AAPL at 189.12, request_id 42)",
            request,
            "Header: type `03` REQUEST, command `01` INSERT, table `06` MARKET_TICK, request_id 42 (`2a 00 …`). "
            "Payload: `00` echo false; `01 00 00 00` one row; `04 00` + `AAPL`; ts as i64 nanoseconds; seq `07 00 …`; "
            "`05 00` + `trade`; price `01` present + 189120000000 units of 10^-9; size `01` + 100000000000; "
            "four `00` (no bid/ask); exchange `01` + `01 00` + `V`; conditions `01 00 00 00` + `01 00` + `@`; "
            "tape `01` + `01 00` + `C`.",
        )
        + "\n"
        + _example(
            "RESPONSE to it",
            response,
            "Header: type `04` RESPONSE, flags 0 (complete), request_id 42. Payload: affected `01 00 00 00`, "
            "rows `00 00 00 00` (no echo), written `01 00 00 00` + the tick's key (`04 00` + `AAPL`, ts, seq: "
            "a tick has no column the hub sets), next_cursor `00` absent.",
        )
    )


# The two leading fields of every table's subscribe layout, as the contract states them.
CONTRACT_SUBSCRIBE = Layout("subscribe", LAYOUTS[SQLTable.ML_PREDICTION].subscribe.fields[:2])


def _push() -> str:
    return f"""## Push subscriptions

A client can be told of changes instead of polling: the ML side follows ticks, trades and
orders; the frontend follows predictions, indicators and the orders, trades and positions that
Alpaca updates. Every committed write to a table is a change, whatever made it: a request
through any hub attached to the same database, the hub's own Alpaca sync, or a script writing
to PostgreSQL directly. A subscription receives the changes of one table that match its
filters, as EVENT frames, until it is cancelled or the connection ends.

### SUBSCRIBE

Type 9, `table` = the SQLTable, `command` = 0, `request_id` chosen by the client: it names the
subscription for as long as it lives. The payload is the table's subscribe layout (each table's
section under Tables). It begins with these two fields, for every table:

{layout_table(CONTRACT_SUBSCRIBE)}

Table-specific filters follow: ML_PREDICTION `model_ids`, ORDER and POSITION `account_ids`,
TECHNICAL_INDICATOR `names`. Each filter keeps the rows whose column is one of its values (an
empty list keeps every row); filters combine with AND. Values are normalised as the column
normalises what is written (symbols upper-case, UUIDs lower-case), and a value the column would
refuse is VALIDATION_FAILED. The hub applies the filters; a client receives only what matches.

The answer is a RESPONSE with the same request_id and this payload:

{layout_table(SUBSCRIBED)}

A SUBSCRIBE received after SHUTDOWN from either side is SHUTTING_DOWN. Otherwise the checks
run in this order, each answered with one ERROR (the connection stays open): UNKNOWN_TABLE;
PERMISSION_DENIED (the role may not follow the table, see Permissions); MALFORMED_PAYLOAD;
CONFLICT (the request_id already names a live subscription on this connection);
VALIDATION_FAILED (a filter value, symbols on a table without symbols, or a `from_position`
ahead of the log's last position); POSITION_EXPIRED (a `from_position` older than retention
keeps). A SUBSCRIBE takes its
place among the connection's requests: its RESPONSE keeps the request order, and its first EVENT
comes after its RESPONSE.

### EVENT

Type 10, `request_id` = the subscription's, `table` = the table, `command` = the change's kind:
1 INSERT, 3 UPDATE, 4 DELETE (an UPSERT is reported as the INSERT or UPDATE it turned out to
be). MORE is set on every frame of an event but the last when it spans frames: join the payloads
as for a RESPONSE. Payload: `position: u64`, then for INSERT and UPDATE the row as stored (the
table's row layout, as a SELECT returns it), for DELETE the row's key (the table's key layout).

### Cancel

A SUBSCRIBE frame with the CANCEL flag, the subscription's request_id, its table and an empty
payload. It is answered by a RESPONSE with that request_id and the same `position: u64` payload:
the position the subscription was current to. No EVENT of that subscription follows that
RESPONSE, and the request_id may name a new subscription after it. A cancel of a request_id that
names no live subscription is NOT_FOUND.

### Guarantees

1. **Positions** are u64, strictly increasing within a subscription and comparable across the
   tables of one database (one change log numbers every table's changes). They survive hub
   restarts.
2. **Exactly once on resume**: a client that subscribes again with `from_position` = the last
   position it processed receives every matching change committed after it, exactly once,
   whether it reconnects to the same hub, to a restarted hub or to another hub on the same
   database. With no EVENT since the confirmation, resume from the RESPONSE's `position`.
3. **Only committed changes**: a write that rolls back never produces an EVENT.
4. **Order**: changes to the same row arrive in commit order; the changes of one transaction
   arrive in statement order; if transaction B began after transaction A committed, all of A's
   changes arrive before any of B's. (Two transactions that overlap may come in either order.)
5. **Flow**: EVENTs may arrive between RESPONSEs; RESPONSEs keep their request order. The hub
   keeps a bounded amount in memory per subscription: at most one window of {WINDOW} positions
   is handed to a live subscription at once, and a subscriber whose socket buffer is full falls
   behind and catches up from the change log {PAGE} changes at a time, read only as fast as it
   reads. It slows only itself; nothing is dropped silently.
6. **Retention**: the change log keeps changes for TRADEHUB_CHANGE_RETENTION (7 days by
   default). A subscription that asks for, or falls behind to, a position older than that gets
   ERROR POSITION_EXPIRED with its request_id and ends; the connection stays open. Start again
   from a fresh state (SELECT) and subscribe without `from_position`.
7. **Shutdown**: SHUTDOWN from either side ends the connection's subscriptions, and so does the
   connection's end; their clients resume from their last position on reconnect. A subscription
   ended this way gets no frame of its own.

Changes reach subscribers within milliseconds when they are written through a hub (every hub
on the database hears of them through PostgreSQL LISTEN/NOTIFY); writes made outside any hub are
found by a sweep every TRADEHUB_CHANGE_SWEEP_SECONDS (1 s by default).
"""


def _push_example():
    spec = LAYOUTS[SQLTable.ML_PREDICTION]
    model = "9f1c2e4a-1b2c-4d3e-8f90-a1b2c3d4e5f6"
    subscribe = encode_frame(
        MessageType.SUBSCRIBE,
        spec.subscribe.encode({"from_position": 41, "symbols": ["AAPL"], "model_ids": []}),
        request_id=7,
        table=SQLTable.ML_PREDICTION,
    )
    confirmed = encode_frame(MessageType.RESPONSE, SUBSCRIBED.encode({"position": 41}), request_id=7)
    row = {
        "id": "0b6f6c8e-2a1d-4c5b-9e7f-112233445566",
        "model_id": model,
        "symbol": "AAPL",
        "ts": Timestamp(1_700_000_000_000_000_000),
        "horizon": 300,
        "value": 0.5,
        "confidence": 0.75,
        "predicted_side": "buy",
        "created_at": Timestamp(1_700_000_000_000_001_000),
    }
    event = encode_frame(
        MessageType.EVENT,
        spec.event.encode({"position": 42, **row}),
        request_id=7,
        command=SQLCommand.INSERT,
        table=SQLTable.ML_PREDICTION,
    )
    cancel = encode_frame(MessageType.SUBSCRIBE, b"", request_id=7, table=SQLTable.ML_PREDICTION, flags=FLAG_CANCEL)
    cancelled = encode_frame(MessageType.RESPONSE, SUBSCRIBED.encode({"position": 42}), request_id=7)
    return "\n".join(
        (
            _example(
                "SUBSCRIBE to ML_PREDICTION for AAPL, resuming after position 41 (request_id 7)",
                subscribe,
                "Header: type `09` SUBSCRIBE, command `00`, table `08` ML_PREDICTION, flags 0, request_id 7. "
                "Payload: from_position `01` present + `29 00 …` (41); symbols `01 00 00 00` one + `04 00` + "
                "`AAPL`; model_ids `00 00 00 00` (any model).",
            ),
            _example(
                "RESPONSE: subscribed, current to position 41",
                confirmed,
                "Type `04` RESPONSE, request_id 7; payload position `29 00 …` (41). Changes after 41 follow as EVENTs.",
            ),
            _example(
                "EVENT: the prediction stored at position 42",
                event,
                "Header: type `0a` EVENT, command `01` INSERT, table `08`, request_id 7. Payload: position `2a 00 …` "
                "(42), then the row as a SELECT returns it: id `24 00` + 36 bytes, model_id the same way, "
                "`04 00` + `AAPL`, ts i64 nanoseconds, horizon `2c 01 …` (300), value and confidence as f64 "
                "(0.5, 0.75), predicted_side `01` present + `03 00` + `buy`, created_at i64 nanoseconds.",
            ),
            _example(
                "Cancel: SUBSCRIBE with the CANCEL flag and the subscription's request_id",
                cancel,
                "Header: type `09`, table `08`, flags `02 00` CANCEL, request_id 7; empty payload.",
            ),
            _example(
                "RESPONSE to the cancel",
                cancelled,
                "Position `2a 00 …` (42): the subscription was current to 42; no EVENT of request_id 7 follows.",
            ),
        )
    )


def render() -> str:
    """The whole document, as the committed file must read."""
    matrix_rows = [
        (f"{table.value} {table.name}", *(" ".join(c.name for c in commands[role]) for role in Role))
        for table, commands in permissions.matrix()
    ]
    follow_rows = [
        (f"{table.value} {table.name}", *("yes" if permissions.may_follow(role, table) else "" for role in Role))
        for table in SQLTable
    ]
    return f"""# tradehub wire protocol v{ENVELOPE_VERSION}

Generated by `{COMMAND}` from the codec definitions in `tradehub/protocol/`; a
test fails when this file differs from what that command writes. It is the whole contract
between the hub and its clients: the envelope every client relies on (frames, header, session,
errors, push subscriptions and their guarantees), the layout of every table's payloads, and every
decision the server makes where a client could otherwise guess. A client written from this
document alone interoperates.

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
RESPONSE or EVENT but the last; a client may chunk a large REQUEST the same way (see Tables).
Bit 1 (0x{FLAG_CANCEL:04x}) CANCEL, on a SUBSCRIBE only: end the subscription named by the
request_id (see Push subscriptions). The server ignores every other flag bit, MORE on frames
other than REQUEST, and CANCEL on frames other than SUBSCRIBE.

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

A `decimal` is therefore any value from {DECIMAL_MIN} to {DECIMAL_MAX} with at most
{DECIMAL_PLACES} places, and the database stores no other: every decimal column is a
`wire_decimal`, whose check refuses anything outside that range whoever writes it (through the
hub, a row whose computed columns would leave the range is VALIDATION_FAILED; an Alpaca value
outside it is refused and logged; psql gets a check violation), so every stored decimal can be
answered.

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
its own correct answer. When `max_in_flight` requests are unanswered, or the unanswered requests
hold the server's largest request size in bytes (TRADEHUB_MAX_REQUEST), the server stops reading
the connection, and resumes once at most half of each remains; when the connection's send buffer is
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

A role may SUBSCRIBE to the tables it needs from the other side, and to the trading tables both
sides watch; a SUBSCRIBE to any other table is PERMISSION_DENIED.

{_table(("table", *(f"{role.name} follows" for role in Role)), follow_rows)}

{_push()}

## Tables

{_table_sections()}
## Worked examples

{_session_examples()}
{_request_example()}
{_push_example()}"""


def main(argv: list[str]) -> int:
    """Write the document, or with --check return 1 when the committed one is stale."""
    return write_or_check(OUTPUT, render(), COMMAND, "--check" in argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
