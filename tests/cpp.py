"""
C++ for the cross-language tests: compile programs against the generated
header (g++ -std=c++17 -Wall -Wextra -Werror, into a temporary folder), drive
a running one a line at a time, and write Python values as C++ expressions
so a generated C++ program can send exactly the rows the Python tests expect back.
"""

import shutil
import subprocess
import tempfile
from pathlib import Path

from tradehub.codegen.cpp_header import cpp_type, member, struct_name
from tradehub.protocol.wire import decimal_to_units

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ROOT / "clients" / "cpp"
SOURCES = Path(__file__).resolve().parent / "cpp"
_built = {}


def compile_program(source, name):
    """Compile C++ source text (or a path) once per run; returns the binary's path."""
    text = Path(source).read_text() if isinstance(source, Path) else source
    if text in _built:
        return _built[text]
    folder = Path(tempfile.mkdtemp(prefix="tradehub-cpp-"))
    source_file = folder / f"{name}.cpp"
    source_file.write_text(text)
    binary = folder / name
    result = subprocess.run(
        [
            "g++",
            "-std=c++17",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            str(CLIENTS),
            str(source_file),
            "-o",
            str(binary),
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode:
        shutil.rmtree(folder, ignore_errors=True)
        raise AssertionError(f"g++ failed for {name}:\n{result.stderr[-4000:]}")
    _built[text] = binary
    return binary


class Driven:
    """
    A C++ program that reads commands on stdin and ends each answer with a
    line "done" (tests/cpp/follower.cpp): the test interleaves its steps
    with its own writes. Blocking: call from a thread.
    """

    def __init__(self, binary, *args):
        self.process = subprocess.Popen(
            [str(binary), *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def ask(self, command):
        """The lines answering one command."""
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        lines = []
        while (line := self.process.stdout.readline()) != "done\n":
            if not line:
                raise AssertionError(f"the program ended during {command!r}: {lines}")
            lines.append(line.rstrip("\n"))
        return lines

    def close(self):
        """Quit (the program shuts its session down) and return what it printed last; kill it if it hangs."""
        try:
            output, _ = self.process.communicate("quit\n", timeout=30)
        except (subprocess.TimeoutExpired, BrokenPipeError, ValueError):
            self.process.kill()
            output, _ = self.process.communicate()
        return output


def literal(wire, value):
    """A C++ expression for a Python value of a wire type."""
    if wire.name.startswith("opt<"):
        return "std::nullopt" if value is None else f"{cpp_type(wire)}({literal(wire.item, value)})"
    if wire.name.startswith("list<"):
        return f"{cpp_type(wire)}{{" + ", ".join(literal(wire.item, v) for v in value) + "}"
    kind = wire.name
    if kind in ("str", "text"):
        return _string(value)
    if kind == "bytes":
        return "tradehub::Bytes{" + ", ".join(str(b) for b in value) + "}"
    if kind == "decimal":
        return f"tradehub::Decimal{{{decimal_to_units(value)}LL}}"
    if kind == "timestamp":
        return f"tradehub::Timestamp{{{value.ns}LL}}"
    if kind == "bool":
        return "true" if value else "false"
    if kind == "f64":
        return float(value).hex()
    if kind in ("i64", "u64"):
        return f"{value}LL"
    return str(value)


def _string(text):
    raw = text.encode()
    body = "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\?' else f"\\{b:03o}" for b in raw)
    return f'std::string("{body}", {len(raw)})'


def row_literal(layout, row, variable):
    """Statements that build C++ variable `variable` of a layout's struct from a dict."""
    lines = [f"    {struct_name(layout.name)} {variable};"]
    for field in layout.fields:
        lines.append(f"    {variable}.{member(field.name)} = {literal(field.type, row[field.name])};")
    return "\n".join(lines)
