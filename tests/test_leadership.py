"""
The leader election against real PostgreSQL: one hub at a time runs the
led services, and another takes over when the leader stops, loses its
connection, or leads for another key.
"""

import psutil
from twisted.application.service import Service
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs
from twisted.trial.unittest import TestCase

from tradehub.db.leadership import LOCK_CLASS, Leadership

from .support import blocking_query, fresh_database


class Recorded(Service):
    """A led service that says when it runs; C{fails} of its starts fail."""

    def __init__(self, name, events, fails=0):
        self.name = name
        self.events = events
        self.fails = fails

    def startService(self):
        if self.fails:
            self.fails -= 1
            raise RuntimeError(f"{self.name} cannot start")
        super().startService()
        self.events.append(("start", self.name))

    def stopService(self):
        super().stopService()
        self.events.append(("stop", self.name))


async def until(condition, timeout=20):
    waited = 0.0
    while not condition():
        if waited > timeout:
            raise AssertionError("condition not met in time")
        await deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


class LeadershipTests(TestCase):
    timeout = 60

    async def setUp(self):
        self.dsn = await fresh_database(self)

    def hub(self, name, key="PK-ONE", timeout=2, stream_fails=0):
        events, changes = [], []
        leadership = Leadership(
            "alpaca",
            self.dsn,
            key,
            reactor=reactor,
            clock=reactor,
            timeout=timeout,
            every=0.05,
            on_change=changes.append,
        )
        Recorded("sync", events).setServiceParent(leadership)
        Recorded("stream", events, fails=stream_fails).setServiceParent(leadership)
        leadership.events, leadership.changes = events, changes
        self.addCleanup(lambda: leadership.running and leadership.stopService())
        return leadership

    async def lock_holders(self):
        return await deferToThread(
            blocking_query,
            self.dsn,
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND granted",
            LOCK_CLASS,
        )

    async def test_one_hub_leads_and_another_takes_over_when_it_stops(self):
        first, second = self.hub("first"), self.hub("second")
        await first.startService()
        await second.startService()
        self.assertEqual((first.leading, second.leading), (True, False))
        self.assertEqual(first.events, [("start", "sync"), ("start", "stream")])
        self.assertEqual(second.events, [])
        self.assertEqual(len(await self.lock_holders()), 1)

        await first.stopService()
        # Stopped in reverse order, and the lock went with its session.
        self.assertEqual(first.events[2:], [("stop", "stream"), ("stop", "sync")])
        await until(lambda: second.leading)
        await until(lambda: len(second.events) == 2)
        self.assertEqual(second.events, [("start", "sync"), ("start", "stream")])
        self.assertEqual(second.changes, [True])

    async def test_a_leader_whose_session_ends_steps_down_and_the_other_leads(self):
        first, second = self.hub("first"), self.hub("second")
        await first.startService()
        await second.startService()
        [(holder,)] = await self.lock_holders()
        await deferToThread(blocking_query, self.dsn, "SELECT pg_terminate_backend(%s)", holder)
        await until(lambda: first.events[2:4] == [("stop", "stream"), ("stop", "sync")])
        # Whoever takes the lock next (either hub may) runs the services; the other does not.
        await until(lambda: any(hub.leading and hub.events[-2:] == _running for hub in (first, second)))
        leader, follower = (first, second) if first.leading else (second, first)
        self.assertFalse(follower.leading)
        self.assertIn(follower.events[-1:], ([], [("stop", "sync")]))
        self.assertEqual(len(await self.lock_holders()), 1)

    async def test_a_leader_whose_server_stops_answering_steps_down(self):
        """Its session may outlive it on the server: it stops leading anyway, before anyone else may lead."""
        first, second = self.hub("first", timeout=0.5), self.hub("second", timeout=0.5)
        await first.startService()
        await second.startService()
        [(holder,)] = await self.lock_holders()
        backend = psutil.Process(holder)  # the test server runs on this machine
        backend.suspend()
        self.addCleanup(lambda: backend.is_running() and backend.resume())
        await until(lambda: first.events[2:] == [("stop", "stream"), ("stop", "sync")])
        self.assertEqual((first.leading, second.leading, first.changes[-1]), (False, False, False))
        backend.resume()
        # The server ends the abandoned session once it runs again, and its lock with it.
        await until(lambda: any(hub.leading and hub.events[-2:] == _running for hub in (first, second)))
        self.assertNotEqual(first.leading, second.leading)

    async def test_a_leader_that_goes_quiet_loses_its_session_and_the_other_leads(self):
        """A frozen hub checks nothing: the server ends its idle session, and the lock with it."""
        first, second = self.hub("first", timeout=0.5), self.hub("second", timeout=0.5)
        await first.startService()
        await second.startService()
        first._loop.stop()  # frozen: no more checks on its session
        await until(lambda: second.leading and second.events == _running)
        self.assertEqual(len(await self.lock_holders()), 1)
        await until(lambda: not first.leading)

    async def test_a_hub_that_leads_again_starts_its_services_again(self):
        alone = self.hub("alone")
        await alone.startService()
        [(holder,)] = await self.lock_holders()
        await deferToThread(blocking_query, self.dsn, "SELECT pg_terminate_backend(%s)", holder)
        await until(lambda: alone.leading and alone.events == [*_running, *_stopped, *_running])
        self.assertEqual(alone.changes, [True, False, True])

    async def test_a_service_that_fails_to_start_gives_the_lead_up_and_it_is_tried_again(self):
        with capturedLogs() as logs:
            failing = self.hub("failing", stream_fails=1)
            await failing.startService()
            # It stopped what it had started, and let the lock go with its session.
            await until(lambda: failing.events[:2] == [("start", "sync"), ("stop", "sync")])
            # Whoever leads next (itself, again) runs every service: the failure did not wedge it.
            await until(lambda: failing.leading and failing.events[-2:] == _running)
        [failure] = [e for e in logs if e.get("log_failure") is not None]
        self.assertIn("stream cannot start", str(failure["log_failure"].value))
        self.flushLoggedErrors(RuntimeError)
        await failing.stopService()
        self.assertEqual(failing.events[-2:], _stopped)
        self.assertEqual(await self.lock_holders(), [])

    async def test_hubs_of_other_keys_lead_their_own(self):
        first, second = self.hub("first", key="PK-ONE"), self.hub("second", key="PK-TWO")
        await first.startService()
        await second.startService()
        self.assertEqual((first.leading, second.leading), (True, True))

    async def test_a_hub_that_cannot_reach_its_database_does_not_lead_and_starts_anyway(self):
        lonely = Leadership(
            "alpaca", "postgresql://nobody@127.0.0.1:1/none", "PK-ONE", reactor=reactor, clock=reactor, timeout=1
        )
        events = []
        Recorded("sync", events).setServiceParent(lonely)
        await lonely.startService()
        self.assertEqual((lonely.leading, events), (False, []))
        await lonely.stopService()


_running = [("start", "sync"), ("start", "stream")]
_stopped = [("stop", "stream"), ("stop", "sync")]
