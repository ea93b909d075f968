"""
The contract's field types as construct codecs, and L{Layout}: an ordered
list of named fields declared once and used by the decoder, the encoder, the
protocol document and the C++ header generator.
"""

import decimal
import io
import itertools
import struct
from typing import Any, Optional

import attrs
from construct import (
    Adapter,
    Construct,
    Float64l,
    FormatField,
    Int8ul,
    Int16ul,
    Int32sl,
    Int32ul,
    Int64sl,
    Int64ul,
    PrefixedArray,
    StreamError,
)

from ..schema.timestamp import Timestamp
from .enums import ErrorCode
from .errors import ProtocolError

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
# Wide enough that scaling never rounds: a rounded value must be rejected, not stored.
_EXACT = decimal.Context(prec=200, Emax=10**6, Emin=-(10**6))


# The custom codecs below also emit Python source for construct's compiler
# (_emitparse/_emitbuild), so compiled layouts run them inline instead of
# calling back into construct's slow generic path.
_COMPILED_HELPERS = (
    "from decimal import Decimal as _Decimal\n"
    "from tradehub.schema.timestamp import Timestamp\n"
    "from tradehub.protocol.wire import decimal_to_units, presence, bool_of_byte, byte_of_bool\n"
    "from tradehub.protocol.wire import read_prefixed, write_prefixed\n"
)


def _sub_build(subcon, code, value):
    """Source that builds C{value} (an expression) with subcon."""
    return f"reuse({value}, lambda obj: {subcon._compilebuild(code)})"


class _Decimal(Adapter):
    """decimal: an i64 count of 10^-9 units, exact both ways."""

    # The value of the units {}, and the units of the value {}: in compiled codecs and generated ones alike.
    VALUE = "_Decimal({}).scaleb(-9)"
    PACK = "decimal_to_units({})"

    def _decode(self, obj, context, path):
        return decimal.Decimal(obj).scaleb(-9)

    def _encode(self, obj, context, path):
        return decimal_to_units(obj)

    def _emitparse(self, code):
        code.append(_COMPILED_HELPERS)
        return self.VALUE.format(self.subcon._compileparse(code))

    def _emitbuild(self, code):
        code.append(_COMPILED_HELPERS)
        return _sub_build(self.subcon, code, self.PACK.format("obj"))


def decimal_to_units(value):
    """The i64 count of 10^-9 units for C{value}; ValueError if it does not fit exactly."""
    value = decimal.Decimal(value)
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite decimal")
    units = value.scaleb(9, context=_EXACT)
    if units != units.to_integral_value(context=_EXACT):
        raise ValueError(f"{value} has more than 9 decimal places")
    units = int(units)
    if not I64_MIN <= units <= I64_MAX:
        raise ValueError(f"{value} is outside the decimal range")
    return units


class _Timestamp(Adapter):
    VALUE = "Timestamp({})"
    PACK = "{}.ns"

    def _decode(self, obj, context, path):
        return Timestamp(obj)

    def _encode(self, obj, context, path):
        return obj.ns

    def _emitparse(self, code):
        code.append(_COMPILED_HELPERS)
        return self.VALUE.format(self.subcon._compileparse(code))

    def _emitbuild(self, code):
        code.append(_COMPILED_HELPERS)
        return _sub_build(self.subcon, code, self.PACK.format("obj"))


def presence(byte):
    if byte > 1:
        raise ValueError(f"presence byte {byte} is neither 0 nor 1")
    return byte


def bool_of_byte(byte):
    if byte > 1:
        raise ValueError(f"bool byte {byte} is neither 0 nor 1")
    return byte == 1


def byte_of_bool(value):
    if not isinstance(value, bool):
        raise ValueError(f"expected a bool, got {value!r}")
    return int(value)


class _Bool(Adapter):
    """bool: u8 0 or 1; anything else is invalid (construct's Flag accepts any byte)."""

    # In offset decoders: a byte other than 0 or 1 raises IndexError, and the construct codec says why.
    VALUE = "_BOOLS[{}]"
    PACK = "byte_of_bool({})"

    def _decode(self, obj, context, path):
        return bool_of_byte(obj)

    def _encode(self, obj, context, path):
        return byte_of_bool(obj)

    def _emitparse(self, code):
        code.append(_COMPILED_HELPERS)
        return f"bool_of_byte({self.subcon._compileparse(code)})"

    def _emitbuild(self, code):
        code.append(_COMPILED_HELPERS)
        return _sub_build(self.subcon, code, self.PACK.format("obj"))


