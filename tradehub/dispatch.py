"""
Requests to controllers: one registry maps (command, table) to a route, and
every failure becomes a typed L{ProtocolError} for the ERROR frame.
"""

import attrs

from .errors import as_protocol_error


@attrs.frozen
class Route:
    """
    How one (command, table) is served. C{handle(value)} answers one
    decoded request with its RESPONSE payload (bytes; the session splits a
    large one over several frames). C{handle_group(values)}, when given,
    serves consecutive requests of the same route in one go, returning one
    payload or ProtocolError per request: the lane may coalesce them.
    """

    command: object
    table: object
    request: object
    handle: object
    handle_group: object = None


class Registry:
    def __init__(self, routes=()):
        self._routes = {}
        for route in routes:
            self.add(route)

    def add(self, route):
        key = (route.command, route.table)
        if key in self._routes:
            raise ValueError(f"{route.command.name} {route.table.name} is registered twice")
        self._routes[key] = route

    def route(self, command, table):
        return self._routes.get((command, table))


async def serve_one(route, value):
    """Run one request; any failure comes back as a ProtocolError value, not raised."""
    try:
        return await route.handle(value)
    except Exception as error:
        return as_protocol_error(error)


async def serve_group(route, values):
    """
    Run coalesced requests together; if the group fails as a whole, run them
    one by one so that each gets its own correct answer (the failed group
    wrote nothing: it was one transaction).
    """
    if len(values) == 1:
        return [await serve_one(route, values[0])]
    try:
        return await route.handle_group(values)
    except Exception:
        return [await serve_one(route, value) for value in values]
