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
from twisted.trial.unittest import TestCase

from tradehub.db.leadership import LOCK_CLASS, Leadership

from .support import blocking_query, fresh_database


class Recorded(Service):
    """A led service that says when it runs."""

    def __init__(self, name, events):
        self.name = name
        self.events = events

    def startService(self):
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

    def hub(self, name, key="PK-ONE", timeout=2):
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
        for child in ("sync", "stream"):
            Recorded(child, events).setServiceParent(leadership)
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
        self.assertEqual((first.leading, second.leading, first.changes), (False, False, [True, False]))
        backend.resume()
        # The server ends the abandoned session once it runs again, and its lock with it.
        await until(lambda: any(hub.leading and hub.events[-2:] == _running for hub in (first, second)))
        self.assertNotEqual(first.leading, second.leading)

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
