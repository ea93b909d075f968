import shutil
import tempfile
from pathlib import Path

from twisted.internet.defer import ensureDeferred, maybeDeferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tradehub.db.embedded import EmbeddedCluster
from tradehub.service import EmbeddedPostgresService

from .support import blocking_query, make_pool


def _cluster(test, name="pgdata"):
    folder = Path(tempfile.mkdtemp(prefix="tradehub-embedded-"))
    cluster = EmbeddedCluster(folder / name)
    test.addCleanup(shutil.rmtree, folder, True)
    test.addCleanup(cluster.stop)
    return cluster


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

    async def test_start_adopts_a_cluster_that_already_runs(self):
        cluster = _cluster(self)
        self.assertTrue(await deferToThread(cluster.start))
        pid = (cluster.pgdata / "postmaster.pid").read_text().split()[0]
        self.assertFalse(await deferToThread(EmbeddedCluster(cluster.pgdata).start))
        self.assertEqual((cluster.pgdata / "postmaster.pid").read_text().split()[0], pid)

    async def test_pool_recovers_after_postgres_restarts(self):
        cluster = _cluster(self)
        await deferToThread(cluster.start)
        pool = make_pool(cluster.dsn(), size_min=2, size_max=2, retry_attempts=5, retry_backoff=0.1)
        await pool.start()
        self.addCleanup(pool.close)
        self.assertEqual(await pool.query("SELECT 1"), [(1,)])
        await deferToThread(cluster.stop)
        await deferToThread(cluster.start)
        self.assertEqual(await pool.query("SELECT 2"), [(2,)])

    async def test_work_started_while_postgres_is_down_waits_for_it_to_come_back(self):
        cluster = _cluster(self)
        await deferToThread(cluster.start)
        pool = make_pool(cluster.dsn(), size_min=1, size_max=2, retry_attempts=6, retry_backoff=0.1)
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
        service = EmbeddedPostgresService(EmbeddedCluster(cluster.pgdata))
        await service.startService()
        self.assertTrue(service.adopted)
        await maybeDeferred(service.stopService)
        self.assertTrue(cluster.is_running())
        self.assertEqual((cluster.pgdata / "postmaster.pid").read_text().split()[0], pid)


class SocketPathTests(SynchronousTestCase):
    def test_long_data_folder_gets_a_short_socket_folder(self):
        cluster = EmbeddedCluster(Path("/tmp") / ("deep" * 30) / "pgdata")
        self.assertLess(len(str(cluster.socket_dir)), 60)
        self.assertNotEqual(cluster.socket_dir, cluster.pgdata)

    def test_short_data_folder_holds_its_own_socket(self):
        cluster = EmbeddedCluster(Path("/tmp/th/pgdata"))
        self.assertEqual(cluster.socket_dir, cluster.pgdata)