def read_prefixed(stream, length, text):
    """A length-prefixed value; strict UTF-8 when it is text."""
    raw = stream.read(length.size)
    if len(raw) < length.size:
        raise StreamError("could not read enough bytes")
    (size,) = length.unpack(raw)
    data = stream.read(size)
    if len(data) < size:
        raise StreamError("could not read enough bytes")
    return data.decode("utf-8") if text else data


def write_prefixed(stream, value, length, text, maximum):
    data = value.encode("utf-8") if text else bytes(value)
    if len(data) > maximum:
        raise ValueError(f"{len(data)} bytes is longer than the {maximum} the field allows")
    stream.write(length.pack(len(data)))
    stream.write(data)
    return value


class _LengthPrefixed(Construct):
    """
    str, text and bytes: a little-endian length, then the bytes (strict UTF-8
    for text). construct's PascalString and Prefixed do not compile their
    build; this one compiles both directions inline.
    """

    def __init__(self, length_format, text):
        super().__init__()
        self.length = struct.Struct(length_format)
        self.text = text
        self.maximum = 2 ** (8 * self.length.size) - 1

    def _parse(self, stream, context, path):
        return read_prefixed(stream, self.length, self.text)

    def _build(self, obj, stream, context, path):
        return write_prefixed(stream, obj, self.length, self.text, self.maximum)

    def _sizeof(self, context, path):
        raise NotImplementedError("length-prefixed fields have no fixed size")

    def _emitparse(self, code):
        code.append(_COMPILED_HELPERS)
        name = f"prefix_{code.allocateId()}"
        code.append(f"{name} = struct.Struct({self.length.format!r})")
        return f"read_prefixed(io, {name}, {self.text})"

    def _emitbuild(self, code):
        code.append(_COMPILED_HELPERS)
        name = f"prefix_{code.allocateId()}"
        code.append(f"{name} = struct.Struct({self.length.format!r})")
        return f"write_prefixed(io, obj, {name}, {self.text}, {self.maximum})"


class _Record(Construct):
    """
    Named fields in order, parsed into a dict and built from a mapping. It
    compiles to one dict literal: no context Container per row, which is
    most of what construct's compiled Struct costs. Layouts never refer to
    other fields, so they need no context.
    """

    def __init__(self, fields):
        super().__init__()
        self.fields = tuple(fields)

    def _parse(self, stream, context, path):
        return {name: sub._parsereport(stream, context, path) for name, sub in self.fields}

    def _build(self, obj, stream, context, path):
        for name, sub in self.fields:
            sub._build(obj[name], stream, context, path)
        return obj

    def _sizeof(self, context, path):
        return sum(sub._sizeof(context, path) for _, sub in self.fields)

    def _emitparse(self, code):
        return "{" + ", ".join(f"{name!r}: {sub._compileparse(code)}" for name, sub in self.fields) + "}"

    def _emitbuild(self, code):
        name = f"build_record_{code.allocateId()}"
        lines = [f"def {name}(record, io, this):"]
        for field, sub in self.fields:
            expression = sub._compilebuild(code)
            lines.append(f"    obj = record[{field!r}]")
            lines.append(f"    {expression}")
        lines.append("    return record")
        code.append("\n".join(lines) + "\n")
        return f"{name}(obj, io, this)"


class _Optional(Construct):
    """opt<T>: u8 presence (0 or 1), then T when present; None when absent."""

    def __init__(self, subcon):
        super().__init__()
        self.subcon = subcon

    def _parse(self, stream, context, path):
        present = presence(Int8ul._parsereport(stream, context, path))
        return self.subcon._parsereport(stream, context, path) if present else None

    def _build(self, obj, stream, context, path):
        Int8ul._build(0 if obj is None else 1, stream, context, path)
        if obj is not None:
            self.subcon._build(obj, stream, context, path)
        return obj

    def _sizeof(self, context, path):
        raise NotImplementedError("opt<T> has no fixed size")

    def _emitparse(self, code):
        code.append(_COMPILED_HELPERS)
        return f"(None if presence({Int8ul._compileparse(code)}) == 0 else {self.subcon._compileparse(code)})"

    def _emitbuild(self, code):
        present = f"(io.write(b'\\x01'), {self.subcon._compilebuild(code)})[1]"
        return f"((io.write(b'\\x00'), None)[1] if obj is None else {present})"


