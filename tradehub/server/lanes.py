"""
A lane is one connection's task queue: the session produces decoded
requests into it, and one consumer, started after the handshake and joined at
shutdown, executes them strictly in arrival order.

Consecutive requests of a route that can be coalesced (many one-row INSERTs
of a table) are taken together, so they cost one statement and one commit;
each still gets its own answer, in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, ensureDeferred, succeed

MAX_GROUP = 2000


@attrs.frozen
class Answer:
    """
    A RESPONSE payload and what must happen once it is written: a
    subscription starts only after its confirmation, so no EVENT precedes it.
    """

    payload: bytes
    then: Callable[[], None]


@attrs.define
class Task:
    """
    One received request: its route and decoded value, or the error to answer
    it with; its header's command and table numbers and when it arrived (on
    the session's clock), for the metrics of its answer.
    """

    request_id: int
    route: Any = None
    value: Any = None
    error: Exception | None = None
    command: int = 0
    table: int = 0
    arrived: float = 0.0
    # Its payload's bytes: what it holds in memory until answered, roughly.
    size: int = 0

    def joins(self, first: Task) -> bool:
        return self.error is None and first.error is None and self.route is first.route


class Lane:
    """
    C{execute(tasks)} runs and answers a group of tasks. C{writable()} returns
    None, or while the transport's buffer is full a Deferred that fires when
    answers may be written again, so a client that does not read stalls only
    its own lane. C{idle()} is called each time nothing is left queued or
    running.
    """

    def __init__(
        self,
        execute: Callable[[list[Task]], Awaitable[None]],
        writable: Callable[[], Deferred[None] | None] = lambda: None,
        idle: Callable[[], None] = lambda: None,
    ) -> None:
        self._execute = execute
        self._writable = writable
        self._idle = idle
        self._queue: deque[Task] = deque()
        self._wakeup: Deferred[None] | None = None
        self._closing = False
        self.busy = False
        self.consumer: Deferred[None] | None = None

    def __len__(self) -> int:
        return len(self._queue) + (1 if self.busy else 0)

    @property
    def queued(self) -> int:
        """Tasks not started yet."""
        return len(self._queue)

    def start(self) -> Deferred[None]:
        self.consumer = ensureDeferred(self._consume())
        return self.consumer

    def push(self, task: Task) -> None:
        if self._closing:
            raise RuntimeError("lane is closed")
        self._queue.append(task)
        self._wake()

    def fail_pending(self, error: Exception) -> int:
        """
        Answer every task not started yet with C{error}, in its turn: after
        whatever is running, so answers stay in order. Returns how many.
        """
        for task in self._queue:
            task.error = error
        return len(self._queue)

    def discard_pending(self) -> list[Task]:
        """Remove and return the tasks not started yet."""
        pending = list(self._queue)
        self._queue.clear()
        return pending

    def close(self) -> Deferred[None]:
        """Take no more tasks; the consumer ends after the queue empties. Returns its Deferred."""
        self._closing = True
        self._wake()
        return self.consumer if self.consumer is not None else succeed(None)

    def _wake(self) -> None:
        if self._wakeup is not None:
            wakeup, self._wakeup = self._wakeup, None
            wakeup.callback(None)

    async def _consume(self) -> None:
        while True:
            if not self._queue:
                self._idle()
                if self._closing:
                    return
                self._wakeup = Deferred()
                await self._wakeup
                continue
            paused = self._writable()
            if paused is not None:
                # What waits may be dropped meanwhile: look at the queue again after.
                await paused
                continue
            self.busy = True
            try:
                await self._execute(self._take_group())
            finally:
                self.busy = False

    def _take_group(self) -> list[Task]:
        first = self._queue.popleft()
        group = [first]
        if first.route is None or first.route.handle_group is None:
            return group
        queue = self._queue
        while queue and len(group) < MAX_GROUP and queue[0].joins(first):
            group.append(queue.popleft())
        return group
