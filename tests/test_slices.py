"""
Large conversions in slices: a long page gives the reactor back between
slices, pages share the turns, a short list never waits for a turn.
"""

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from tradehub.protocol.enums import SQLTable
from tradehub.protocol.tables import LAYOUTS
from tradehub.slices import Slicer

from . import rows


class Turns:
    """A reactor's turns by hand, and a clock that each mapped item advances by one second."""

    def __init__(self):
        self.pending = []
        self.now = 0.0
        self.done = []

    def schedule(self, step):
        """Like callLater: the cooperator keeps what it returns, and schedules no second turn meanwhile."""
        self.pending.append(step)
        return step

    def turn(self):
        steps, self.pending = self.pending, []
        for step in steps:
            step()

    def slow(self, name):
        def convert(item):
            self.now += 1
            self.done.append((name, item))
            return item * 10

        return convert


class SlicerTests(SynchronousTestCase):
    def setUp(self):
        self.turns = Turns()
        self.slicer = Slicer(self.turns.schedule, lambda: self.turns.now, turn_seconds=4, slice_items=2)

    def test_a_short_list_is_mapped_at_once_without_waiting_for_a_turn(self):
        mapped = ensureDeferred(self.slicer.map(self.turns.slow("a"), [1, 2]))
        self.assertEqual(self.successResultOf(mapped), [10, 20])
        self.assertEqual(self.turns.pending, [])

    def test_a_long_list_gives_the_reactor_back_once_its_turn_is_spent(self):
        mapped = ensureDeferred(self.slicer.map(self.turns.slow("a"), list(range(10))))
        self.assertNoResult(mapped)
        self.assertEqual(self.turns.done, [])
        self.turns.turn()
        # Four seconds per turn: two slices of two items, then the reactor serves I/O.
        self.assertEqual(len(self.turns.done), 4)
        self.assertNoResult(mapped)
        while self.turns.pending:
            self.turns.turn()
        self.assertEqual(self.successResultOf(mapped), [i * 10 for i in range(10)])

    def test_long_lists_take_slices_in_turn(self):
        first = ensureDeferred(self.slicer.map(self.turns.slow("a"), list(range(6))))
        second = ensureDeferred(self.slicer.map(self.turns.slow("b"), list(range(6))))
        self.turns.turn()
        self.assertEqual([name for name, _ in self.turns.done], ["a", "a", "b", "b"])
        while self.turns.pending:
            self.turns.turn()
        self.assertEqual(self.successResultOf(first), self.successResultOf(second))


class AnswerTests(SynchronousTestCase):
    def test_an_answer_from_rows_encoded_one_by_one_has_the_bytes_of_the_whole_response(self):
        layouts = LAYOUTS[SQLTable.MARKET_TICK]
        ticks = [rows.tick(i) for i in range(3)]
        for cursor in (None, b"\x00next"):
            whole = layouts.response.encode({"affected": 3, "rows": ticks, "written": [], "next_cursor": cursor})
            self.assertEqual(layouts.answer(3, [layouts.row.encode(t) for t in ticks], cursor), whole)
        written = layouts.response.encode({"affected": 3, "rows": [], "written": ticks, "next_cursor": None})
        self.assertEqual(layouts.answer(3, [], written=[layouts.written.encode(t) for t in ticks]), written)
        self.assertEqual(
            layouts.response.decode(layouts.answer(0, [])),
            {"affected": 0, "rows": [], "written": [], "next_cursor": None},
        )