@attrs.frozen
class WireType:
    """A field type of the contract: its name, its codec and what it maps to."""

    name: str
    construct: Any = attrs.field(repr=False, eq=False)
    size: int | None = None
    python: str = ""
    item: Optional["WireType"] = None
    layout: Optional["Layout"] = attrs.field(default=None, repr=False, eq=False)


def _fixed(name, construct, python):
    return WireType(name, construct, construct.sizeof(), python)


u8 = _fixed("u8", Int8ul, "int")
u16 = _fixed("u16", Int16ul, "int")
u32 = _fixed("u32", Int32ul, "int")
u64 = _fixed("u64", Int64ul, "int")
i32 = _fixed("i32", Int32sl, "int")
i64 = _fixed("i64", Int64sl, "int")
f64 = _fixed("f64", Float64l, "float")
boolean = WireType("bool", _Bool(Int8ul), 1, "bool")
timestamp = WireType("timestamp", _Timestamp(Int64sl), 8, "Timestamp (ns since the epoch, UTC)")
decimal_ = WireType("decimal", _Decimal(Int64sl), 8, "decimal.Decimal (exact, 9 places)")
string = WireType("str", _LengthPrefixed("<H", True), None, "str (strict UTF-8, at most 65535 bytes)")
text = WireType("text", _LengthPrefixed("<I", True), None, "str (strict UTF-8)")
blob = WireType("bytes", _LengthPrefixed("<I", False), None, "bytes")


def opt(item):
    return WireType(f"opt<{item.name}>", _Optional(item.construct), None, f"{item.python} or None", item)


# The count before a list's items.
LIST_COUNT = Int32ul


def list_of(item):
    return WireType(
        f"list<{item.name}>", PrefixedArray(LIST_COUNT, item.construct), None, f"list of {item.python}", item
    )


# Every field type a column kind may name, by its contract name.
FIELD_TYPES = {t.name: t for t in (boolean, i32, i64, f64, string, text, blob, timestamp, decimal_)}
FIELD_TYPES.update({t.name: t for t in (list_of(string), list_of(f64))})


@attrs.frozen
class Field:
    name: str
    type: WireType
    doc: str = ""


def wire(type: WireType, doc: str, **options: Any) -> Any:
    """An attrs field of an envelope payload class, with its wire type and meaning."""
    return attrs.field(metadata={"wire": type, "doc": doc}, **options)


