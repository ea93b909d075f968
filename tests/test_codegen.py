"""The generators' shared write-or-check behaviour."""

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tradehub.codegen.output import write_or_check


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
