"""
Real PostgreSQL for the tests: one throwaway embedded cluster per test run
(or the server named by TRADEHUB_TEST_DATABASE_URL), a template database
with the migrations applied, and a fresh database cloned from it per test.
"""

import atexit
import itertools
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import psycopg2
from psycopg2 import sql
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import deferToThread

from tradehub.db.embedded import EmbeddedCluster
from tradehub.db.migrations import migrate
from tradehub.db.pool import Pool

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schema"
TWISTD = str(Path(sys.executable).parent / "twistd")
_names = itertools.count(1)


class _Server:
    """The run's PostgreSQL server: started on first use, stopped at exit."""

    def __init__(self):
        self.admin_dsn = None
        self.template = f"tradehub_template_{os.getpid()}"
        self._template_ready = None
        self._started = None

    def start(self):
        """Blocking: start or locate the server once."""
        if self.admin_dsn is not None:
            return
        url = os.environ.get("TRADEHUB_TEST_DATABASE_URL")
        if url:
            self.admin_dsn = url
            atexit.register(self._drop_template)
            return
        folder = Path(tempfile.mkdtemp(prefix="tradehub-test-"))
        cluster = EmbeddedCluster(folder / "pgdata")
        cluster.start()
        atexit.register(_stop_and_remove, cluster, folder)
        self.admin_dsn = cluster.dsn()

    def dsn(self, dbname):
        return psycopg2.extensions.make_dsn(self.admin_dsn, dbname=dbname)

    def execute(self, statement, *params):
        """Blocking: one autocommit statement as the administrator."""
        return blocking_query(self.admin_dsn, statement, *params)

    async def ensure_template(self):
        if self._template_ready is None:
            self._template_ready = ensureDeferred(self._build_template())
        await self._template_ready

    async def _build_template(self):
        await deferToThread(self.start)
        await deferToThread(self.execute, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.template)))
        pool = make_pool(self.dsn(self.template), size_min=1, size_max=1)
        await pool.start()
        try:
            await migrate(pool, SCHEMA)
        finally:
            pool.close()

    def _drop_template(self):
        self.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.template)))


def _stop_and_remove(cluster, folder):
    cluster.stop()
    shutil.rmtree(folder, ignore_errors=True)


server = _Server()


async def fresh_database(test, migrated=True):
    """
    A new database for one test, dropped when the test ends: a copy of the
    migrated template, or an empty one when C{migrated} is false. Returns its DSN.
    """
    if migrated:
        await server.ensure_template()
    else:
        await deferToThread(server.start)
    name = f"tradehub_test_{os.getpid()}_{next(_names)}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if migrated:
        create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(server.template))
    await deferToThread(server.execute, create)
    test.addCleanup(
        deferToThread,
        server.execute,
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)),
    )
    return server.dsn(name)


def make_pool(dsn, clock=None, fds=None, **settings):
    """
    A pool with test-friendly defaults; keyword arguments override them.
    Its connections run on C{fds} (the reactor unless given), its timers on
    C{clock} (the reactor unless given).
    """
    options = dict(
        size_min=1,
        size_max=4,
        per_client=4,
        idle_timeout=60,
        retry_budget=2,
        retry_backoff=0.05,
        connect_timeout=5,
        statement_timeout=5,
    )
    options.update(settings)
    return Pool(dsn, reactor=fds or reactor, clock=clock or reactor, **options)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def blocking_query(dsn, statement, *params):
    """Blocking: run one statement on a direct psycopg2 connection (autocommit)."""
    connection = psycopg2.connect(dsn)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(statement, params or None)
            return cursor.fetchall() if cursor.description else None
    finally:
        connection.close()