class Layout:
    """
    A payload layout: named fields in wire order, compiled once. Decoding
    rejects trailing bytes; both directions raise L{ProtocolError}.
    """

    def __init__(self, name, fields, cls=None):
        self.name = name
        self.fields = tuple(fields)
        self.cls = cls
        self.struct = _Record((f.name, f.type.construct) for f in self.fields)
        # The compiled functions, called directly: construct's generic entry
        # points would add a context Container and a path to every call.
        compiled = self.struct.compile()
        self._parse, self._build = compiled.parsefunc, compiled.buildfunc
        self._names = tuple(f.name for f in self.fields)
        self._fixed = _fixed_struct(self.fields)
        self.offsets_source, self._offsets = _OffsetDecoder().compile(self)
        self.packing_source, self._packing = _PackingEncoder().compile(self)

    @classmethod
    def of(cls, name, payload):
        """The layout of an attrs class whose fields were declared with L{wire}: declared once, used both ways."""
        fields = [Field(f.name, f.metadata["wire"], f.metadata["doc"]) for f in attrs.fields(payload)]
        return cls(name, fields, payload)

    @property
    def size(self):
        """The fixed byte size, or None when a field is variable."""
        sizes = [f.type.size for f in self.fields]
        return None if None in sizes else sum(sizes)

    def decode(self, data):
        if self._fixed is not None:
            return self._decode_fixed(data)
        if type(data) is not bytes:
            data = bytes(data)
        try:
            values = self._offsets(data)
        except Exception:
            # Bad input: the construct codec says what is wrong, in the contract's words.
            values = self.decode_stream(data)
        return self.cls(**values) if self.cls is not None else values

    def decode_offsets(self, data):
        """The offset decoder alone: the values, or any exception on bad input (no reason given)."""
        return self._offsets(data)

    def decode_stream(self, data):
        """
        The compiled construct codec alone, reading a stream: the values
        L{decode} returns, or L{ProtocolError} saying what is wrong.
        """
        stream = io.BytesIO(data)
        try:
            values = self._parse(stream, None)
        except Exception as error:
            raise ProtocolError(ErrorCode.MALFORMED_PAYLOAD, f"{self.name}: {_reason(error)}") from None
        if stream.read(1):
            raise ProtocolError(ErrorCode.MALFORMED_PAYLOAD, f"{self.name}: trailing bytes after the payload")
        return values

    def _decode_fixed(self, data):
        try:
            values = self._fixed.unpack(data)
        except struct.error:
            reason = "payload ended early" if len(data) < self._fixed.size else "trailing bytes after the payload"
            raise ProtocolError(ErrorCode.MALFORMED_PAYLOAD, f"{self.name}: {reason}") from None
        return self.cls(*values) if self.cls is not None else dict(zip(self._names, values, strict=True))

    def pack(self, *values):
        """A fixed layout from its values in field order: the cheapest encoding (every frame's header)."""
        return self._fixed.pack(*values)

    def unpack_from(self, buffer, offset):
        """A fixed layout's value at C{offset} of C{buffer}, which holds it whole: the cheapest decoding."""
        return self.cls(*self._fixed.unpack_from(buffer, offset))

    def encode(self, value):
        values = value if isinstance(value, dict) else {n: getattr(value, n) for n in self._names}
        if self._fixed is not None:
            try:
                return self._fixed.pack(*[values[n] for n in self._names])
            except (struct.error, KeyError) as error:
                raise ProtocolError(ErrorCode.VALIDATION_FAILED, f"{self.name}: {error}") from None
        try:
            return self._packing(values)
        except Exception:
            # A value that does not fit: the construct codec says why, in the contract's words.
            return self.encode_stream(values)

    def encode_packing(self, values):
        """The packing encoder alone: the bytes, or any exception on a bad value (no reason given)."""
        return self._packing(values)

    def encode_stream(self, values):
        """The compiled construct codec alone, writing a stream: L{encode}'s bytes, or L{ProtocolError} saying why."""
        stream = io.BytesIO()
        try:
            self._build(values, stream, None)
            return stream.getvalue()
        except Exception as error:
            raise ProtocolError(ErrorCode.VALIDATION_FAILED, f"{self.name}: {_reason(error)}") from None


class _Malformed(Exception):
    """Raised by generated codecs on bad input; what is wrong is the construct codec's to say."""


@attrs.frozen
class _FixedPart:
    """A fixed-size field type: its struct format character, and templates of its value from the number and back."""

    format: str
    value: str = "{}"
    pack: str = "{}"

    @property
    def size(self):
        return struct.calcsize("<" + self.format)


def _fixed_part(wire_type):
    """The L{_FixedPart} of a fixed-size field type, from its construct declaration; None for the others."""
    construct = wire_type.construct
    if isinstance(construct, FormatField):
        return _FixedPart(construct.fmtstr.lstrip("<"))
    if isinstance(construct, (_Bool, _Decimal, _Timestamp)):
        return _FixedPart(construct.subcon.fmtstr.lstrip("<"), construct.VALUE, construct.PACK)
    return None


