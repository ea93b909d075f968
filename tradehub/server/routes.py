"""
Requests to controllers: the only place where the wire meets rows. One
registry maps (command, table) to a route; a table's routes decode the
request, call its controller with rows, and encode the answer; every
failure becomes the typed L{ProtocolError} of the ERROR frame.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
from twisted.python.failure import Failure

from ..controllers import TableController
from ..db.failures import refusal
from ..errors import Busy, Closing, Conflict, Expired, Internal, Invalid, Missing, Refused, ServeAlone, Unavailable
from ..protocol.enums import ErrorCode, SQLCommand, SQLTable
from ..protocol.errors import ProtocolError
from ..protocol.tables import LAYOUTS, TableLayouts
from ..protocol.wire import Layout
from ..slices import in_slices

_CODES = {
    Invalid: ErrorCode.VALIDATION_FAILED,
    Missing: ErrorCode.NOT_FOUND,
    Conflict: ErrorCode.CONFLICT,
    Busy: ErrorCode.BUSY,
    Unavailable: ErrorCode.DB_UNAVAILABLE,
    Closing: ErrorCode.SHUTTING_DOWN,
    Expired: ErrorCode.POSITION_EXPIRED,
    Internal: ErrorCode.INTERNAL,
    # A refusal of no known kind is a bug of the hub's, not the client's.
    Refused: ErrorCode.INTERNAL,
}


@attrs.frozen
class Route:
    """
    How one (command, table) is served. C{handle(value)} answers one
    decoded request with its RESPONSE payload (bytes; the session splits a
    large one over several frames). C{handle_group(values)}, when given,
    serves consecutive requests of the same route in one go, returning one
    payload per request: the lane may coalesce them.
    """

    command: SQLCommand
    table: SQLTable
    request: Layout
    handle: Callable[[Any], Awaitable[bytes]]
    handle_group: Callable[[list], Awaitable[list[bytes]]] | None = None


class Registry:
    def __init__(self, routes: list[Route] | tuple[Route, ...] = ()) -> None:
        self._routes: dict[tuple[SQLCommand, SQLTable], Route] = {}
        # The route each (role, command byte, table byte) was admitted to (tradehub.server.requests);
        # only routes are kept, and a route is never replaced, so what is kept stays true.
        self.admitted: dict[tuple[Any, int, int], Route] = {}
        for route in routes:
            self.add(route)

    def add(self, route: Route) -> None:
        key = (route.command, route.table)
        if key in self._routes:
            raise ValueError(f"{route.command.name} {route.table.name} is registered twice")
        self._routes[key] = route

    def route(self, command: SQLCommand, table: SQLTable) -> Route | None:
        return self._routes.get((command, table))


def as_protocol_error(error: Exception) -> ProtocolError:
    """The typed error a client sees for any failure below the session."""
    if isinstance(error, ProtocolError):
        return error
    refused = error if isinstance(error, Refused) else refusal(error)
    if refused is not None:
        code = next(_CODES[kind] for kind in type(refused).__mro__ if kind in _CODES)
        return ProtocolError(code, refused.message, refused.row_index)
    return ProtocolError(ErrorCode.INTERNAL, f"internal error ({type(error).__name__})", cause=Failure(error))


async def serve_one(route: Route, value: Any) -> bytes | ProtocolError:
    """Run one request; any failure comes back as a ProtocolError value, not raised."""
    try:
        return await route.handle(value)
    except Exception as error:
        return as_protocol_error(error)


async def serve_group(route: Route, values: list) -> Sequence[bytes | ProtocolError]:
    """
    Run coalesced requests together. When a row of one of them is refused,
    the group wrote nothing (it was one transaction): run them one by one so
    that each gets its own answer. Any other failure (the database is
    unavailable, the hub is closing) is every request's answer at once.
    """
    if len(values) == 1:
        return [await serve_one(route, values[0])]
    assert route.handle_group is not None
    try:
        return await route.handle_group(values)
    except Exception as error:
        if _one_request_at_fault(error):
            return [await serve_one(route, value) for value in values]
        answer = as_protocol_error(error)
        return [answer] * len(values)


def _one_request_at_fault(error: Exception) -> bool:
    """Whether the failure comes from one request's rows, and so says nothing of the others'."""
    if isinstance(error, (Invalid, Missing, Conflict, ServeAlone)):
        return True
    return isinstance(error, Internal) and error.row_index >= 0


class TableRoutes:
    """The five commands of one table: decode, call the controller with rows, encode."""

    def __init__(self, controller: TableController, layouts: TableLayouts) -> None:
        self.controller = controller
        self.layouts = layouts

    def routes(self) -> list[Route]:
        table, request = self.layouts.table.id, self.layouts.request
        return [
            Route(SQLCommand.INSERT, table, request(SQLCommand.INSERT), self.insert, self.insert_group),
            Route(SQLCommand.UPSERT, table, request(SQLCommand.UPSERT), self.upsert),
            Route(SQLCommand.UPDATE, table, request(SQLCommand.UPDATE), self.update),
            Route(SQLCommand.DELETE, table, request(SQLCommand.DELETE), self.delete),
            Route(SQLCommand.SELECT, table, request(SQLCommand.SELECT), self.select),
        ]

    async def _answer(self, affected: int, rows: list, next_cursor: bytes | None = None) -> bytes:
        encoded = await in_slices(self.layouts.row.encode, rows)
        return self.layouts.answer(affected, encoded, next_cursor)

    async def _written(self, rows: list, echo: bool) -> bytes:
        """A write's answer: each row's key and what the hub set, and the rows themselves if asked."""
        written = await in_slices(self.layouts.written.encode, rows)
        encoded = await in_slices(self.layouts.row.encode, rows) if echo else []
        return self.layouts.answer(len(rows), encoded, written=written)

    async def insert(self, request: dict) -> bytes:
        rows = request["rows"]
        echo = self.controller.echoes(rows, request["echo"])
        return await self._written(await self.controller.insert(rows, echo), echo)

    async def insert_group(self, requests: list[dict]) -> list[bytes]:
        """Coalesced INSERTs: the rows come back as stored when any of them asked (each answer as it asked)."""
        batches = [request["rows"] for request in requests]
        echoes = [self.controller.echoes(request["rows"], request["echo"]) for request in requests]
        stored = await self.controller.insert_batches(batches, any(echoes))
        return [await self._written(rows, echo) for rows, echo in zip(stored, echoes, strict=True)]

    async def upsert(self, request: dict) -> bytes:
        rows = request["rows"]
        return await self._written(await self.controller.upsert(rows), self.controller.echoes(rows, request["echo"]))

    async def update(self, request: dict) -> bytes:
        rows = request["rows"]
        return await self._written(await self.controller.update(rows), self.controller.echoes(rows, request["echo"]))

    async def delete(self, request: dict) -> bytes:
        return await self._answer(await self.controller.delete(request["keys"]), [])

    async def select(self, request: dict) -> bytes:
        query = dict(request, position=self._position(request["after"]))
        page = await self.controller.select(query, self.layouts.row.encode)
        next_cursor = None
        if page.more:
            assert page.last is not None
            next_cursor = self.layouts.cursor.encode({name: page.last[name] for name in self.layouts.table.sort})
        return self.layouts.answer(len(page.rows), page.rows, next_cursor)

    def _position(self, after: bytes | None) -> dict | None:
        if after is None:
            return None
        try:
            return self.layouts.cursor.decode(after)
        except ProtocolError:
            raise Invalid("after is not a cursor of this table") from None


def build_registry(controllers: dict[SQLTable, TableController]) -> Registry:
    """Every table's routes, bound to its controller."""
    return Registry([route for table, c in controllers.items() for route in TableRoutes(c, LAYOUTS[table]).routes()])
