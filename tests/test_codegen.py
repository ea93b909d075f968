"""The generators: their shared write-or-check, and that the runtime never imports them."""

import io
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tradehub.codegen.output import write_or_check

ROOT = Path(__file__).resolve().parent.parent


class WriteOrCheckTests(SynchronousTestCase):
    def setUp(self):
        self.path = Path(self.mktemp()) / "docs" / "out.md"
        self.stdout, self.stderr = io.StringIO(), io.StringIO()

    def run_it(self, text, check):
        with redirect_stdout(self.stdout), redirect_stderr(self.stderr):
            return write_or_check(self.path, text, "python -m gen", check)

    def test_writes_the_file_and_its_folder(self):
        self.assertEqual(self.run_it("new\n", check=False), 0)
        self.assertEqual(self.path.read_text(), "new\n")
        self.assertIn(f"wrote {self.path}", self.stdout.getvalue())

    def test_check_of_a_current_file_succeeds(self):
        self.run_it("same\n", check=False)
        self.assertEqual(self.run_it("same\n", check=True), 0)
        self.assertIn(f"{self.path} is current", self.stdout.getvalue())

    def test_check_of_a_stale_file_fails_names_the_command_and_writes_nothing(self):
        self.run_it("old\n", check=False)
        self.assertEqual(self.run_it("new\n", check=True), 1)
        self.assertEqual(self.path.read_text(), "old\n")
        self.assertIn("out of date: run python -m gen", self.stderr.getvalue())

    def test_check_of_a_missing_file_fails(self):
        self.assertEqual(self.run_it("new\n", check=True), 1)
        self.assertFalse(self.path.exists())


def _runtime_modules():
    """Every module under tradehub/ but the generators, by dotted name."""
    names = []
    for path in sorted((ROOT / "tradehub").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[:2] == ("tradehub", "codegen"):
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


_IMPORT_ALL = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(sorted(m for m in sys.modules if m == "tradehub.codegen" or m.startswith("tradehub.codegen.")))
"""


class RuntimeImportTests(SynchronousTestCase):
    def test_no_runtime_module_imports_the_generators(self):
        """A fresh interpreter: this test process has imported tradehub.codegen already."""
        modules = _runtime_modules()
        self.assertIn("tradehub.service", modules)
        self.assertIn("tradehub.protocol.tables", modules)
        result = subprocess.run(
            [sys.executable, "-c", _IMPORT_ALL, *modules], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "[]", "runtime modules import tradehub.codegen")
