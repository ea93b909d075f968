"""
Generate clients/cpp/tradehub_protocol.hpp from the codec definitions:
C++17, header-only, standard library only, endian-explicit, bounds-checked.

    python -m tradehub.codegen.cpp_header [--check]
"""

import re
import sys
from pathlib import Path

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
from ..protocol.messages import ERROR, HEADER, HELLO, HELLO_ACK, SHUTDOWN, SHUTDOWN_ACK, SUBSCRIBED
from ..protocol.tables import LAYOUTS
from ..protocol.wire import WireType
from .output import write_or_check

# The hand-written parts of the header, the same in every build: value types,
# the byte-level writer and reader (before the generated structs), and framing (after).
_FRAGMENTS = Path(__file__).resolve().parent / "cpp"
VALUES_AND_CODEC = (_FRAGMENTS / "values_and_codec.hpp").read_text()
FRAMES = (_FRAGMENTS / "frames.hpp").read_text()
OUTPUT = Path(__file__).resolve().parents[2] / "clients" / "cpp" / "tradehub_protocol.hpp"
COMMAND = "python -m tradehub.codegen.cpp_header"

CPP_KEYWORDS = {"class", "default", "delete", "new", "operator", "private", "public", "template", "union"}

# wire type: (C++ type, Writer method, Reader method)
_SCALARS = {
    "u8": ("std::uint8_t", "u8", "u8"),
    "u16": ("std::uint16_t", "u16", "u16"),
    "u32": ("std::uint32_t", "u32", "u32"),
    "u64": ("std::uint64_t", "u64", "u64"),
    "i32": ("std::int32_t", "i32", "i32"),
    "i64": ("std::int64_t", "i64", "i64"),
    "f64": ("double", "f64", "f64"),
    "bool": ("bool", "boolean", "boolean"),
    "str": ("std::string", "str", "str"),
    "text": ("std::string", "text", "text"),
    "bytes": ("Bytes", "blob", "blob"),
    "timestamp": ("Timestamp", "timestamp", "timestamp"),
    "decimal": ("Decimal", "decimal", "decimal"),
}


def struct_name(layout_name: str) -> str:
    """
    The words of a layout's name, capitalised: 'MARKET_TICK row' ->
    MarketTickRow, 'HELLO_ACK' -> HelloAck, 'ORDER event (DELETE)' -> OrderEventDelete.
    """
    return "".join(word.capitalize() for word in re.findall(r"[A-Za-z0-9]+", layout_name))


def member(name: str) -> str:
    """A field's C++ member name: keywords get a trailing underscore (asset `class` is `class_`)."""
    return name + "_" if name in CPP_KEYWORDS else name


def _item(wire: WireType) -> WireType:
    """The type an opt<T> or list<T> wraps."""
    assert wire.item is not None, f"{wire.name} wraps no type"
    return wire.item


def cpp_type(wire: WireType) -> str:
    """The C++ type holding a wire type's values: a layout's struct, an optional, a vector or a scalar."""
    if wire.layout is not None:
        return struct_name(wire.layout.name)
    if wire.name.startswith("opt<"):
        return f"std::optional<{cpp_type(_item(wire))}>"
    if wire.name.startswith("list<"):
        return f"std::vector<{cpp_type(_item(wire))}>"
    return _SCALARS[wire.name][0]


def write_expr(wire: WireType, value: str) -> str:
    """A C++ expression that writes the C++ expression C{value} to Writer C{w}."""
    if wire.layout is not None:
        return f"encode(w, {value})"
    if wire.name.startswith("opt<"):
        item = cpp_type(_item(wire))
        return f"write_opt(w, {value}, [&](const {item}& x) {{ {write_expr(_item(wire), 'x')}; }})"
    if wire.name.startswith("list<"):
        item = cpp_type(_item(wire))
        return f"write_list(w, {value}, [&](const {item}& x) {{ {write_expr(_item(wire), 'x')}; }})"
    return f"w.{_SCALARS[wire.name][1]}({value})"


