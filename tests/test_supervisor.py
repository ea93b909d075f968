from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tradehub.db.embedded import EmbeddedClusterError
from tradehub.db.supervisor import CHECK_INTERVAL, RESTART_ATTEMPTS, RESTART_BACKOFF, Supervisor


class Server:
    """A stand-in for the embedded cluster: alive or not, and each restart a Deferred the test fires."""

    def __init__(self):
        self.alive = True
        self.restarts = []

    def restart(self):
        self.restarts.append(Deferred())
        return self.restarts[-1]


class SupervisorTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.server = Server()
        self.given_up = []
        self.supervisor = Supervisor(self.clock, lambda: self.server.alive, self.server.restart, self.given_up.append)
        self.supervisor.start()
        self.addCleanup(self.supervisor.stop)
        self.messages = []

        def observe(event):
            self.messages.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def die(self):
        """The server dies; the next check finds it dead."""
        self.server.alive = False
        self.clock.advance(CHECK_INTERVAL)

    def test_a_live_server_is_left_alone(self):
        self.clock.advance(CHECK_INTERVAL * 100)
        self.assertEqual(self.server.restarts, [])

    def test_a_dead_server_is_restarted_at_the_next_check_and_watched_again(self):
        self.server.alive = False
        self.clock.advance(CHECK_INTERVAL * 0.99)
        self.assertEqual(self.server.restarts, [])
        self.clock.advance(CHECK_INTERVAL * 0.01)
        self.assertEqual(len(self.server.restarts), 1)
        self.clock.advance(CHECK_INTERVAL * 10)
        self.assertEqual(len(self.server.restarts), 1, "a second restart while the first is under way")
        self.server.alive = True
        self.server.restarts[0].callback(True)
        self.assertIn("embedded PostgreSQL is back", self.messages)
        self.clock.advance(CHECK_INTERVAL * 10)
        self.assertEqual(len(self.server.restarts), 1)
        self.die()
        self.assertEqual(len(self.server.restarts), 2)
        self.assertEqual(self.given_up, [])

    def test_failed_restarts_are_tried_again_after_doubling_pauses_then_given_up(self):
        self.die()
        pause = RESTART_BACKOFF
        for attempt in range(1, RESTART_ATTEMPTS):
            self.assertEqual(len(self.server.restarts), attempt)
            self.server.restarts[-1].errback(EmbeddedClusterError(f"pg_ctl start failed {attempt}"))
            self.clock.advance(pause * 0.99)
            self.assertEqual(len(self.server.restarts), attempt, f"attempt {attempt + 1} came early")
            self.clock.advance(pause * 0.01)
            pause *= 2
        self.assertEqual(self.given_up, [])
        last = EmbeddedClusterError("pg_ctl start failed at last")
        self.server.restarts[-1].errback(last)
        self.assertEqual(self.given_up, [last])
        self.clock.advance(CHECK_INTERVAL * 100)
        self.assertEqual(len(self.server.restarts), RESTART_ATTEMPTS, "restarted after giving up")
        attempts = [m for m in self.messages if m.startswith("embedded PostgreSQL is down; restarting it")]
        self.assertEqual(
            attempts[-1],
            f"embedded PostgreSQL is down; restarting it (attempt {RESTART_ATTEMPTS} of {RESTART_ATTEMPTS})",
        )
        self.assertEqual(len(attempts), RESTART_ATTEMPTS)
        self.assertIn(
            f"restarting embedded PostgreSQL failed: pg_ctl start failed 1; next attempt in {RESTART_BACKOFF}s",
            self.messages,
        )

    def test_stopping_between_attempts_ends_the_restart_at_once(self):
        self.die()
        self.server.restarts[0].errback(EmbeddedClusterError("pg_ctl start failed"))
        self.supervisor.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(CHECK_INTERVAL * 100)
        self.assertEqual(len(self.server.restarts), 1)
        self.assertEqual(self.given_up, [])

    def test_stopping_during_an_attempt_ends_the_restart(self):
        self.die()
        self.supervisor.stop()
        # The attempt's thread ends after the stop: its outcome changes nothing.
        self.server.restarts[0].errback(EmbeddedClusterError("pg_ctl start failed"))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(CHECK_INTERVAL * 100)
        self.assertEqual(len(self.server.restarts), 1)
        self.assertEqual(self.given_up, [])
