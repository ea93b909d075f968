"""
One push subscription: a table, its filters, and the position it is current
to. Live, it takes the feed's changes as they come; behind (it resumes from
an old position, or its client stopped reading), it reads the change log a
page at a time, only while its client reads, until it reaches the feed's
head. So a slow subscriber costs the hub a page and its socket buffers, and
slows nobody else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from ..protocol.enums import MessageType, SQLCommand, SQLTable
from ..protocol.messages import split_frames
from ..protocol.tables import LAYOUTS
from ..repositories.changes import Change

if TYPE_CHECKING:
    from .feed import Feed

# Changes read per page while catching up.
PAGE = 500


class Outlet(Protocol):
    """What a subscription needs of its session."""

    max_frame: int
    # Its live subscriptions by request_id, and whether it still takes new ones.
    subscriptions: dict[int, Subscription]
    closed: bool

    def send_events(self, frames: bytes, count: int) -> None:
        """The EVENT frames of C{count} changes, in one write."""

    def writable(self) -> Deferred[None] | None: ...

    def subscription_failed(self, request_id: int, error: Exception) -> None: ...


class Subscription:
    log = Logger()

    def __init__(
        self,
        feed: Feed,
        table: SQLTable,
        request_id: int,
        filters: Mapping[str, Sequence[Any]],
        position: int,
        outlet: Outlet,
    ) -> None:
        self.feed = feed
        self.table = table
        self.request_id = request_id
        self.filters = {column: list(values) for column, values in filters.items() if values}
        self._wanted = [(column, frozenset(values)) for column, values in self.filters.items()]
        self.position = position
        self.outlet = outlet
        self.live = False
        self.ended = False
        self._catching_up = False
        self._layouts = LAYOUTS[table]

    def start(self) -> None:
        """Begin with the changes after the position: read from the log, then live."""
        if self.ended:
            return
        self.feed.follow(self)
        self._behind()

    def end(self) -> None:
        self.ended = True
        self.live = False
        self.feed.unfollow(self)

    # Live

    def deliver(self, start: int, through: int, changes: list[Change] | None) -> None:
        """
        The feed's changes of this table in (start, through]; None when it did
        not read them (nobody of this table was live when it began).
        """
        if not self.live:
            return
        # Its client has not taken the previous window yet: it reads the log
        # at its own pace instead, so it holds at most one window here.
        if changes is None or self.position < start or self.outlet.writable() is not None:
            self._behind()
            return
        self._send([c for c in changes if c.position > self.position and self._matches(c.row)])
        self.position = max(self.position, through)

    # Behind

    def _behind(self) -> None:
        self.live = False
        if not self._catching_up and not self.ended:
            self._catching_up = True
            ensureDeferred(self._catch_up())

    async def _catch_up(self) -> None:
        try:
            while not self.ended:
                waiting = self.outlet.writable()
                if waiting is not None:
                    await waiting
                    continue
                through = self.feed.head
                if self.position >= through:
                    self.live = True
                    return
                changes = await self._read(through)
                if self.ended:
                    return
                self._send(changes)
                self.position = changes[-1].position if len(changes) == PAGE else through
        except Exception as error:
            if not self.ended:
                self.end()
                self.outlet.subscription_failed(self.request_id, error)
        finally:
            self._catching_up = False

    async def _read(self, through: int) -> list[Change]:
        changes = await self.feed.read(self.table, self.position, through, self.filters, PAGE)
        # Read after the page: a trim that raced it shows here.
        (await self.feed.read_head()).keeps(self.position)
        return changes

    # Events

    def _matches(self, row: Mapping[str, Any]) -> bool:
        return all(row[column] in values for column, values in self._wanted)

    def _send(self, changes: list[Change]) -> None:
        """Their EVENTs in one write: a window or a page costs one system call, not one per change."""
        if not changes:
            return
        frames, layouts = [], self._layouts
        for change in changes:
            payload = change.event
            if payload is None:
                layout = layouts.deleted_event if change.op == SQLCommand.DELETE else layouts.event
                payload = change.event = layout.encode(dict(change.row, position=change.position))
            frames.append(
                split_frames(
                    MessageType.EVENT,
                    payload,
                    self.request_id,
                    self.outlet.max_frame,
                    command=change.op,
                    table=self.table,
                )
            )
        self.outlet.send_events(b"".join(frames), len(frames))
