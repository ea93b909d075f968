"""The LISTEN connection against real PostgreSQL: it hears NOTIFYs, and comes back by itself when cut off."""

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from tradehub.db.listener import Listener
from tradehub.repositories.changes import CHANNEL

from .support import blocking_query, fresh_database


class ListenerTests(TestCase):
    timeout = 60

    async def setUp(self):
        self.dsn = await fresh_database(self)
        self.heard = []
        self.connections = 0
        self.waiting = None
        self.listener = Listener(
            self.dsn,
            CHANNEL,
            reactor=reactor,
            clock=reactor,
            notified=self.on_notify,
            connected=self.on_connected,
            connect_timeout=5,
            retry=0.05,
        )
        self.addCleanup(self.listener.stop)

    def on_notify(self, notify):
        self.heard.append(notify.payload)
        self.wake()

    def on_connected(self):
        self.connections += 1
        self.wake()

    def wake(self):
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            waiting.callback(None)

    async def until(self, condition):
        while not condition():
            self.waiting = Deferred()
            await self.waiting

    async def notify(self, payload):
        await deferToThread(blocking_query, self.dsn, "SELECT pg_notify(%s, %s)", CHANNEL, payload)

    async def test_it_hears_notifies_and_reconnects_after_its_backend_is_terminated(self):
        await self.listener.start()
        self.assertEqual((self.connections, self.listener.listening), (1, True))
        await self.notify("7")
        await self.until(lambda: self.heard == ["7"])
        [(killed,)] = await deferToThread(
            blocking_query,
            self.dsn,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = %s",
            f"LISTEN {CHANNEL}",
        )
        self.assertEqual(killed, 1)
        # Told it reconnected, so its user reads what it may have missed meanwhile.
        await self.until(lambda: self.connections == 2)
        await self.notify("9")
        await self.until(lambda: self.heard == ["7", "9"])

    async def test_a_database_it_cannot_reach_is_tried_again_until_stopped(self):
        attempts = []

        def observe(event):
            if event.get("log_format", "").startswith("cannot {purpose}"):
                attempts.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        unreachable = Listener(
            "postgresql://nobody@127.0.0.1:1/none",
            CHANNEL,
            reactor=reactor,
            clock=reactor,
            notified=self.on_notify,
            connected=self.on_connected,
            connect_timeout=1,
            retry=0.01,
        )
        await unreachable.start()
        await self.until_attempts(attempts, 3)
        unreachable.stop()
        tried = len(attempts)
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(len(attempts), tried, "no attempt after stop()")
        self.assertEqual((self.connections, unreachable.listening), (0, False))

    async def until_attempts(self, attempts, count):
        while len(attempts) < count:
            await deferLater(reactor, 0.01, lambda: None)