class _Generated:
    """
    Writes one function of a layout as Python source from its fields, the
    way construct compiles codecs, but without a stream: struct calls on
    the bytes, one precompiled struct.Struct per run of fixed-size fields.
    It only has to notice bad input (any exception does): L{Layout} then lets
    the construct codec say what is wrong, so both refuse alike.
    """

    # The struct method the function calls, and the name of the function.
    method = ""
    function = ""

    def __init__(self):
        self._lines = []
        self._ids = itertools.count()
        self._depth = 1
        self._structs = {}
        self.namespace = {
            "Timestamp": Timestamp,
            "_Decimal": decimal.Decimal,
            "_BOOLS": (False, True),
            "_Malformed": _Malformed,
            "_unpack_from": struct.unpack_from,
            "_pack": struct.pack,
            "decimal_to_units": decimal_to_units,
            "byte_of_bool": byte_of_bool,
        }

    def compile(self, layout):
        """The function's source and the function."""
        self._body(layout)
        # Each struct's method as a local: no global and attribute lookup per field.
        locals_ = [f"    {name} = s_{name[2:]}.{self.method}" for name in sorted(self._structs)]
        source = f"def {self.function}:\n" + "\n".join(locals_ + self._lines) + "\n"
        exec(compile(source, f"<{self.method} of {layout.name}>", "exec"), self.namespace)
        return source, self.namespace[self.function.split("(")[0]]

    def _line(self, text):
        self._lines.append("    " * self._depth + text)

    def _name(self, prefix):
        return f"{prefix}{next(self._ids)}"

    def _struct(self, formats):
        """The local name of the method of the struct of these formats."""
        name = "m_" + formats
        if name not in self._structs:
            self._structs[name] = formats
            self.namespace["s_" + formats] = struct.Struct("<" + formats)
        return name

    def _indented(self, write, *arguments):
        self._depth += 1
        try:
            return write(*arguments)
        finally:
            self._depth -= 1

    # What each kind of generated function writes: its body, and each kind of value.

    def _body(self, layout):
        raise NotImplementedError

    def _record(self, fields, *arguments):
        raise NotImplementedError

    def _fixed(self, part, *arguments):
        raise NotImplementedError

    def _optional(self, item, *arguments):
        raise NotImplementedError

    def _list(self, item, *arguments):
        raise NotImplementedError

    def _prefixed(self, construct, *arguments):
        raise NotImplementedError

    def _value(self, wire_type, *arguments):
        """One value of a field type: its layout's fields, an option, a list, a fixed-size or prefixed value."""
        if wire_type.layout is not None:
            return self._record(wire_type.layout.fields, *arguments)
        part = _fixed_part(wire_type)
        if part is not None:
            return self._fixed(part, *arguments)
        if wire_type.name.startswith("opt<"):
            return self._optional(wire_type.item, *arguments)
        if wire_type.name.startswith("list<"):
            return self._list(wire_type.item, *arguments)
        return self._prefixed(wire_type.construct, *arguments)

    @staticmethod
    def _runs(fields):
        """The fields in order, consecutive fixed-size ones in lists of (field, part): read or written together."""
        run = []
        for field in fields:
            part = _fixed_part(field.type)
            if part is not None:
                run.append((field, part))
                continue
            if run:
                yield run
                run = []
            yield field
        if run:
            yield run


class _OffsetDecoder(_Generated):
    """C{decode(data: bytes) -> dict}: offsets into the payload, no stream and no call per field."""

    method = "unpack_from"
    function = "decode(data)"

    def _body(self, layout):
        self._line("o = 0")
        value = self._record(layout.fields)
        # o only grows: once past the end (a value cut short), every later read raises, and so does this.
        self._line("if o != len(data):")
        self._line("    raise _Malformed")
        self._line(f"return {value}")

    def _record(self, fields):
        """A record's fields, read in order; its dict's expression."""
        items = []
        for run in self._runs(fields):
            if isinstance(run, list):
                items += self._fixed_run([(field.name, part) for field, part in run])
            else:
                items.append((run.name, self._value(run.type)))
        return "{" + ", ".join(f"{name!r}: {value}" for name, value in items) + "}"

    def _fixed_run(self, run):
        """Fixed-size fields, (name, part) each, in one read; (name, value expression) of each."""
        formats = "".join(part.format for _, part in run)
        names = [self._name("v") for _ in run]
        if formats == "B":
            self._line(f"{names[0]} = data[o]")
        else:
            self._line(f"{', '.join(names)}, = {self._struct(formats)}(data, o)")
        self._line(f"o += {struct.calcsize('<' + formats)}")
        return [(field, part.value.format(name)) for (field, part), name in zip(run, names, strict=True)]

    def _fixed(self, part):
        [(_, value)] = self._fixed_run([(None, part)])
        return value

    def _optional(self, item):
        value = self._name("p")
        self._line(f"{value} = data[o]")
        self._line("o += 1")
        self._line(f"if {value} == 1:")
        self._indented(lambda: self._line(f"{value} = {self._value(item)}"))
        self._line(f"elif {value}:")
        self._line("    raise _Malformed")
        self._line("else:")
        self._line(f"    {value} = None")
        return value

    def _list(self, item):
        items, count = self._name("l"), self._name("c")
        self._line(f"{count}, = {self._struct(LIST_COUNT.fmtstr.lstrip('<'))}(data, o)")
        self._line(f"o += {LIST_COUNT.sizeof()}")
        part = _fixed_part(item)
        if part is not None:
            # Fixed-size items: one read of them all.
            self._line(f"{items} = _unpack_from(f'<{{{count}}}{part.format}', data, o)")
            self._line(f"o += {count} * {part.size}")
            if part.value != "{}":
                self._line(f"{items} = [{part.value.format('x')} for x in {items}]")
            else:
                self._line(f"{items} = list({items})")
            return items
        self._line(f"{items} = []")
        self._line(f"for _ in range({count}):")
        self._indented(lambda: self._line(f"{items}.append({self._value(item)})"))
        return items

    def _prefixed(self, construct):
        """str, text and bytes: a length, then the bytes (strict UTF-8 for text)."""
        value, end = self._name("v"), self._name("e")
        size = construct.length.size
        self._line(f"{end} = o + {size} + {self._struct(construct.length.format.lstrip('<'))}(data, o)[0]")
        decode = ".decode('utf-8')" if construct.text else ""
        self._line(f"{value} = data[o + {size}:{end}]{decode}")
        self._line(f"o = {end}")
        return value


