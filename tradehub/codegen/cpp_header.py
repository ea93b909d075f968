"""
Generate clients/cpp/tradehub_protocol.hpp from the codec definitions:
C++17, header-only, standard library only, endian-explicit, bounds-checked.

    python -m tradehub.codegen.cpp_header [--check]
"""

import sys
from pathlib import Path

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
from ..protocol.messages import ERROR, HEADER, HELLO, HELLO_ACK, SHUTDOWN, SHUTDOWN_ACK
from ..protocol.tables import LAYOUTS
from ..protocol.wire import WireType
from .output import write_or_check

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
    """'MARKET_TICK row' -> MarketTickRow, 'HELLO_ACK' -> HelloAck."""
    return "".join(part.capitalize() for part in layout_name.replace("_", " ").split())


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

    for layout in (HEADER, HELLO, HELLO_ACK, ERROR, SHUTDOWN, SHUTDOWN_ACK):
        visit(layout)
    for spec in LAYOUTS.values():
        for layout in (spec.row, spec.key_row, spec.rows_request, spec.keys_request, spec.select_request, spec.response):
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


def _key_functions():
    lines = ["// The key of a row, as DELETE and SELECT take it."]
    for spec in LAYOUTS.values():
        row, key = struct_name(spec.row.name), struct_name(spec.key_row.name)
        members = ", ".join(f"r.{member(k)}" for k in spec.table.key)
        lines.append(f"inline {key} key_of(const {row}& r) {{ return {key}{{{members}}}; }}")
    return "\n".join(lines) + "\n"


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

using Bytes = std::vector<std::uint8_t>;

// A UTC instant: nanoseconds since 1970-01-01T00:00:00Z.
struct Timestamp {{
    std::int64_t ns = 0;
    bool operator==(const Timestamp& o) const {{ return ns == o.ns; }}
    bool operator!=(const Timestamp& o) const {{ return ns != o.ns; }}
    bool operator<(const Timestamp& o) const {{ return ns < o.ns; }}
}};

// An exact decimal: a count of 10^-9 units (1.5 is 1500000000). Never a double.
struct Decimal {{
    std::int64_t units = 0;
    bool operator==(const Decimal& o) const {{ return units == o.units; }}
    bool operator!=(const Decimal& o) const {{ return units != o.units; }}

    // "189.12", "-0.000000001", "100": at most 9 decimal places; throws std::invalid_argument.
    static Decimal parse(const std::string& text) {{
        constexpr std::uint64_t limit = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) + 1;
        std::size_t i = 0;
        bool negative = false;
        if (i < text.size() && (text[i] == '-' || text[i] == '+')) negative = text[i++] == '-';
        std::uint64_t units = 0;
        int places = -1;
        bool digits = false;
        auto grow = [&](unsigned digit) {{
            if (units > (limit - digit) / 10) throw std::invalid_argument("out of range: " + text);
            units = units * 10 + digit;
        }};
        for (; i < text.size(); ++i) {{
            char c = text[i];
            if (c == '.' && places < 0) {{
                places = 0;
                continue;
            }}
            if (c < '0' || c > '9') throw std::invalid_argument("not a decimal: " + text);
            if (places >= 0 && ++places > 9) throw std::invalid_argument("more than 9 decimal places: " + text);
            grow(static_cast<unsigned>(c - '0'));
            digits = true;
        }}
        if (!digits) throw std::invalid_argument("not a decimal: " + text);
        for (int p = places < 0 ? 0 : places; p < 9; ++p) grow(0);
        if (!negative && units == limit) throw std::invalid_argument("out of range: " + text);
        Decimal d;
        d.units = negative ? static_cast<std::int64_t>(0 - units) : static_cast<std::int64_t>(units);
        return d;
    }}

    std::string str() const {{
        std::uint64_t magnitude = units < 0 ? 0 - static_cast<std::uint64_t>(units) : static_cast<std::uint64_t>(units);
        std::string whole = std::to_string(magnitude / 1000000000);
        std::string fraction = std::to_string(magnitude % 1000000000);
        fraction.insert(0, 9 - fraction.size(), '0');
        while (!fraction.empty() && fraction.back() == '0') fraction.pop_back();
        return (units < 0 ? "-" : "") + whole + (fraction.empty() ? "" : "." + fraction);
    }}
}};

class DecodeError : public std::runtime_error {{
  public:
    using std::runtime_error::runtime_error;
}};

// Appends little-endian fields to a byte buffer.
class Writer {{
  public:
    Bytes bytes;