def read_expr(wire: WireType) -> str:
    """A C++ expression that reads one value from Reader C{r}."""
    if wire.layout is not None:
        return f"decode_{struct_name(wire.layout.name)}(r)"
    if wire.name.startswith("opt<"):
        return f"read_opt<{cpp_type(_item(wire))}>(r, [&]() {{ return {read_expr(_item(wire))}; }})"
    if wire.name.startswith("list<"):
        return f"read_list<{cpp_type(_item(wire))}>(r, [&]() {{ return {read_expr(_item(wire))}; }})"
    return f"r.{_SCALARS[wire.name][2]}()"


def _layouts():
    """Every layout a client needs, nested ones before those that use them, each once."""
    ordered, seen = [], set()

    def visit(layout):
        if layout.name in seen:
            return
        for field in layout.fields:
            wire = field.type
            while wire.item is not None and wire.layout is None:
                wire = wire.item
            if wire.layout is not None:
                visit(wire.layout)
        seen.add(layout.name)
        ordered.append(layout)

    for layout in (HEADER, HELLO, HELLO_ACK, ERROR, SHUTDOWN, SHUTDOWN_ACK, SUBSCRIBED):
        visit(layout)
    for spec in LAYOUTS.values():
        for layout in (
            spec.row,
            spec.key_row,
            spec.rows_request,
            spec.keys_request,
            spec.select_request,
            spec.response,
            spec.subscribe,
            spec.event,
            spec.deleted_event,
        ):
            visit(layout)
    return ordered


def _struct(layout):
    name = struct_name(layout.name)
    lines = [f"// {layout.name}", f"struct {name} {{"]
    for field in layout.fields:
        lines.append(f"    {cpp_type(field.type)} {member(field.name)}{{}};  // {field.type.name}: {field.doc}")
    comparisons = " &&\n               ".join(f"{member(f.name)} == o.{member(f.name)}" for f in layout.fields)
    lines += [
        f"    bool operator==(const {name}& o) const {{",
        f"        return {comparisons};",
        "    }",
        f"    bool operator!=(const {name}& o) const {{ return !(*this == o); }}",
        "};",
        "",
        f"inline void encode(Writer& w, const {name}& v) {{",
    ]
    lines += [f"    {write_expr(f.type, 'v.' + member(f.name))};" for f in layout.fields]
    lines += ["}", "", f"inline {name} decode_{name}(Reader& r) {{", f"    {name} v;"]
    lines += [f"    v.{member(f.name)} = {read_expr(f.type)};" for f in layout.fields]
    lines += ["    return v;", "}", "", f"inline void decode(Reader& r, {name}& v) {{ v = decode_{name}(r); }}", ""]
    return "\n".join(lines)


def _enum(enum, base, doc):
    members = ",\n".join(f"    {m.name} = {m.value}" for m in enum)
    return f"// {doc}\nenum class {enum.__name__} : {base} {{\n{members}\n}};\n"


def _projection(function, target, source):
    """A C++ function that copies the fields of layout C{target} out of a C{source} that has them all."""
    result, argument = struct_name(target.name), struct_name(source.name)
    members = ", ".join(f"v.{member(f.name)}" for f in target.fields)
    return f"inline {result} {function}(const {argument}& v) {{ return {result}{{{members}}}; }}"


def _key_functions():
    lines = ["// The key of a row, as DELETE and SELECT take it, and of a DELETE event."]
    lines += [_projection("key_of", spec.key_row, spec.row) for spec in LAYOUTS.values()]
    lines += [_projection("key_of", spec.key_row, spec.deleted_event) for spec in LAYOUTS.values()]
    lines.append("// The row an INSERT or UPDATE event carries, without its position.")
    lines += [_projection("row_of", spec.row, spec.event) for spec in LAYOUTS.values()]
    return "\n".join(lines) + "\n"


