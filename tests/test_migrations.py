from pathlib import Path

import psycopg2.errors
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.trial.unittest import TestCase

from tradehub.db.migrations import MigrationError, discover, migrate

from .support import SCHEMA, blocking_query, fresh_database, make_pool


class MigrationTests(TestCase):
    async def pool_on_empty_database(self):
        self.dsn = await fresh_database(self, migrated=False)
        pool = make_pool(self.dsn)
        await pool.start()
        self.addCleanup(pool.close)
        return pool

    def folder(self, files):
        folder = Path(self.mktemp())
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)
        return folder

    async def test_applies_in_version_order_and_records_each(self):
        pool = await self.pool_on_empty_database()
        folder = self.folder(
            {
                "0002_add_column.sql": "ALTER TABLE things ADD COLUMN colour text;",
                "0001_create.sql": "CREATE TABLE things (id int PRIMARY KEY);",
                "0003_fill.sql": "INSERT INTO things VALUES (1, 'red');",
            }
        )
        self.assertEqual(await migrate(pool, folder), [1, 2, 3])
        rows = await pool.query(
            "SELECT version, name, length(sha256), applied_at IS NOT NULL FROM schema_migrations ORDER BY version"
        )
        self.assertEqual(rows, [(1, "create", 64, True), (2, "add_column", 64, True), (3, "fill", 64, True)])
        self.assertEqual(await pool.query("SELECT id, colour FROM things"), [(1, "red")])

    async def test_second_run_applies_nothing(self):
        pool = await self.pool_on_empty_database()
        folder = self.folder({"0001_create.sql": "CREATE TABLE things (id int);"})
        self.assertEqual(await migrate(pool, folder), [1])
        self.assertEqual(await migrate(pool, folder), [])
        (folder / "0002_more.sql").write_text("CREATE TABLE more_things (id int);")
        self.assertEqual(await migrate(pool, folder), [2])

    async def test_changed_applied_file_stops_with_clear_error(self):
        pool = await self.pool_on_empty_database()
        folder = self.folder({"0001_create.sql": "CREATE TABLE things (id int);"})
        await migrate(pool, folder)
        (folder / "0001_create.sql").write_text("CREATE TABLE things (id bigint);")
        (folder / "0002_more.sql").write_text("CREATE TABLE more_things (id int);")
        with self.assertRaises(MigrationError) as caught:
            await migrate(pool, folder)
        self.assertIn("0001_create.sql was changed after it was applied", str(caught.exception))
        self.assertEqual(await pool.query("SELECT to_regclass('more_things') IS NULL"), [(True,)])

    async def test_failing_migration_leaves_nothing_behind(self):
        pool = await self.pool_on_empty_database()
        folder = self.folder(
            {
                "0001_create.sql": "CREATE TABLE things (id int);",
                "0002_broken.sql": "CREATE TABLE half (id int); SELECT no_such_function();",
            }
        )
        with self.assertRaises(psycopg2.errors.UndefinedFunction):
            await migrate(pool, folder)
        self.assertEqual(await pool.query("SELECT version FROM schema_migrations"), [(1,)])
        self.assertEqual(await pool.query("SELECT to_regclass('half') IS NULL"), [(True,)])

    async def test_a_migration_longer_than_the_statement_timeout_is_applied(self):
        """Requests are bounded by the pool's statement timeout; a migration scanning a large table is not."""
        self.dsn = await fresh_database(self, migrated=False)
        pool = make_pool(self.dsn, statement_timeout=0.3)
        await pool.start()
        self.addCleanup(pool.close)
        folder = self.folder({"0001_slow.sql": "SELECT pg_sleep(0.8); CREATE TABLE things (id int);"})
        self.assertEqual(await migrate(pool, folder), [1])
        self.assertEqual(await pool.query("SELECT to_regclass('things') IS NOT NULL"), [(True,)])

    async def test_two_concurrent_appliers_apply_each_file_once(self):
        pool = await self.pool_on_empty_database()
        other = make_pool(self.dsn)
        await other.start()
        self.addCleanup(other.close)
        # Not idempotent on purpose: applying it twice would fail.
        folder = self.folder(
            {
                "0001_create.sql": "CREATE TABLE things (id int); SELECT pg_sleep(0.2);",
                "0002_fill.sql": "INSERT INTO things VALUES (1);",
            }
        )
        first, second = await gatherResults(
            [ensureDeferred(migrate(pool, folder)), ensureDeferred(migrate(other, folder))]
        )
        self.assertEqual(sorted(first + second), [1, 2])
        self.assertEqual(await pool.query("SELECT count(*) FROM things"), [(1,)])

    async def test_database_newer_than_code_refuses(self):
        pool = await self.pool_on_empty_database()
        folder = self.folder({"0001_create.sql": "CREATE TABLE things (id int);"})
        await migrate(pool, folder)
        await pool.query("INSERT INTO schema_migrations VALUES (9, 'future', 'x')")
        with self.assertRaises(MigrationError) as caught:
            await migrate(pool, folder)
        self.assertIn("0009", str(caught.exception))

    def test_badly_named_file_rejected(self):
        folder = self.folder({"1_oops.sql": "SELECT 1;"})
        self.assertRaises(MigrationError, discover, folder)

    def test_project_schema_files_are_well_formed(self):
        versions = [m.version for m in discover(SCHEMA)]
        self.assertEqual(versions, list(range(1, len(versions) + 1)))

    async def test_template_database_has_every_migration(self):
        dsn = await fresh_database(self)
        rows = blocking_query(dsn, "SELECT version FROM schema_migrations ORDER BY version")
        self.assertEqual([r[0] for r in rows], [m.version for m in discover(SCHEMA)])