class _PackingEncoder(_Generated):
    """C{encode(value: dict) -> bytes}: the parts packed into a list and joined, no stream and no call per field."""

    method = "pack"
    function = "encode(value)"

    def _body(self, layout):
        self._line("parts = []")
        self._line("append = parts.append")
        self._record(layout.fields, "value")
        self._line("return b''.join(parts)")

    def _record(self, fields, value):
        record = self._name("r")
        self._line(f"{record} = {value}")
        for run in self._runs(fields):
            if isinstance(run, list):
                formats = "".join(part.format for _, part in run)
                values = ", ".join(part.pack.format(f"{record}[{field.name!r}]") for field, part in run)
                self._line(f"append({self._struct(formats)}({values}))")
            else:
                self._value(run.type, f"{record}[{run.name!r}]")

    def _fixed(self, part, value):
        self._line(f"append({self._struct(part.format)}({part.pack.format(value)}))")

    def _optional(self, item, value):
        option = self._name("p")
        self._line(f"{option} = {value}")
        self._line(f"if {option} is None:")
        self._line("    append(b'\\x00')")
        self._line("else:")
        self._line("    append(b'\\x01')")
        self._indented(self._value, item, option)

    def _list(self, item, value):
        items = self._name("l")
        self._line(f"{items} = {value}")
        self._line(f"append({self._struct(LIST_COUNT.fmtstr.lstrip('<'))}(len({items})))")
        part = _fixed_part(item)
        if part is not None:
            # Fixed-size items: packed at once.
            packed = items if part.pack == "{}" else f"[{part.pack.format('x')} for x in {items}]"
            self._line(f"append(_pack(f'<{{len({items})}}{part.format}', *{packed}))")
            return
        each = self._name("x")
        self._line(f"for {each} in {items}:")
        self._indented(self._value, item, each)

    def _prefixed(self, construct, value):
        """str, text and bytes: as write_prefixed writes them."""
        data = self._name("b")
        self._line(f"{data} = {value}.encode('utf-8')" if construct.text else f"{data} = bytes({value})")
        # A value longer than its length allows fails to pack its length, as it fails write_prefixed.
        self._line(f"append({self._struct(construct.length.format.lstrip('<'))}(len({data})))")
        self._line(f"append({data})")


def _fixed_struct(fields):
    """
    A layout of plain fixed-size numbers compiles to one struct.Struct, built
    from the same construct declarations (their format characters).
    """
    formats = []
    for field in fields:
        construct = field.type.construct
        if type(construct).__name__ != "FormatField":
            return None
        formats.append(construct.fmtstr.lstrip("<"))
    return struct.Struct("<" + "".join(formats))


def _reason(error):
    text = str(error).strip().splitlines()
    reason = text[-1] if text else type(error).__name__
    if isinstance(error, UnicodeError):
        return "invalid UTF-8"
    if (
        isinstance(error, struct.error)
        or "stream read less than specified amount" in reason
        or "could not read enough bytes" in reason
    ):
        return "payload ended early"
    if "expected end of stream" in reason:
        return "trailing bytes after the payload"
    return reason
