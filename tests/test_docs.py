from twisted.trial.unittest import SynchronousTestCase

from tradehub.protocol import doc


class ProtocolDocumentTests(SynchronousTestCase):
    def test_committed_document_is_what_the_generator_writes(self):
        self.assertTrue(doc.OUTPUT.exists(), "docs/protocol.md is missing: run python -m tradehub.protocol.doc")
        self.assertEqual(
            doc.OUTPUT.read_text(),
            doc.render(),
            "docs/protocol.md is out of date: run python -m tradehub.protocol.doc",
        )

    def test_document_covers_every_error_and_message_type(self):
        text = doc.render()
        for name in ("BAD_FRAME", "FRAME_TOO_LARGE", "SHUTDOWN_ACK", "SUBSCRIBE", "PERMISSION_DENIED"):
            self.assertIn(f"| {name} |", text)
        self.assertIn("## Permissions", text)
        self.assertIn("HELLO from an ML module", text)