    void u8(std::uint8_t v) {{ bytes.push_back(v); }}
    void u16(std::uint16_t v) {{ put(v, 2); }}
    void u32(std::uint32_t v) {{ put(v, 4); }}
    void u64(std::uint64_t v) {{ put(v, 8); }}
    void i32(std::int32_t v) {{ put(static_cast<std::uint32_t>(v), 4); }}
    void i64(std::int64_t v) {{ put(static_cast<std::uint64_t>(v), 8); }}
    void f64(double v) {{
        std::uint64_t raw;
        std::memcpy(&raw, &v, sizeof raw);
        put(raw, 8);
    }}
    void boolean(bool v) {{ u8(v ? 1 : 0); }}
    void timestamp(const Timestamp& v) {{ i64(v.ns); }}
    void decimal(const Decimal& v) {{ i64(v.units); }}
    void str(const std::string& v) {{
        if (v.size() > 0xffff) throw std::length_error("str longer than 65535 bytes");
        u16(static_cast<std::uint16_t>(v.size()));
        bytes.insert(bytes.end(), v.begin(), v.end());
    }}
    void text(const std::string& v) {{
        u32(checked_u32(v.size()));
        bytes.insert(bytes.end(), v.begin(), v.end());
    }}
    void blob(const Bytes& v) {{
        u32(checked_u32(v.size()));
        bytes.insert(bytes.end(), v.begin(), v.end());
    }}

  private:
    void put(std::uint64_t v, int n) {{
        for (int i = 0; i < n; ++i) bytes.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    }}
    static std::uint32_t checked_u32(std::size_t n) {{
        if (n > 0xffffffffu) throw std::length_error("longer than 4 GiB");
        return static_cast<std::uint32_t>(n);
    }}
}};

// Reads little-endian fields from a buffer it does not own, never past its end.
class Reader {{
  public:
    Reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {{}}
    explicit Reader(const Bytes& b) : Reader(b.data(), b.size()) {{}}

    std::size_t remaining() const {{ return size_ - pos_; }}
    void finish() const {{
        if (pos_ != size_) throw DecodeError("trailing bytes after the payload");
    }}

    std::uint8_t u8() {{ return static_cast<std::uint8_t>(get(1)); }}
    std::uint16_t u16() {{ return static_cast<std::uint16_t>(get(2)); }}
    std::uint32_t u32() {{ return static_cast<std::uint32_t>(get(4)); }}
    std::uint64_t u64() {{ return get(8); }}
    std::int32_t i32() {{ return static_cast<std::int32_t>(static_cast<std::uint32_t>(get(4))); }}
    std::int64_t i64() {{ return static_cast<std::int64_t>(get(8)); }}
    double f64() {{
        std::uint64_t raw = get(8);
        double v;
        std::memcpy(&v, &raw, sizeof v);
        return v;
    }}
    bool boolean() {{
        std::uint8_t b = u8();
        if (b > 1) throw DecodeError("bool byte is neither 0 nor 1");
        return b == 1;
    }}
    Timestamp timestamp() {{ return Timestamp{{i64()}}; }}
    Decimal decimal() {{ return Decimal{{i64()}}; }}
    std::string str() {{ return utf8(u16()); }}
    std::string text() {{ return utf8(u32()); }}
    Bytes blob() {{
        std::size_t n = u32();
        need(n);
        Bytes out(data_ + pos_, data_ + pos_ + n);
        pos_ += n;
        return out;
    }}