def _event_position():
    """Every event layout starts with its position, so a client reads it before it knows the table's types."""
    for spec in LAYOUTS.values():
        for layout in (spec.event, spec.deleted_event):
            first = layout.fields[0]
            assert (first.name, first.type.name) == ("position", "u64"), f"{layout.name} starts with {first.name}"
    return """// The position of an EVENT's change: every table's event payload starts with it.
inline std::uint64_t event_position(const Bytes& payload) {
    Reader r(payload);
    return r.u64();
}
"""


def _table_traits():
    lines = [
        "// Each table's layouts, for the generic calls of tradehub_client.hpp.",
        "template <SQLTable T> struct TableTraits;",
    ]
    for spec in LAYOUTS.values():
        lines.append(
            f"template <> struct TableTraits<SQLTable::{spec.table.id.name}> {{\n"
            f"    using Row = {struct_name(spec.row.name)};\n"
            f"    using Key = {struct_name(spec.key_row.name)};\n"
            f"    using Rows = {struct_name(spec.rows_request.name)};\n"
            f"    using Keys = {struct_name(spec.keys_request.name)};\n"
            f"    using Select = {struct_name(spec.select_request.name)};\n"
            f"    using Response = {struct_name(spec.response.name)};\n"
            f"    using Subscribe = {struct_name(spec.subscribe.name)};\n"
            f"    using Event = {struct_name(spec.event.name)};\n"
            f"    using DeletedEvent = {struct_name(spec.deleted_event.name)};\n"
            f"}};"
        )
    return "\n".join(lines) + "\n"


def render() -> str:
    """The whole header, as the committed file must read."""
    closing = ", ".join(f"ErrorCode::{c.name}" for c in ErrorCode if c.closes)
    structs = "\n".join(_struct(layout) for layout in _layouts())
    return f"""// tradehub wire protocol v{ENVELOPE_VERSION}: C++17, header-only, standard library only.
// Generated by `{COMMAND}` from tradehub/protocol/: do not edit; a test
// fails when this file differs from what the command writes. See docs/protocol.md.
//
// Integers are written and read byte by byte in little-endian order, so the code is correct on
// any host. Decoding is bounds-checked: a short, malformed or over-long payload throws
// tradehub::DecodeError and never reads past the buffer. Field names that are C++ keywords get
// a trailing underscore (asset `class` is `class_`).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace tradehub {{

constexpr std::uint16_t MAGIC = 0x{MAGIC:04x};
constexpr std::uint8_t VERSION = {ENVELOPE_VERSION};
constexpr std::size_t HEADER_SIZE = {HEADER_SIZE};
constexpr std::uint16_t FLAG_MORE = 0x{FLAG_MORE:04x};
constexpr std::uint16_t FLAG_CANCEL = 0x{FLAG_CANCEL:04x};
constexpr std::uint32_t DEFAULT_MAX_FRAME = {DEFAULT_MAX_FRAME};

{_enum(MessageType, "std::uint8_t", "MessageType: the header's type byte")}
{_enum(SQLCommand, "std::uint8_t", "SQLCommand: the header's command byte")}
{_enum(SQLTable, "std::uint8_t", "SQLTable: the header's table byte")}
{_enum(Role, "std::uint8_t", "Role: HELLO.role")}
{_enum(ShutdownReason, "std::uint8_t", "ShutdownReason: SHUTDOWN.reason")}
{_enum(ErrorCode, "std::uint16_t", "ErrorCode: ERROR.code")}
// True for the errors after which the server closes the connection.
inline bool closes_connection(ErrorCode code) {{
    for (ErrorCode closing : {{{closing}}}) {{
        if (code == closing) return true;
    }}
    return false;
}}

{VALUES_AND_CODEC}{structs}
{FRAMES}{_key_functions()}
{_event_position()}
{_table_traits()}
}}  // namespace tradehub
"""


def main(argv: list[str]) -> int:
    """Write the header, or with --check return 1 when the committed one is stale."""
    return write_or_check(OUTPUT, render(), COMMAND, "--check" in argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
