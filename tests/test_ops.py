"""
The operations endpoint over HTTP: its resources on a real port on
127.0.0.1, and the real daemon's /healthz, /readyz and /metrics while
clients use it and while its database refuses connections.
"""

import json
import signal

import treq
from prometheus_client.parser import text_string_to_metric_families
from psycopg2 import sql
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from tradehub.client import BlockingClient
from tradehub.client.errors import PermissionDenied
from tradehub.ops.http import Ready, ops_site
from tradehub.ops.metrics import Metrics
from tradehub.ops.readiness import NotReady, Readiness
from tradehub.protocol.enums import Role, SQLTable

from . import rows
from .daemon import TOKENS, Daemon
from .support import fresh_database, server
from .test_daemon import _url


def http_client():
    """treq without kept-alive connections, so that nothing is left open after a test."""
    return HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))


async def get(url):
    """(status, content type, body) of a GET."""
    response = await http_client().get(url)
    body = await treq.content(response)
    return response.code, response.headers.getRawHeaders(b"content-type", [b""])[0], body


async def ready_soon(url, tries=100):
    """The 200 /readyz report, asked every 0.1s while it is 503 (a part on its way back), at most C{tries} times."""
    for _ in range(tries):
        code, _, body = await get(f"{url}/readyz")
        if code == 200:
            return json.loads(body)
        await deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"/readyz still {code} after {tries} tries: {body!r}")


