import os

from twisted.internet.testing import MemoryReactor
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

import tap
from tradehub.config import SETTINGS

TOKENS = {"TRADEHUB_FRONTEND_TOKEN": "f-secret", "TRADEHUB_ML_TOKEN": "m-secret"}


class OptionsTests(SynchronousTestCase):
    def setUp(self):
        self.environ = dict(TOKENS)
        self.patch(os, "environ", self.environ)
        self.reactor = MemoryReactor()

    def test_help_lists_every_option_with_its_default(self):
        help_text = str(tap.Options())
        for setting in SETTINGS:
            if setting.option:
                self.assertIn(f"--{setting.option}=", help_text)
        flat = " ".join(help_text.split())
        self.assertIn("default tcp:7001:interface=127.0.0.1", flat)
        self.assertIn("--migrate-only", help_text)

    def test_given_options_become_overrides(self):
        options = tap.Options(self.reactor)
        options.parseOptions(["--db-pool-max", "12", "--log-format", "json"])
        self.assertEqual(options.overrides(), {"TRADEHUB_DB_POOL_MAX": "12", "TRADEHUB_LOG_FORMAT": "json"})

    def test_parsing_validates_once_into_settings(self):
        options = tap.Options(self.reactor)
        options.parseOptions(["--db-pool-max", "12"])
        self.assertEqual(options.settings.db_pool_max, 12)
        self.assertIs(options.reactor, self.reactor)

    def test_post_options_raises_usage_error_for_a_bad_setting(self):
        options = tap.Options(self.reactor)
        options["frontend-endpoint"] = "tcp:seventy"
        with self.assertRaises(usage.UsageError) as caught:
            options.postOptions()
        self.assertTrue(
            str(caught.exception).startswith("configuration error: TRADEHUB_FRONTEND_ENDPOINT: "), caught.exception
        )

    def test_a_bad_setting_exits_with_one_line(self):
        """Not twistd's usage text and message: the one line, alone, on stderr."""
        with self.assertRaises(SystemExit) as caught:
            tap.Options(self.reactor).parseOptions(["--db-pool-min", "9", "--db-pool-max", "3"])
        self.assertEqual(
            caught.exception.code,
            "tradehub: configuration error: TRADEHUB_DB_POOL_MIN: 9 is above TRADEHUB_DB_POOL_MAX (3)",
        )

    def test_a_setting_from_the_environment_exits_the_same_way(self):
        self.environ["TRADEHUB_ML_TOKEN"] = ""
        with self.assertRaises(SystemExit) as caught:
            tap.Options(self.reactor).parseOptions([])
        self.assertEqual(caught.exception.code, "tradehub: configuration error: TRADEHUB_ML_TOKEN: must be set to a non-empty secret")

    def test_a_bad_command_line_is_left_to_twistd(self):
        with self.assertRaises(usage.UsageError) as caught:
            tap.Options(self.reactor).parseOptions(["--no-such-option"])
        self.assertNotIsInstance(caught.exception, tap.BadConfiguration)
