"""
The package tree is the flow: each layer imports only what lies below it.
Checked in a fresh interpreter, so what one test imported cannot hide what
another module pulls in.
"""

import json
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase


def imported_after(*modules):
    """The tradehub, database-driver and Twisted modules loaded by importing C{modules} in a new process."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(json.loads(output))


class LayerTests(SynchronousTestCase):
    def test_schema_imports_nothing_else_of_tradehub(self):
        loaded = imported_after("tradehub.schema")
        others = sorted(m for m in loaded if m.startswith("tradehub.") and not m.startswith("tradehub.schema"))
        self.assertEqual(others, [])
        self.assertIn("tradehub.schema.tables", loaded)

    def test_wire_package_knows_bytes_only(self):
        loaded = imported_after(
            "tradehub.protocol",
            "tradehub.protocol.tables",
            "tradehub.protocol.messages",
            "tradehub.protocol.framing",
            "tradehub.protocol.permissions",
        )
        forbidden = (
            "tradehub.errors",
            "tradehub.alpaca",
            "tradehub.config",
            "psycopg2",
            "txpostgres",
            "twisted",
            "tradehub.server",
            "tradehub.db",
            "tradehub.controllers",
            "tradehub.repositories",
        )
        self.assertEqual(sorted(m for m in loaded if m.startswith(forbidden)), [])

    def test_repositories_and_controllers_never_import_the_wire(self):
        loaded = imported_after("tradehub.repositories.table", "tradehub.controllers", "tradehub.alpaca.sync")
        self.assertEqual(sorted(m for m in loaded if m.startswith(("tradehub.protocol", "tradehub.server"))), [])

    def test_the_database_layer_knows_nothing_above_it(self):
        loaded = imported_after(
            "tradehub.db.pool", "tradehub.db.failures", "tradehub.db.migrations", "tradehub.db.listener"
        )
        above = (
            "tradehub.protocol",
            "tradehub.server",
            "tradehub.controllers",
            "tradehub.repositories",
            "tradehub.changes",
        )
        self.assertEqual(sorted(m for m in loaded if m.startswith(above)), [])

    def test_the_change_feed_knows_no_session(self):
        """Subscriptions reach their session only through the Outlet protocol they declare."""
        loaded = imported_after("tradehub.changes.feed", "tradehub.changes.subscription")
        self.assertEqual(sorted(m for m in loaded if m.startswith("tradehub.server")), [])

    def test_the_daemon_never_loads_the_generators(self):
        loaded = imported_after("tap")
        self.assertEqual(sorted(m for m in loaded if m.startswith("tradehub.codegen")), [])

    def test_the_server_and_the_database_are_handed_their_metrics(self):
        """They count into the object they are given; only the wiring and the ops package know what it is."""
        loaded = imported_after("tradehub.server.hub", "tradehub.server.routes", "tradehub.db.pool")
        self.assertEqual(sorted(m for m in loaded if m.startswith(("tradehub.ops", "prometheus_client"))), [])
