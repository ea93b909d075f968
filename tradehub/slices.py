"""
Large conversions in slices, so that one page does not hold the reactor.

Converting a 1000-row page (database values to rows, rows to wire bytes)
takes milliseconds of CPU. Done in one go, 50 clients paging at once keep
the reactor busy for hundreds of milliseconds per turn, and another
client's one-row lookup waits behind all of them. Here a large list is
mapped a slice at a time: each reactor turn gives the slices of all pending
pages, in turn, at most L{TURN_SECONDS}, then lets the reactor serve I/O. A
small list is mapped at once: a lookup never waits for a turn.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from twisted.internet.task import Cooperator

Item = TypeVar("Item")
Result = TypeVar("Result")

# Items mapped per step; a list no longer than this is mapped at once.
SLICE_ITEMS = 20
# CPU a reactor turn gives to slices before it serves I/O again.
TURN_SECONDS = 0.0005


def _next_turn(step: Callable[[], None]) -> Any:
    from twisted.internet import reactor

    return reactor.callLater(0, step)


class Slicer:
    """Maps lists a slice at a time, round-robin across every list being mapped."""

    def __init__(
        self,
        scheduler: Callable[[Callable[[], None]], Any] = _next_turn,
        now: Callable[[], float] = time.monotonic,
        turn_seconds: float = TURN_SECONDS,
        slice_items: int = SLICE_ITEMS,
    ) -> None:
        self.slice_items = slice_items

        def turn() -> Callable[[], bool]:
            ends = now() + turn_seconds
            return lambda: now() >= ends

        self._cooperator = Cooperator(terminationPredicateFactory=turn, scheduler=scheduler)

    async def map(self, function: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
        """C{[function(item) for item in items]}, in slices when the list is long."""
        size = self.slice_items
        if len(items) <= size:
            return [function(item) for item in items]
        results: list[Result] = []

        def steps() -> Iterator[None]:
            for start in range(0, len(items), size):
                results.extend([function(item) for item in items[start : start + size]])
                yield None

        await self._cooperator.coiterate(steps())
        return results


_slicer = Slicer()


def in_slices(function: Callable[[Item], Result], items: Sequence[Item]) -> Any:
    """Map C{items} with the process's one L{Slicer}, so every page shares the turns fairly."""
    return _slicer.map(function, items)
