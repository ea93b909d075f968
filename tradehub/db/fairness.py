"""
Who gets the next free database connection.

Every client connection's work is tagged with its owner (L{working_for});
when connections are scarce, the waiter whose owner has held connections the
least lately goes first, and no owner holds more than its cap at once. So a
client that floods the hub with heavy pages slows itself: a cheap lookup of
another client waits for the next free connection, not behind the flood.
"""

from __future__ import annotations

import itertools
import math
import weakref
from contextvars import ContextVar
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

# Seconds over which an owner's past use halves: what it held a few seconds ago hardly counts.
USAGE_HALF_LIFE = 1.0


class _Hub:
    """The owner of work that no client connection asked for (Alpaca sync, readiness checks)."""


HUB = _Hub()
_owner: ContextVar[Any] = ContextVar("database work owner", default=HUB)


def working_for(owner: Any) -> None:
    """Tag the database work of the running coroutine, and of what it awaits, with C{owner}."""
    _owner.set(owner)


def current_owner() -> Any:
    return _owner.get()


@attrs.define(eq=False)
class Waiter:
    owner: Any
    deferred: Deferred
    order: int


class FairQueue:
    """
    Waiters for connections, and what each owner holds: C{cap} connections
    at most, and a usage (connection-seconds, decayed with
    L{USAGE_HALF_LIFE}) that orders the waiters.
    """

    def __init__(self, clock: IReactorTime, cap: int) -> None:
        self._clock = clock
        self.cap = cap
        self._waiters: list[Waiter] = []
        self._order = itertools.count()
        # Owners are client sessions: forgotten once they are gone.
        self._holding: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._usage: weakref.WeakKeyDictionary[Any, tuple[float, float]] = weakref.WeakKeyDictionary()

    def __len__(self) -> int:
        return len(self._waiters)

    def wait(self, owner: Any) -> Waiter:
        waiter = Waiter(owner, Deferred(), next(self._order))
        self._waiters.append(waiter)
        return waiter

    def next(self) -> Waiter | None:
        """Remove and return the waiter to serve next: under its cap, least used, longest waiting."""
        now = self._clock.seconds()
        best = None
        for waiter in self._waiters:
            if self._holding.get(waiter.owner, 0) >= self.cap:
                continue
            rank = (self._used(waiter.owner, now), waiter.order)
            if best is None or rank < best[0]:
                best = (rank, waiter)
        if best is None:
            return None
        self._waiters.remove(best[1])
        return best[1]

    def drain(self) -> list[Waiter]:
        waiters, self._waiters = self._waiters, []
        return waiters

    def lent(self, owner: Any) -> float:
        """Count a connection lent to C{owner}; returns when, for L{returned}."""
        self._holding[owner] = self._holding.get(owner, 0) + 1
        return self._clock.seconds()

    def returned(self, owner: Any, since: float) -> None:
        now = self._clock.seconds()
        self._holding[owner] -= 1
        self._usage[owner] = (self._used(owner, now) + (now - since), now)

    def _used(self, owner: Any, now: float) -> float:
        used, at = self._usage.get(owner, (0.0, now))
        return used * math.exp2(-(now - at) / USAGE_HALF_LIFE)
