import subprocess
from pathlib import Path

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tradehub.codegen import protocol_doc, schema_doc
from tradehub.protocol.enums import ErrorCode, MessageType
from tradehub.schema import TABLES

from .support import fresh_database


class ProtocolDocumentTests(SynchronousTestCase):
    def test_committed_document_is_what_the_generator_writes(self):
        self.assertTrue(
            protocol_doc.OUTPUT.exists(), "docs/protocol.md is missing: run python -m tradehub.codegen.protocol_doc"
        )
        self.assertEqual(
            protocol_doc.OUTPUT.read_text(),
            protocol_doc.render(),
            "docs/protocol.md is out of date: run python -m tradehub.codegen.protocol_doc",
        )

    def test_document_covers_every_error_and_message_type(self):
        text = protocol_doc.render()
        for name in ("BAD_FRAME", "FRAME_TOO_LARGE", "SHUTDOWN_ACK", "SUBSCRIBE", "PERMISSION_DENIED"):
            self.assertIn(f"| {name} |", text)
        self.assertIn("## Permissions", text)
        self.assertIn("HELLO from an ML module", text)
        for member in (*MessageType, *ErrorCode):
            self.assertIn(f"| {member.value} | {member.name} |", text)

    def test_push_subscriptions_are_documented_with_their_guarantees_and_an_example(self):
        text = protocol_doc.render()
        for heading in ("## Push subscriptions", "### SUBSCRIBE", "### EVENT", "### Cancel", "### Guarantees"):
            self.assertIn(f"\n{heading}\n", text)
        self.assertIn("SUBSCRIBE to ML_PREDICTION for AAPL", text)
        self.assertIn("bit 1 CANCEL", text)


class StandAloneTests(SynchronousTestCase):
    def test_no_document_of_the_project_points_outside_it(self):
        """A user who clones the project has only the project: nothing may send them to ../shared."""
        root = Path(__file__).resolve().parent.parent
        listed = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
        for name in listed.split():
            if name.endswith((".md", ".py", ".hpp", ".cpp")) and name != "tests/test_docs.py":
                text = (root / name).read_text(errors="replace")
                self.assertNotIn("shared/specs", text, name)
                self.assertNotIn("../shared", text, name)


class SchemaDocumentTests(TestCase):
    async def test_committed_schema_document_matches_the_migrated_catalog(self):
        dsn = await fresh_database(self)
        document = await deferToThread(schema_doc.render, dsn)
        self.assertEqual(
            schema_doc.OUTPUT.read_text(),
            document,
            "docs/schema.md is out of date: run python -m tradehub.codegen.schema_doc",
        )
        for spec in TABLES.values():
            self.assertIn(f"## {spec.sql_name}\n", document)
