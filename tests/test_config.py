import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import attrs
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from tradehub.config import (
    ENV_EXAMPLE,
    ROOT,
    SETTINGS,
    ConfigError,
    Settings,
    is_local_endpoint,
    load_settings,
    redact_url,
)

TOKENS = {"TRADEHUB_FRONTEND_TOKEN": "f-secret", "TRADEHUB_ML_TOKEN": "m-secret"}


class LoadSettingsTests(SynchronousTestCase):
    def setUp(self):
        self.environ = dict(TOKENS)
        self.patch(os, "environ", self.environ)
        self.folder = Path(self.mktemp())
        self.folder.mkdir()
        self.env_file = self.folder / ".env"

    def load(self, overrides=None):
        return load_settings(MemoryReactor(), env_file=self.env_file, overrides=overrides)

    def assertRejected(self, key, fragment, overrides=None):
        with self.assertRaises(ConfigError) as caught:
            self.load(overrides)
        self.assertEqual(caught.exception.key, key)
        self.assertIn(fragment, str(caught.exception))
        self.assertTrue(str(caught.exception).startswith(f"{key}: "))
        self.assertNotIn("\n", str(caught.exception))

    def test_defaults(self):
        settings = self.load()
        self.assertEqual(settings.database_url, "")
        self.assertEqual(settings.frontend_endpoint, "tcp:7001:interface=127.0.0.1")
        self.assertEqual(settings.ml_endpoint, "tcp:7002:interface=127.0.0.1")
        self.assertEqual(settings.ops_endpoint, "tcp:7003:interface=127.0.0.1")
        self.assertEqual(settings.data_dir, Path("./var").resolve())
        self.assertEqual(settings.pgdata, Path("./var").resolve() / "pgdata")
        self.assertEqual((settings.db_pool_min, settings.db_pool_max), (2, 10))
        self.assertEqual(settings.max_frame, 1048576)
        self.assertEqual(settings.log_format, "text")

    def test_option_beats_environment_beats_env_file_beats_default(self):
        self.env_file.write_text("TRADEHUB_DB_POOL_MAX=7\nTRADEHUB_DB_POOL_MIN=3\nTRADEHUB_HEARTBEAT_MS=900\n")
        self.environ["TRADEHUB_DB_POOL_MAX"] = "8"
        self.environ["TRADEHUB_DB_POOL_MIN"] = "4"
        settings = self.load({"TRADEHUB_DB_POOL_MAX": "9"})
        self.assertEqual(settings.db_pool_max, 9)
        self.assertEqual(settings.db_pool_min, 4)
        self.assertEqual(settings.heartbeat_ms, 900)
        self.assertEqual(settings.db_idle_timeout, 60.0)

    def test_unparsable_database_url(self):
        self.assertRejected("DATABASE_URL", "postgresql:// URL", {"DATABASE_URL": "mysql://x@y/z"})
        self.assertRejected("DATABASE_URL", "not a valid libpq URL", {"DATABASE_URL": "postgresql://h/d?bogus=1"})

    def test_unparsable_endpoint(self):
        self.assertRejected(
            "TRADEHUB_ML_ENDPOINT", "not a valid server endpoint", {"TRADEHUB_ML_ENDPOINT": "tcp:notaport"}
        )
        self.assertRejected(
            "TRADEHUB_FRONTEND_ENDPOINT",
            "not a valid server endpoint",
            {"TRADEHUB_FRONTEND_ENDPOINT": "carrier-pigeon:1"},
        )

    def test_ops_endpoint_is_checked_like_the_others_and_may_be_empty(self):
        self.assertRejected(
            "TRADEHUB_OPS_ENDPOINT", "not a valid server endpoint", {"TRADEHUB_OPS_ENDPOINT": "tcp:notaport"}
        )
        self.assertEqual(self.load({"TRADEHUB_OPS_ENDPOINT": ""}).ops_endpoint, "")

    def test_endpoints_need_no_global_reactor(self):
        """Loading validates endpoint strings against the reactor it is given, never importing the global one."""
        script = (
            "import sys\n"
            "from twisted.internet.testing import MemoryReactor\n"
            "from tradehub.config import load_settings\n"
            "load_settings(MemoryReactor(), overrides={'TRADEHUB_FRONTEND_ENDPOINT': 'unix:/tmp/hub.sock'})\n"
            "print('twisted.internet.reactor' in sys.modules)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            env=self.environ | {"PYTHONPATH": str(ROOT)},
            cwd=self.folder,
            capture_output=True,
            text=True,
            check=True,
        )
        self.assertEqual(result.stdout, "False\n")

    def test_min_above_max(self):
        self.assertRejected(
            "TRADEHUB_DB_POOL_MIN",
            "above TRADEHUB_DB_POOL_MAX",
            {"TRADEHUB_DB_POOL_MIN": "5", "TRADEHUB_DB_POOL_MAX": "4"},
        )

    def test_negative_and_non_numbers(self):
        self.assertRejected("TRADEHUB_LISTEN_BACKLOG", "at least 1", {"TRADEHUB_LISTEN_BACKLOG": "0"})
        self.assertRejected("TRADEHUB_DB_STATEMENT_TIMEOUT", "positive", {"TRADEHUB_DB_STATEMENT_TIMEOUT": "0"})
        self.assertRejected("TRADEHUB_DB_IDLE_TIMEOUT", "positive", {"TRADEHUB_DB_IDLE_TIMEOUT": "-3"})
        self.assertRejected("TRADEHUB_HEARTBEAT_MS", "whole number", {"TRADEHUB_HEARTBEAT_MS": "fast"})
        self.assertRejected("TRADEHUB_SHUTDOWN_DEADLINE", "number of seconds", {"TRADEHUB_SHUTDOWN_DEADLINE": "soon"})
        self.assertRejected("TRADEHUB_MAX_FRAME", "at least 64", {"TRADEHUB_MAX_FRAME": "10"})

    def test_unknown_log_format(self):
        self.assertRejected("TRADEHUB_LOG_FORMAT", "text, json", {"TRADEHUB_LOG_FORMAT": "xml"})

    def test_empty_token(self):
        self.environ["TRADEHUB_ML_TOKEN"] = ""
        self.assertRejected("TRADEHUB_ML_TOKEN", "non-empty")

    def test_example_token_refused_beyond_loopback(self):
        self.environ["TRADEHUB_FRONTEND_TOKEN"] = "change-me-frontend"
        self.assertEqual(self.load().frontend_token, "change-me-frontend")
        self.assertRejected("TRADEHUB_FRONTEND_TOKEN", ".env.example value", {"TRADEHUB_FRONTEND_ENDPOINT": "tcp:7001"})

    def test_tokens_not_in_repr(self):
        self.assertNotIn("f-secret", repr(self.load()))

    def test_no_secret_in_repr(self):
        secrets = {
            "DATABASE_URL": "postgresql://trader:db-password@db/hub",
            "TRADEHUB_FRONTEND_TOKEN": "frontend-token",
            "TRADEHUB_ML_TOKEN": "ml-token",
            "APCA_API_KEY_ID": "alpaca-key-id",
            "APCA_API_SECRET_KEY": "alpaca-secret-key",
        }
        self.assertEqual(set(secrets), {s.key for s in SETTINGS if s.secret})
        text = repr(self.load(secrets))
        self.assertIn("db_pool_min=2", text)
        for value in secrets.values():
            self.assertNotIn(value, text)


