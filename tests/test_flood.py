"""
A client pipelines 100,000 requests at the real daemon and never reads an
answer: the daemon's memory stays bounded and a second client is still served.
"""

import signal
import socket
import time

import psutil
from twisted.trial.unittest import SynchronousTestCase

from tradehub.client import BlockingClient
from tradehub.client.calls import select_payload
from tradehub.protocol.enums import MessageType, Role, SQLCommand, SQLTable

from . import wire
from .daemon import TOKENS, Daemon

REQUESTS = 100_000
# The stated bound on how much the daemon's RSS may grow during the flood.
RSS_GROWTH_BOUND = 48 * 1024 * 1024


def flood(port, count):
    """Handshake, then pipeline C{count} requests without reading; returns the socket and how many were sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(wire.hello(Role.FRONTEND, token=TOKENS["TRADEHUB_FRONTEND_TOKEN"]))
    request = wire.request(SQLCommand.SELECT, SQLTable.ACCOUNT, select_payload(SQLTable.ACCOUNT, limit=1), request_id=1)
    batch = request * 1000
    sent = 0
    try:
        while sent < count:
            sock.sendall(batch)
            sent += 1000
    except TimeoutError:
        pass
    return sock, sent


class FloodTests(SynchronousTestCase):
    def test_flooding_client_that_never_reads_keeps_memory_bounded_and_others_served(self):
        daemon = Daemon(self.mktemp()).start()
        self.addCleanup(daemon.kill)
        daemon.wait_for("ready: ")
        hub = psutil.Process(daemon.process.pid)
        baseline = hub.memory_info().rss

        sock, sent = flood(daemon.frontend_port, REQUESTS)
        self.addCleanup(sock.close)
        time.sleep(1.0)
        peak = hub.memory_info().rss

        started = time.monotonic()
        with BlockingClient("127.0.0.1", daemon.ml_port, Role.ML, TOKENS["TRADEHUB_ML_TOKEN"]) as other:
            request_id = other.send_request(
                SQLCommand.SELECT, SQLTable.ACCOUNT, select_payload(SQLTable.ACCOUNT, limit=1)
            )
            header, _ = other.read_frame()
        answered_in = time.monotonic() - started
        peak = max(peak, hub.memory_info().rss)

        self.assertEqual(header.request_id, request_id)
        self.assertEqual(header.type, MessageType.RESPONSE)
        self.assertLess(answered_in, 5.0)
        self.assertLess(
            peak - baseline,
            RSS_GROWTH_BOUND,
            f"RSS grew {(peak - baseline) / 2**20:.1f} MiB with {sent} requests pipelined",
        )
        print(
            f"\nflood: {sent} requests sent without reading; hub RSS {baseline / 2**20:.1f} -> {peak / 2**20:.1f} MiB; "
            f"second client answered in {answered_in * 1000:.1f} ms"
        )
        sock.close()
        daemon.signal(signal.SIGTERM)
        self.assertEqual(daemon.wait(), 0)