def samples(text):
    """{(name, sorted labels): value} of a Prometheus text exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class SiteTests(TestCase):
    """The resources behind a real listening port on 127.0.0.1."""

    async def serve(self, checks):
        self.metrics = Metrics()
        site = ops_site(reactor, Readiness(reactor, 5, checks), self.metrics.registry)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    async def test_healthz_answers_without_checking_anything(self):
        async def never():
            raise AssertionError("/healthz ran a readiness check")

        url = await self.serve({"database": never})
        self.assertEqual(await get(f"{url}/healthz"), (200, b"text/plain; charset=utf-8", b"ok\n"))

    async def test_readyz_is_200_when_every_part_is_ready(self):
        async def answers():
            return "answers SELECT 1"

        url = await self.serve({"database": answers})
        code, content_type, body = await get(f"{url}/readyz")
        self.assertEqual((code, content_type), (200, b"application/json"))
        self.assertEqual(
            json.loads(body), {"ready": True, "parts": {"database": {"ready": True, "detail": "answers SELECT 1"}}}
        )

    async def test_readyz_is_503_naming_the_part_that_is_not_ready(self):
        async def answers():
            return "up"

        async def pending():
            raise NotReady("not applied: 0012")

        url = await self.serve({"listeners": answers, "migrations": pending})
        code, _, body = await get(f"{url}/readyz")
        self.assertEqual(code, 503)
        self.assertEqual(
            json.loads(body),
            {
                "ready": False,
                "parts": {
                    "listeners": {"ready": True, "detail": "up"},
                    "migrations": {"ready": False, "detail": "not applied: 0012"},
                },
            },
        )

    async def test_metrics_in_prometheus_text_format_from_the_hubs_own_registry(self):
        url = await self.serve({})
        self.metrics.requests.labels("TRADE", "INSERT", "OK").inc()
        code, content_type, body = await get(f"{url}/metrics")
        self.assertEqual(code, 200)
        self.assertTrue(content_type.startswith(b"text/plain; version="), content_type)
        exposed = samples(body.decode())
        self.assertEqual(
            exposed[("tradehub_requests_total", (("command", "INSERT"), ("outcome", "OK"), ("table", "TRADE")))], 1
        )
        self.assertEqual([name for name, _ in exposed if name.startswith(("python_", "process_"))], [])

    async def test_other_paths_are_not_found(self):
        url = await self.serve({})
        for path in ("/", "/health", "/ready"):
            self.assertEqual((await get(f"{url}{path}"))[0], 404, path)


class ReadyRequestTests(SynchronousTestCase):
    def test_a_probe_that_went_away_is_not_answered(self):
        clock = Clock()
        silence = Deferred()

        async def hangs():
            return await silence

        request = DummyRequest([b""])
        self.assertEqual(Ready(Readiness(clock, 1, {"database": hangs})).render_GET(request), NOT_DONE_YET)
        request.processingFailed(Failure(ConnectionDone()))
        clock.advance(1)
        self.assertEqual((request.written, request.finished), ([], 0))


class DaemonOpsTests(TestCase):
    timeout = 180

    async def test_health_readiness_and_metrics_of_the_real_daemon(self):
        dsn = await fresh_database(self)
        daemon = Daemon(self.mktemp(), env={"DATABASE_URL": _url(dsn)}).start()
        self.addCleanup(daemon.kill)
        await deferToThread(daemon.wait_for, "ready: ")
        self.assertIn(f"ops on tcp:{daemon.ops_port}:interface=127.0.0.1", daemon.output())
        ops = f"http://127.0.0.1:{daemon.ops_port}"

        self.assertEqual((await get(f"{ops}/healthz"))[0], 200)
        code, _, body = await get(f"{ops}/readyz")
        report = json.loads(body)
        self.assertEqual((code, report["ready"]), (200, True), report)
        self.assertEqual(sorted(report["parts"]), ["database", "listeners", "migrations"])
        self.assertTrue(all(part["ready"] for part in report["parts"].values()), report)

        # The client stays connected while /metrics is read, so that its session is counted.
        frontend = await deferToThread(
            BlockingClient, "127.0.0.1", daemon.frontend_port, Role.FRONTEND, TOKENS["TRADEHUB_FRONTEND_TOKEN"]
        )
        self.addCleanup(deferToThread, frontend.close)

        def requests():
            for seq in (1, 2, 3):
                frontend.insert(SQLTable.MARKET_TICK, [rows.tick(seq=seq)])
            with self.assertRaises(PermissionDenied):
                frontend.insert(SQLTable.ML_MODEL, [rows.model()])

        await deferToThread(requests)
        exposed = samples((await get(f"{ops}/metrics"))[2].decode())
        ok = ("tradehub_requests_total", (("command", "INSERT"), ("outcome", "OK"), ("table", "MARKET_TICK")))
        denied = (
            "tradehub_requests_total",
            (("command", "INSERT"), ("outcome", "PERMISSION_DENIED"), ("table", "ML_MODEL")),
        )
        self.assertEqual((exposed[ok], exposed[denied]), (3, 1))
        self.assertEqual(exposed[("tradehub_request_duration_seconds_count", (("command", "INSERT"),))], 4)
        self.assertEqual(
            [exposed[("tradehub_sessions", (("role", role),))] for role in ("FRONTEND", "ML", "none")], [1, 0, 0]
        )
        self.assertGreater(exposed[("tradehub_received_bytes_total", ())], 0)
        self.assertGreater(exposed[("tradehub_sent_bytes_total", ())], 0)
        self.assertGreaterEqual(exposed[("tradehub_db_pool_connections", ())], 2)

        # The database stops taking connections and drops those it had: not ready, naming it.
        name = sql.Identifier(dsn.split("dbname=")[1].split()[0])
        await deferToThread(server.execute, sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(name))
        await deferToThread(
            server.execute,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            name.strings[0],
        )
        code, _, body = await get(f"{ops}/readyz")
        report = json.loads(body)
        self.assertEqual((code, report["ready"], report["parts"]["database"]["ready"]), (503, False, False), report)
        self.assertTrue(report["parts"]["listeners"]["ready"], report)

        # It takes them again: ready again, and the pool's retries were counted.
        await deferToThread(server.execute, sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(name))
        self.assertTrue((await ready_soon(ops))["parts"]["database"]["ready"])
        exposed = samples((await get(f"{ops}/metrics"))[2].decode())
        self.assertGreater(sum(v for (n, _), v in exposed.items() if n == "tradehub_db_retries_total"), 0)

        await deferToThread(frontend.close)
        daemon.signal(signal.SIGTERM)
        self.assertEqual(await deferToThread(daemon.wait), 0)
