"""
SIGTERM while a client pipelines writes at the real daemon: every request the
daemon received is answered in order (RESPONSE or SHUTTING_DOWN), the daemon
exits 0, and the database holds exactly the acknowledged writes.
"""

import signal
import socket
import threading

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tradehub.protocol.enums import ErrorCode, MessageType, Role, ShutdownReason, SQLCommand, SQLTable
from tradehub.protocol.tables import LAYOUTS

from . import rows, wire
from .daemon import TOKENS, Daemon
from .support import blocking_query, fresh_database
from .test_daemon import _url

TICKS = 20_000


def pipeline_until_closed(port, first_answer):
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(wire.hello(Role.FRONTEND, token=TOKENS["TRADEHUB_FRONTEND_TOKEN"]))
    return pipeline(sock, first_answer)


def pipeline(sock, first_answer, symbol="AAPL"):
    """Send TICKS one-row inserts of C{symbol} (seq = request id) while reading every answer until the hub closes."""
    frames = b"".join(
        wire.request(
            SQLCommand.INSERT,
            SQLTable.MARKET_TICK,
            LAYOUTS[SQLTable.MARKET_TICK].rows_request.encode({"echo": False, "rows": [rows.tick(i, symbol=symbol)]}),
            i,
        )
        for i in range(1, TICKS + 1)
    )
    threading.Thread(target=_send_all, args=(sock, frames), daemon=True).start()
    reader = wire.Reader()
    answers = []
    while True:
        try:
            data = sock.recv(65536)
        except OSError:
            break
        if not data:
            break
        answers += reader.feed(data)
        if any(header.request_id for header, _ in answers):
            first_answer.set()
    sock.close()
    return answers


def _send_all(sock, frames):
    try:
        sock.sendall(frames)
    except OSError:
        pass


class StopUnderLoadTests(TestCase):
    timeout = 180

    async def test_sigterm_under_load_loses_no_acknowledged_write_and_answers_every_received_request(self):
        dsn = await fresh_database(self)
        daemon = Daemon(self.mktemp(), env={"DATABASE_URL": _url(dsn), "TRADEHUB_SHUTDOWN_DEADLINE": "5"}).start()
        self.addCleanup(daemon.kill)
        await deferToThread(daemon.wait_for, "ready: ")
        first_answer = threading.Event()
        answers = deferToThread(pipeline_until_closed, daemon.frontend_port, first_answer)
        await deferToThread(first_answer.wait, 30)
        daemon.signal(signal.SIGTERM)
        frames = await answers
        self.assertEqual(await deferToThread(daemon.wait), 0)

        self.assertEqual(frames[0][0].type, MessageType.HELLO_ACK)
        acknowledged = assert_drained(self, frames)
        stored = await deferToThread(blocking_query, dsn, "SELECT seq FROM market_tick")
        self.assertEqual({row[0] for row in stored}, acknowledged)


def assert_drained(test, frames):
    """
    What a client of a stopping hub must have seen: one SHUTDOWN, and an
    answer to a gap-free prefix of its requests, in order, each a RESPONSE
    or a SHUTTING_DOWN refusal (some of each). Returns the acknowledged ids.
    """
    shutdowns = [payload for header, payload in frames if header.type == MessageType.SHUTDOWN]
    test.assertEqual([s.reason for s in shutdowns], [ShutdownReason.SERVER_STOPPING])
    answered = [(header.request_id, header.type, payload) for header, payload in frames if header.request_id]
    ids = [request_id for request_id, _, _ in answered]
    test.assertEqual(ids, list(range(1, len(ids) + 1)), "answers must be a gap-free prefix, in order")
    acknowledged = {request_id for request_id, kind, _ in answered if kind == MessageType.RESPONSE}
    refused = [payload for _, kind, payload in answered if kind == MessageType.ERROR]
    test.assertTrue(acknowledged, "some requests should have completed before the stop")
    test.assertTrue(refused, "the SIGTERM should have come while requests were still arriving")
    test.assertTrue(all(ErrorCode(error.code) == ErrorCode.SHUTTING_DOWN for error in refused))
    return acknowledged