class SettingsClassTests(SynchronousTestCase):
    def test_one_field_per_setting_in_table_order(self):
        self.assertEqual([f.name for f in attrs.fields(Settings)], [s.attribute for s in SETTINGS])

    def test_annotations_are_the_parsers_return_types(self):
        expected = [(s.attribute, typing.get_type_hints(s.parse)["return"]) for s in SETTINGS]
        block = "\n".join(f"    {name}: {kind.__name__}" for name, kind in expected)
        self.assertEqual(
            list(typing.get_type_hints(Settings).items()), expected, f"Settings' annotations must read:\n{block}"
        )


class EndpointLocalityTests(SynchronousTestCase):
    def test_loopback_and_unix_are_local(self):
        for description in (
            "tcp:7001:interface=127.0.0.1",
            "tcp:7001:interface=127.0.0.2",
            "tcp6:7001:interface=\\:\\:1",
            "ssl:7001:interface=localhost:privateKey=k.pem",
            "unix:/tmp/hub.sock",
        ):
            self.assertTrue(is_local_endpoint(description), description)

    def test_all_interfaces_and_public_addresses_are_not_local(self):
        for description in ("tcp:7001", "tcp:7001:interface=0.0.0.0", "tcp:7001:interface=10.1.2.3", "tcp6:7001"):
            self.assertFalse(is_local_endpoint(description), description)


class EnvExampleTests(SynchronousTestCase):
    def test_every_key_listed_with_a_comment(self):
        lines = ENV_EXAMPLE.read_text().splitlines()
        for setting in SETTINGS:
            matches = [i for i, line in enumerate(lines) if line.startswith(f"{setting.key}=")]
            self.assertEqual(len(matches), 1, setting.key)
            self.assertTrue(lines[matches[0] - 1].startswith("# "), f"{setting.key} has no comment")

    def test_example_defaults_match_code_defaults(self):
        values = dict(
            line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"^[A-Z_]+=", line)
        )
        for setting in SETTINGS:
            if not setting.secret:
                self.assertEqual(values[setting.key], setting.default, setting.key)


class RedactionTests(SynchronousTestCase):
    def test_password_removed(self):
        self.assertEqual(
            redact_url("postgresql://trader:hunter2@db.local:5432/hub"), "postgresql://trader:***@db.local:5432/hub"
        )

    def test_url_without_password_unchanged(self):
        self.assertEqual(redact_url("postgresql://trader@db/hub"), "postgresql://trader@db/hub")
