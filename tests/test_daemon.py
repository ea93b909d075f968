import json
import os
import signal
import socket

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tradehub.client import BlockingClient
from tradehub.db.embedded import EmbeddedCluster
from tradehub.db.migrations import discover
from tradehub.db.supervisor import RESTART_ATTEMPTS
from tradehub.protocol.enums import Role, SQLTable

from .daemon import TOKENS, Daemon, postgres_pid, process_alive
from .support import SCHEMA, blocking_query, fresh_database


def _connects(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        return True


class EmbeddedDaemonTests(SynchronousTestCase):
    def test_starts_on_embedded_database_listens_and_stops_cleanly_on_sigterm(self):
        daemon = Daemon(self.mktemp()).start()
        self.addCleanup(daemon.kill)
        daemon.wait_for("ready: ")
        self.assertTrue(_connects(daemon.frontend_port))
        self.assertTrue(_connects(daemon.ml_port))
        pid = postgres_pid(daemon.pgdata)
        self.assertTrue(pid and process_alive(pid, grace=0))
        daemon.signal(signal.SIGTERM)
        self.assertEqual(daemon.wait(), 0)
        self.assertFalse(process_alive(pid), "postgres left running")
        self.assertIsNone(postgres_pid(daemon.pgdata))
        output = daemon.output()
        self.assertIn("applied migration 0001_wire_types", output)
        self.assertIn("Alpaca keys are not configured: the Alpaca sync and order submission are off", output)
        self.assertIn("alpaca off", output)
        self.assertIn("embedded PostgreSQL stopped", output)

    def test_startup_failure_exits_nonzero_and_stops_the_embedded_cluster(self):
        daemon = Daemon(self.mktemp())
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", daemon.ml_port))
        blocker.listen()
        self.addCleanup(blocker.close)
        daemon.start()
        self.addCleanup(daemon.kill)
        self.assertEqual(daemon.wait(), 1)
        output = daemon.output()
        self.assertIn(f"startup failed: cannot listen on tcp:{daemon.ml_port}", output)
        self.assertNotIn("ready: ", output)
        self.assertIn("embedded PostgreSQL stopped", output)
        self.assertIsNone(postgres_pid(daemon.pgdata))

    def test_a_cluster_that_cannot_be_restarted_stops_the_daemon_with_status_1(self):
        daemon = Daemon(self.mktemp()).start()
        self.addCleanup(daemon.kill)
        daemon.wait_for("ready: ")
        with open(daemon.pgdata / "postgresql.conf", "a") as settings:
            settings.write("shared_buffers = 'no size at all'\n")
        os.kill(postgres_pid(daemon.pgdata), signal.SIGKILL)
        self.assertEqual(daemon.wait(), 1)
        output = daemon.output()
        self.assertEqual(output.count("embedded PostgreSQL is down; restarting it (attempt "), RESTART_ATTEMPTS)
        self.assertIn("stopping: embedded PostgreSQL could not be restarted: pg_ctl start failed", output)
        self.assertNotIn("Traceback", output + daemon.errors())


class DataFolderTests(SynchronousTestCase):
    def test_a_second_daemon_on_the_same_data_folder_exits_1_and_leaves_the_first_serving(self):
        first = Daemon(self.mktemp()).start()
        self.addCleanup(first.kill)
        first.wait_for("ready: ")
        postgres = postgres_pid(first.pgdata)
        # The operator's mistake: a second daemon from the same configuration.
        same = ("TRADEHUB_DATA_DIR", "TRADEHUB_FRONTEND_ENDPOINT", "TRADEHUB_ML_ENDPOINT")
        second = Daemon(self.mktemp(), env={key: first.env[key] for key in same}).start()
        self.addCleanup(second.kill)
        self.assertEqual(second.wait(), 1)
        data = first.env["TRADEHUB_DATA_DIR"]
        lines = [line for line in second.output().splitlines() if data in line]
        self.assertEqual(len(lines), 1, second.output())
        self.assertIn(
            f"startup failed: data folder {data} is in use by another tradehub daemon (pid {first.process.pid})",
            lines[0],
        )
        self.assertNotIn("Traceback", second.output() + second.errors())
        self.assertEqual(postgres_pid(first.pgdata), postgres)
        self.assertTrue(process_alive(postgres, grace=0))
        with BlockingClient("127.0.0.1", first.ml_port, Role.ML, TOKENS["TRADEHUB_ML_TOKEN"]) as hub:
            self.assertEqual(hub.select(SQLTable.ACCOUNT, limit=1).rows, [])
        first.signal(signal.SIGTERM)
        self.assertEqual(first.wait(), 0)

    def test_the_cluster_of_a_killed_daemon_is_adopted_by_the_next_and_left_running(self):
        first = Daemon(self.mktemp()).start()
        self.addCleanup(EmbeddedCluster(first.pgdata).stop)
        self.addCleanup(first.kill)
        first.wait_for("ready: ")
        postgres = postgres_pid(first.pgdata)
        first.signal(signal.SIGKILL)
        first.wait()
        second = Daemon(self.mktemp(), env={"TRADEHUB_DATA_DIR": first.env["TRADEHUB_DATA_DIR"]}).start()
        self.addCleanup(second.kill)
        second.wait_for("ready: ")
        second.signal(signal.SIGTERM)
        self.assertEqual(second.wait(), 0)
        output = second.output()
        self.assertIn(f"embedded PostgreSQL already running in {first.pgdata}: adopting it", output)
        self.assertIn(f"leaving the adopted embedded PostgreSQL running in {first.pgdata}", output)
        self.assertEqual(postgres_pid(first.pgdata), postgres)
        self.assertTrue(process_alive(postgres, grace=0))


class BadConfigurationTests(SynchronousTestCase):
    def assertRefused(self, env, key):
        daemon = Daemon(self.mktemp(), env=env).start()
        self.addCleanup(daemon.kill)
        self.assertNotEqual(daemon.wait(), 0)
        errors = daemon.errors().strip().splitlines()
        self.assertEqual(len(errors), 1, errors)
        self.assertIn(f"configuration error: {key}: ", errors[0])
        self.assertNotIn("Traceback", daemon.output() + daemon.errors())
        self.assertFalse(daemon.pgdata.exists(), "nothing may start on a bad configuration")

    def test_pool_minimum_above_maximum(self):
        self.assertRefused({"TRADEHUB_DB_POOL_MIN": "9", "TRADEHUB_DB_POOL_MAX": "3"}, "TRADEHUB_DB_POOL_MIN")

    def test_unparsable_endpoint(self):
        self.assertRefused({"TRADEHUB_FRONTEND_ENDPOINT": "tcp:seventy"}, "TRADEHUB_FRONTEND_ENDPOINT")

    def test_empty_token(self):
        self.assertRefused({"TRADEHUB_ML_TOKEN": ""}, "TRADEHUB_ML_TOKEN")


class ExternalDatabaseDaemonTests(TestCase):
    async def test_migrate_only_applies_migrations_and_exits(self):
        dsn = await fresh_database(self, migrated=False)
        daemon = Daemon(self.mktemp(), env={"DATABASE_URL": _url(dsn)}, args=["--migrate-only"]).start()
        self.addCleanup(daemon.kill)
        self.assertEqual(await deferToThread(daemon.wait), 0)
        rows = await deferToThread(blocking_query, dsn, "SELECT version FROM schema_migrations ORDER BY version")
        self.assertEqual([r[0] for r in rows], [m.version for m in discover(SCHEMA)])
        self.assertNotIn("ready: ", daemon.output())
        self.assertFalse(daemon.pgdata.exists(), "an external database starts no embedded cluster")

    async def test_json_logs_name_components_and_hold_no_secrets(self):
        dsn = await fresh_database(self)
        password = "pw-that-must-not-leak"
        daemon = Daemon(self.mktemp(), env={"DATABASE_URL": _url(dsn, password), "TRADEHUB_LOG_FORMAT": "json"}).start()
        self.addCleanup(daemon.kill)
        await deferToThread(daemon.wait_for, "ready: ")
        daemon.signal(signal.SIGINT)
        self.assertEqual(await deferToThread(daemon.wait), 0)
        events = [json.loads(line) for line in daemon.output().splitlines() if line.strip()]
        ready = [e for e in events if e.get("log_format", "").startswith("ready: ")]
        self.assertEqual(len(ready), 1)
        self.assertEqual(ready[0]["log_namespace"], "tradehub.service.HubService")
        self.assertIn("postgresql://postgres:***@", ready[0]["message"])
        everything = daemon.output() + daemon.errors()
        for secret in (password, *TOKENS.values()):
            self.assertNotIn(secret, everything)


def _url(dsn, password=None):
    """A libpq URL for the test server's unix-socket DSN."""
    parts = dict(item.split("=", 1) for item in dsn.split())
    user = f"{parts['user']}:{password}" if password else parts["user"]
    return f"postgresql://{user}@/{parts['dbname']}?host={parts['host']}"
