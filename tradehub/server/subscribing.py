"""
SUBSCRIBE frames to subscriptions: the checks (table, role, payload,
filters, position), in the contract's order, and the answers. Each
SUBSCRIBE, and each cancel, is a task of the session's lane, so its
RESPONSE keeps its place among the others; its EVENTs follow the RESPONSE.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from ..changes.feed import Feed
from ..changes.subscription import Outlet, Subscription
from ..errors import Closing, Conflict, Invalid, Missing
from ..protocol.enums import FLAG_CANCEL, ErrorCode, SQLTable
from ..protocol.errors import ProtocolError
from ..protocol.messages import SUBSCRIBED
from ..protocol.permissions import may_follow
from ..protocol.tables import LAYOUTS
from .lanes import Answer, Task


@attrs.frozen(eq=False)
class _Handler:
    """A lane route of its own: one SUBSCRIBE or cancel, never coalesced with another."""

    handle: Callable[[Any], Awaitable[bytes | Answer]]
    handle_group: None = None


class Subscriptions:
    """The push side of the sessions of one hub."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed

    def task(self, session: Any, header: Any, payload: bytes) -> Task:
        request_id = header.request_id
        if header.flags & FLAG_CANCEL:
            return Task(request_id, route=_Handler(lambda _: self._cancel(session, request_id)))
        try:
            table = SQLTable(header.table)
        except ValueError:
            return Task(request_id, error=ProtocolError(ErrorCode.UNKNOWN_TABLE, f"unknown table {header.table}"))
        if not may_follow(session.role, table):
            message = f"{session.role.name} may not subscribe to {table.name}"
            return Task(request_id, error=ProtocolError(ErrorCode.PERMISSION_DENIED, message), table=table)
        try:
            request = LAYOUTS[table].subscribe.decode(payload)
        except ProtocolError as error:
            return Task(request_id, error=error, table=table)
        return Task(
            request_id,
            route=_Handler(lambda _: self._subscribe(session, table, request_id, request)),
            table=table,
        )

    async def _subscribe(self, session: Outlet, table: SQLTable, request_id: int, request: dict) -> Answer:
        live = session.subscriptions
        if request_id in live:
            raise Conflict(f"request_id {request_id} already names a live subscription on this connection")
        filters = _filters(table, request)
        # What committed before this SUBSCRIBE is numbered first: "after the
        # confirmation" must not include a write the client already saw answered.
        await self.feed.number()
        head = await self.feed.read_head()
        position = request["from_position"]
        if position is None:
            position = head.last_position
        elif position > head.last_position:
            raise Invalid(f"position {position} is ahead of the change log (its last is {head.last_position})")
        head.keeps(position)
        if session.closed:
            raise Closing("the session is closing")
        subscription = Subscription(self.feed, table, request_id, filters, position, session)
        live[request_id] = subscription
        return Answer(SUBSCRIBED.encode({"position": position}), subscription.start)

    async def _cancel(self, session: Outlet, request_id: int) -> bytes:
        subscription = session.subscriptions.pop(request_id, None)
        if subscription is None:
            raise Missing(f"no live subscription {request_id} on this connection")
        subscription.end()
        return SUBSCRIBED.encode({"position": subscription.position})


def _filters(table: SQLTable, request: dict) -> dict[str, list]:
    """Each filter column's values, checked and normalised as the column's kind does (upper-case symbols, UUIDs)."""
    columns = LAYOUTS[table].table
    if request["symbols"] and "symbol" not in columns.by_name:
        raise Invalid(f"{table.name} has no symbol: symbols must be empty")
    filters = {}
    for column in columns.filters:
        field = "symbols" if column == "symbol" else f"{column}s"
        check = columns.by_name[column].check
        values = []
        for value in request[field]:
            try:
                values.append(check(value))
            except ValueError as error:
                raise Invalid(f"{field}: {value!r} {error}") from None
        filters[column] = values
    return filters