  private:
    void need(std::size_t n) const {{
        if (n > remaining()) throw DecodeError("payload ended early");
    }}
    std::uint64_t get(int n) {{
        need(static_cast<std::size_t>(n));
        std::uint64_t v = 0;
        for (int i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(data_[pos_ + i]) << (8 * i);
        pos_ += static_cast<std::size_t>(n);
        return v;
    }}
    std::string utf8(std::size_t n) {{
        need(n);
        std::string out(reinterpret_cast<const char*>(data_ + pos_), n);
        pos_ += n;
        if (!valid_utf8(out)) throw DecodeError("invalid UTF-8");
        return out;
    }}
    static bool valid_utf8(const std::string& s) {{
        std::size_t i = 0;
        while (i < s.size()) {{
            unsigned char c = static_cast<unsigned char>(s[i]);
            std::size_t extra;
            std::uint32_t code;
            if (c < 0x80) {{
                ++i;
                continue;
            }} else if ((c & 0xe0) == 0xc0) {{
                extra = 1;
                code = c & 0x1f;
            }} else if ((c & 0xf0) == 0xe0) {{
                extra = 2;
                code = c & 0x0f;
            }} else if ((c & 0xf8) == 0xf0) {{
                extra = 3;
                code = c & 0x07;
            }} else {{
                return false;
            }}
            if (extra >= s.size() - i) return false;
            for (std::size_t k = 1; k <= extra; ++k) {{
                unsigned char next = static_cast<unsigned char>(s[i + k]);
                if ((next & 0xc0) != 0x80) return false;
                code = (code << 6) | (next & 0x3f);
            }}
            static const std::uint32_t smallest[] = {{0, 0x80, 0x800, 0x10000}};
            if (code < smallest[extra] || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return false;
            i += extra + 1;
        }}
        return true;
    }}

    const std::uint8_t* data_;
    std::size_t size_;
    std::size_t pos_ = 0;
}};

template <class T, class F>
void write_opt(Writer& w, const std::optional<T>& v, F write) {{
    w.u8(v ? 1 : 0);
    if (v) write(*v);
}}

template <class T, class F>
void write_list(Writer& w, const std::vector<T>& v, F write) {{
    if (v.size() > 0xffffffffu) throw std::length_error("list longer than 2^32 - 1 items");
    w.u32(static_cast<std::uint32_t>(v.size()));
    for (const T& item : v) write(item);
}}

template <class T, class F>
std::optional<T> read_opt(Reader& r, F read) {{
    std::uint8_t present = r.u8();
    if (present > 1) throw DecodeError("presence byte is neither 0 nor 1");
    if (!present) return std::nullopt;
    return read();
}}

template <class T, class F>
std::vector<T> read_list(Reader& r, F read) {{
    std::uint32_t count = r.u32();
    std::vector<T> out;
    out.reserve(std::min<std::size_t>(count, r.remaining()));
    for (std::uint32_t i = 0; i < count; ++i) out.push_back(read());
    return out;
}}

{structs}
// A whole frame: length, header, payload.
inline Bytes encode_frame(MessageType type, const Bytes& payload, std::uint64_t request_id = 0,
                          SQLCommand command = static_cast<SQLCommand>(0), SQLTable table = static_cast<SQLTable>(0),
                          std::uint16_t flags = 0) {{
    Writer w;
    w.u32(static_cast<std::uint32_t>(HEADER_SIZE + payload.size()));
    encode(w, Header{{MAGIC, VERSION, static_cast<std::uint8_t>(type), static_cast<std::uint8_t>(command),
                     static_cast<std::uint8_t>(table), flags, request_id}});
    w.bytes.insert(w.bytes.end(), payload.begin(), payload.end());
    return w.bytes;
}}

// Encode a layout into a payload.
template <class T>
Bytes to_payload(const T& value) {{
    Writer w;
    encode(w, value);
    return w.bytes;
}}

// Decode a whole payload into a layout: trailing bytes are an error.
template <class T>
T from_payload(const Bytes& payload) {{
    Reader r(payload);
    T value;
    decode(r, value);
    r.finish();
    return value;
}}

struct Frame {{
    Header header;
    Bytes payload;
}};

// Splits a byte stream into frames, checking length, magic and version before buffering a body.
class FrameReader {{
  public:
    explicit FrameReader(std::uint32_t max_frame = DEFAULT_MAX_FRAME) : max_frame_(max_frame) {{}}
    void set_max_frame(std::uint32_t max_frame) {{ max_frame_ = max_frame; }}
    void feed(const std::uint8_t* data, std::size_t size) {{ buffer_.insert(buffer_.end(), data, data + size); }}

    // The next whole frame, if one is buffered; throws DecodeError on a framing error.
    std::optional<Frame> next() {{
        if (buffer_.size() < 4) return std::nullopt;
        Reader prefix(buffer_.data(), 4);
        std::uint32_t length = prefix.u32();
        if (length < HEADER_SIZE) throw DecodeError("frame length below the header size");
        if (length > max_frame_) throw DecodeError("frame length above max_frame");
        if (buffer_.size() < 4 + static_cast<std::size_t>(length)) return std::nullopt;
        Reader head(buffer_.data() + 4, HEADER_SIZE);
        Frame frame{{decode_Header(head), Bytes(buffer_.begin() + 4 + HEADER_SIZE, buffer_.begin() + 4 + length)}};
        if (frame.header.magic != MAGIC) throw DecodeError("bad magic");
        if (frame.header.version != VERSION) throw DecodeError("bad version byte");
        buffer_.erase(buffer_.begin(), buffer_.begin() + 4 + length);
        return frame;
    }}

  private:
    std::uint32_t max_frame_;
    Bytes buffer_;
}};

{_key_functions()}
{_table_traits()}
}}  // namespace tradehub
"""


def main(argv: list[str]) -> int:
    """Write the header, or with --check return 1 when the committed one is stale."""
    return write_or_check(OUTPUT, render(), COMMAND, "--check" in argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
