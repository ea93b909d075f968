"""
The pool's fair queue: while connections are scarce, the client that held
them least lately goes first, and none holds more than its cap.
"""

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tradehub.db.fairness import USAGE_HALF_LIFE, FairQueue, working_for

from .support import fresh_database, make_pool


class Owner:
    """A stand-in for a client session (owners are held weakly)."""

    def __init__(self, name):
        self.name = name


class FairQueueTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.queue = FairQueue(self.clock, cap=1)
        self.heavy, self.light = Owner("heavy"), Owner("light")

    def hold(self, owner, seconds):
        since = self.queue.lent(owner)
        self.clock.advance(seconds)
        self.queue.returned(owner, since)

    def test_the_owner_that_held_connections_least_goes_first(self):
        self.hold(self.heavy, 0.5)
        self.hold(self.light, 0.001)
        first = [self.queue.wait(self.heavy) for _ in range(3)]
        light = self.queue.wait(self.light)
        self.assertIs(self.queue.next(), light)
        self.assertEqual([self.queue.next() for _ in range(3)], first)
        self.assertIsNone(self.queue.next())

    def test_equal_owners_are_served_in_arrival_order(self):
        a, b = Owner("a"), Owner("b")
        waiters = [self.queue.wait(a), self.queue.wait(b)]
        self.assertEqual([self.queue.next(), self.queue.next()], waiters)

    def test_an_owner_at_its_cap_waits_even_first_in_line(self):
        self.queue.lent(self.heavy)
        self.queue.wait(self.heavy)
        light = self.queue.wait(self.light)
        self.assertIs(self.queue.next(), light)
        self.assertIsNone(self.queue.next())

    def test_past_use_fades(self):
        self.hold(self.heavy, 1.0)
        self.clock.advance(10 * USAGE_HALF_LIFE)
        self.hold(self.light, 0.01)
        heavy = self.queue.wait(self.heavy)
        self.queue.wait(self.light)
        self.assertIs(self.queue.next(), heavy)


class FairPoolTests(TestCase):
    async def test_a_light_client_is_served_before_a_flood_queued_ahead_of_it(self):
        pool = make_pool(await fresh_database(self), size_min=1, size_max=1, per_client=1)
        await pool.start()
        self.addCleanup(pool.close)
        heavy, light = Owner("heavy"), Owner("light")
        finished = []

        async def run(owner, label, seconds):
            working_for(owner)
            await pool.query("SELECT pg_sleep(%s)", (seconds,))
            finished.append(label)

        flood = [ensureDeferred(run(heavy, f"heavy {n}", 0.05)) for n in range(5)]
        # The flood has held the only connection; the light client asks last.
        while not finished:
            await _tick()
        lookup = ensureDeferred(run(light, "light", 0))
        await gatherResults([*flood, lookup])
        self.assertEqual(finished.index("light"), 2)

    async def test_one_client_holds_no_more_than_its_cap(self):
        pool = make_pool(await fresh_database(self), size_min=1, size_max=4, per_client=2)
        await pool.start()
        self.addCleanup(pool.close)
        owner = Owner("busy")
        running, peak = [0], [0]

        async def run():
            working_for(owner)

            async def sleep(cursor):
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                await cursor.execute("SELECT pg_sleep(0.05)")
                running[0] -= 1

            await pool.transaction(sleep)

        await gatherResults([ensureDeferred(run()) for _ in range(6)])
        self.assertEqual(peak[0], 2)
        self.assertLessEqual(pool.size, 2)


def _tick():
    return deferLater(reactor, 0.005, lambda: None)
