import os
import shutil
import signal
import tempfile
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tradehub.db.embedded import EmbeddedCluster
from tradehub.service import EmbeddedPostgresService

from .faults import crash
from .support import blocking_query, make_pool


def _cluster(test, name="pgdata"):
    folder = Path(tempfile.mkdtemp(prefix="tradehub-embedded-"))
    cluster = EmbeddedCluster(folder / name)
    test.addCleanup(shutil.rmtree, folder, True)
    test.addCleanup(cluster.stop)
    return cluster


def _logged(test, message):
    """A Deferred that fires when C{message} is logged."""
    seen = Deferred()

    def observe(event):
        if formatEvent(event) == message and not seen.called:
            seen.callback(None)

    globalLogPublisher.addObserver(observe)
    test.addCleanup(globalLogPublisher.removeObserver, observe)
    return seen


class EmbeddedClusterTests(TestCase):
    async def test_started_stopped_and_restarted_with_data_intact(self):
        cluster = _cluster(self)
        self.assertFalse(cluster.initialised)
        await deferToThread(cluster.start)
        self.assertTrue(cluster.is_running())
        dsn = cluster.dsn()
        await deferToThread(blocking_query, dsn, "CREATE TABLE kept (v numeric)")
        await deferToThread(blocking_query, dsn, "INSERT INTO kept VALUES (1.000000001)")
        await deferToThread(cluster.stop)
        self.assertFalse(cluster.is_running())
        self.assertFalse((cluster.pgdata / "postmaster.pid").exists())
        await deferToThread(cluster.start)
        rows = await deferToThread(blocking_query, dsn, "SELECT v::text FROM kept")
        self.assertEqual(rows, [("1.000000001",)])

    async def test_a_crashed_server_restarts_at_once_whatever_its_lock_files_say(self):
        cluster = _cluster(self)
        await deferToThread(cluster.start)
        await deferToThread(crash, cluster)
        # The dead postmaster may linger as a zombie, which PostgreSQL's own
        # lock check takes for a live server.
        self.assertTrue(await deferToThread(cluster.restart))
        self.assertEqual(await deferToThread(blocking_query, cluster.dsn(), "SELECT 1"), [(1,)])

    async def test_start_adopts_a_cluster_that_already_runs(self):
        cluster = _cluster(self)
        self.assertTrue(await deferToThread(cluster.start))
        pid = (cluster.pgdata / "postmaster.pid").read_text().split()[0]
        self.assertFalse(await deferToThread(EmbeddedCluster(cluster.pgdata).start))
        self.assertEqual((cluster.pgdata / "postmaster.pid").read_text().split()[0], pid)

    async def test_pool_recovers_after_postgres_restarts(self):
        cluster = _cluster(self)
        await deferToThread(cluster.start)
        pool = make_pool(cluster.dsn(), size_min=2, size_max=2, retry_budget=10, retry_backoff=0.1)
        await pool.start()
        self.addCleanup(pool.close)
        self.assertEqual(await pool.query("SELECT 1"), [(1,)])
        await deferToThread(cluster.stop)
        await deferToThread(cluster.start)
        self.assertEqual(await pool.query("SELECT 2"), [(2,)])

    async def test_work_started_while_postgres_is_down_waits_for_it_to_come_back(self):
        cluster = _cluster(self)
        await deferToThread(cluster.start)
        pool = make_pool(cluster.dsn(), size_min=1, size_max=2, retry_budget=10, retry_backoff=0.1)
        await pool.start()
        self.addCleanup(pool.close)
        await deferToThread(cluster.stop)
        pending = ensureDeferred(pool.query("SELECT 3"))
        await deferToThread(cluster.start)
        self.assertEqual(await pending, [(3,)])


class EmbeddedPostgresServiceTests(TestCase):
    async def test_a_cluster_running_before_the_service_started_runs_after_it_stopped(self):
        cluster = _cluster(self)
        await deferToThread(cluster.start)
        pid = (cluster.pgdata / "postmaster.pid").read_text().split()[0]
        service = EmbeddedPostgresService(EmbeddedCluster(cluster.pgdata), reactor)
        await service.startService()
        self.assertTrue(service.adopted)
        await maybeDeferred(service.stopService)
        self.assertTrue(cluster.is_running())
        self.assertEqual((cluster.pgdata / "postmaster.pid").read_text().split()[0], pid)

    async def test_a_killed_postmaster_is_restarted_and_the_pool_recovers(self):
        cluster = _cluster(self)
        service = EmbeddedPostgresService(cluster, reactor)
        await service.startService()
        self.addCleanup(service.stopService)
        # Retries enough to outlast a restart (a few seconds), not a daemon that never restarts.
        pool = make_pool(cluster.dsn(), size_min=2, size_max=2, retry_budget=15, retry_backoff=0.1)
        await pool.start()
        self.addCleanup(pool.close)
        self.assertEqual(await pool.query("SELECT 1"), [(1,)])
        back = _logged(self, "embedded PostgreSQL is back")
        killed = int((cluster.pgdata / "postmaster.pid").read_text().split()[0])
        os.kill(killed, signal.SIGKILL)
        # Until they notice, the dead postmaster's backends may still answer: wait for the new one.
        await back
        self.assertEqual(await pool.query("SELECT 2"), [(2,)])
        self.assertNotEqual(int((cluster.pgdata / "postmaster.pid").read_text().split()[0]), killed)
        self.assertFalse(service.adopted, "the daemon restarted it, so it stops it")


class SocketPathTests(SynchronousTestCase):
    def test_long_data_folder_gets_a_short_socket_folder(self):
        cluster = EmbeddedCluster(Path("/tmp") / ("deep" * 30) / "pgdata")
        self.assertLess(len(str(cluster.socket_dir)), 60)
        self.assertNotEqual(cluster.socket_dir, cluster.pgdata)

    def test_short_data_folder_holds_its_own_socket(self):
        cluster = EmbeddedCluster(Path("/tmp/th/pgdata"))
        self.assertEqual(cluster.socket_dir, cluster.pgdata)
