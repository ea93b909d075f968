"""
The hub every listener shares: the settings sessions negotiate, the route
registry, the token check, the live sessions, and the drain used when the
daemon stops.
"""

import hmac
import itertools
import secrets

from twisted.internet.defer import DeferredList
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from ..protocol.enums import Role
from .session import CLOSE_GRACE, HubProtocol


class HubFactory(Factory):
    """
    Shared by every listener: the settings sessions negotiate, the route
    registry, the live sessions, the metrics they count their traffic in
    (L{tradehub.ops.metrics.Metrics}), and the drain used when the daemon stops.
    """

    noisy = False
    log = Logger()

    def __init__(
        self,
        registry,
        tokens,
        clock,
        *,
        handshake_timeout,
        heartbeat_ms,
        max_frame,
        max_in_flight,
        metrics,
        max_request=None,
        send_buffer=None,
        subscriptions=None,
    ):
        self.registry = registry
        # The SUBSCRIBE handler (L{Subscriptions}), or None: push is off.
        self.subscriptions = subscriptions
        self.metrics = metrics
        self._tokens = {Role[name]: token.encode() for name, token in tokens.items()}
        self.clock = clock
        self.handshake_timeout = handshake_timeout
        self.heartbeat_ms = heartbeat_ms
        self.heartbeat = heartbeat_ms / 1000
        self.max_frame = max_frame
        self.max_request = max_request if max_request is not None else 64 * max_frame
        # Reading pauses at max_in_flight unanswered requests, or once they
        # hold max_request bytes: many small requests keep a deep pipeline,
        # a few large ones a bounded amount of memory.
        self.max_in_flight = max_in_flight
        self.max_in_flight_bytes = self.max_request
        # Bytes of answers the kernel may hold for one client (None: its own, growing to megabytes).
        self.send_buffer = send_buffer
        self.low_water = max_in_flight // 2
        self.sessions = _Sessions()
        self._session_prefix = secrets.randbits(24) << 40
        self._session_counter = itertools.count(1)

    def buildProtocol(self, addr):
        protocol = HubProtocol(self)
        protocol.factory = self
        return protocol

    def authenticate(self, role, token):
        """Constant-time token check; an unknown role is compared too, so it takes as long."""
        expected = self._tokens.get(role)
        matches = hmac.compare_digest(token.encode(), expected if expected is not None else b"\0" * 32)
        return expected is not None and matches

    def next_session_id(self):
        return self._session_prefix | next(self._session_counter)

    def when_gone(self, session, waiter):
        self.sessions.notify_when_gone(session, waiter)

    def drain(self, deadline):
        """
        Server-initiated shutdown of every session. Fires when every session
        is closed and every lane has finished its running work.
        """
        sessions = list(self.sessions)
        if sessions:
            self.log.info("draining {count} sessions (deadline {deadline:g}s)", count=len(sessions), deadline=deadline)
        drained = DeferredList([session.server_shutdown(deadline) for session in sessions], consumeErrors=True)
        # A database that never answers must not keep the daemon from stopping.
        give_up = self.clock.callLater(deadline + CLOSE_GRACE, self._abandon, sessions)
        drained.addBoth(lambda result: (give_up.cancel() if give_up.active() else None, result)[1])
        return drained

    def _abandon(self, sessions):
        stuck = [s for s in sessions if s in self.sessions]
        self.log.warn(
            "{count} sessions still had work {grace:g}s after the drain deadline; closing them",
            count=len(stuck),
            grace=CLOSE_GRACE,
        )
        for session in stuck:
            session.transport.abortConnection()
            self.sessions.discard(session)


class _Sessions:
    """The live sessions, and who waits for one to be gone."""

    def __init__(self):
        self._live = set()
        self._waiters = {}

    def add(self, session):
        self._live.add(session)

    def discard(self, session):
        self._live.discard(session)
        for waiter in self._waiters.pop(session, []):
            waiter.callback(None)

    def notify_when_gone(self, session, waiter):
        if session in self._live:
            self._waiters.setdefault(session, []).append(waiter)
        else:
            waiter.callback(None)

    def __iter__(self):
        return iter(list(self._live))

    def __contains__(self, session):
        return session in self._live

    def __len__(self):
        return len(self._live)
