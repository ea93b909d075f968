"""
Schema migrations: numbered SQL files applied in order, each in its own
transaction, recorded in C{schema_migrations}.

Every migration transaction first takes one transaction-scoped advisory
lock, so two daemons starting at once apply each file exactly once.
"""

import hashlib
import re
from pathlib import Path

import attrs
from twisted.logger import Logger

log = Logger()

# An arbitrary constant naming "tradehub schema migrations" among advisory locks.
ADVISORY_LOCK_KEY = 0x7472616465687562

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    sha256 text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """The schema on disk and the schema in the database disagree."""


@attrs.frozen
class Migration:
    version: int
    name: str
    sql: str = attrs.field(repr=False)

    @property
    def sha256(self):
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(folder):
    """The migrations in C{folder}, in version order."""
    migrations = []
    for path in sorted(Path(folder).glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        migrations.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version in {folder}")
    return migrations


async def _lock(cursor):
    await cursor.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
    await cursor.execute(_CREATE_TABLE)


async def _applied(cursor):
    await _lock(cursor)
    await cursor.execute("SELECT version, name, sha256 FROM schema_migrations ORDER BY version")
    return {version: (name, sha) for version, name, sha in cursor.fetchall()}


async def _apply(cursor, migration):
    await _lock(cursor)
    await cursor.execute("SELECT sha256 FROM schema_migrations WHERE version = %s", (migration.version,))
    row = cursor.fetchone()
    if row is not None:
        _check_checksum(migration, row[0])
        return False
    # A migration may scan or rewrite a large table: the pool's statement timeout is for requests, not for it.
    await cursor.execute("SET LOCAL statement_timeout = 0")
    await cursor.execute(migration.sql)
    await cursor.execute(
        "INSERT INTO schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
        (migration.version, migration.name, migration.sha256),
    )
    return True


def _check_checksum(migration, recorded):
    if recorded != migration.sha256:
        raise MigrationError(
            f"migration {migration.version:04d}_{migration.name}.sql was changed after it was applied "
            f"(recorded sha256 {recorded[:12]}…, file {migration.sha256[:12]}…); add a new migration instead"
        )


async def migrate(pool, folder):
    """Apply every pending migration in C{folder}; return the versions applied now."""
    migrations = discover(folder)
    applied = await pool.transaction(_applied)
    known = {m.version for m in migrations}
    unknown = sorted(set(applied) - known)
    if unknown:
        raise MigrationError(
            f"the database has migration {unknown[0]:04d} which {folder} does not: is this tradehub too old?"
        )
    newly = []
    for migration in migrations:
        if migration.version in applied:
            _check_checksum(migration, applied[migration.version][1])
            continue
        if await pool.transaction(_apply, migration):
            log.info("applied migration {version:04d}_{name}", version=migration.version, name=migration.name)
            newly.append(migration.version)
    return newly


async def applied_versions(pool):
    """
    The versions recorded in the database, read without the advisory lock:
    for checking that the schema is current, never for migrating.
    """
    rows = await pool.query("SELECT version FROM schema_migrations ORDER BY version")
    return [version for (version,) in rows]
