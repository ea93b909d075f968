"""
A REQUEST on its way to the lane: joined from its MORE frames, then
admitted in the contract's order of checks (command, table, permission,
route, payload) into a Task that carries its route and decoded value, or
the error that answers it.
"""

from ..protocol import permissions
from ..protocol.enums import FLAG_MORE, ErrorCode, SQLCommand, SQLTable
from ..protocol.errors import ProtocolError
from .lanes import Task


def admit(registry, role, header, payload):
    """The task for one whole request: checks in order, the first that fails answers it."""
    task = Task(header.request_id, command=header.command, table=header.table, size=len(payload))
    key = (role, header.command, header.table)
    route = registry.admitted.get(key)
    if route is None:
        route = _route(registry, role, header.command, header.table)
        if isinstance(route, ProtocolError):
            task.error = route
            return task
        # The same bytes pass the same checks: the next request of this kind skips them.
        registry.admitted[key] = route
    task.route = route
    try:
        task.value = route.request.decode(payload)
    except ProtocolError as error:
        task.error = error
    return task


def _route(registry, role, command, table):
    """The route of a request's command and table bytes, or the error of the first check they fail."""
    try:
        command = SQLCommand(command)
    except ValueError:
        return ProtocolError(ErrorCode.UNKNOWN_COMMAND, f"unknown command {command}")
    try:
        table = SQLTable(table)
    except ValueError:
        return ProtocolError(ErrorCode.UNKNOWN_TABLE, f"unknown table {table}")
    if not permissions.allowed(role, command, table):
        return ProtocolError(ErrorCode.PERMISSION_DENIED, f"role {role.name} may not {command.name} {table.name}")
    route = registry.route(command, table)
    if route is None:
        return ProtocolError(ErrorCode.INTERNAL, f"{command.name} {table.name} is not implemented yet")
    return route


class RequestFrames:
    """
    A connection's REQUEST frames joined into whole requests: a frame with
    MORE opens or extends its request_id's request, the next frame without
    MORE ends it, and a frame of another request_id interrupts it.
    """

    def __init__(self, max_request):
        self.max_request = max_request
        self._open = None

    @property
    def unfinished(self):
        """A chunked request has begun and its last frame has not come yet."""
        return self._open is not None

    def add(self, header, payload, admit):
        """The tasks this frame completes, in order; C{admit(header, payload)} makes a whole request's task."""
        tasks = []
        chunked = self._open
        if chunked is not None and chunked.request_id != header.request_id:
            tasks.append(Task(chunked.request_id, error=chunked.interrupted()))
            self._open = chunked = None
        if header.flags & FLAG_MORE:
            if chunked is None:
                self._open = chunked = ChunkedRequest(header.request_id, self.max_request)
            chunked.add(payload)
            return tasks
        if chunked is None:
            tasks.append(admit(header, payload))
            return tasks
        self._open = None
        chunked.add(payload)
        if chunked.error is not None:
            tasks.append(Task(header.request_id, error=chunked.error, command=header.command, table=header.table))
        else:
            tasks.append(admit(header, chunked.joined()))
        return tasks


class ChunkedRequest:
    """
    A REQUEST whose payload comes in several frames (MORE set on all but the
    last), joined up to max_request bytes; beyond that its parts are dropped
    and the request is answered with MALFORMED_PAYLOAD.
    """

    def __init__(self, request_id, max_request):
        self.request_id = request_id
        self.max_request = max_request
        self.parts = []
        self.size = 0
        self.error = None

    def add(self, payload):
        self.size += len(payload)
        if self.error is not None:
            return
        if self.size > self.max_request:
            self.parts = []
            self.error = ProtocolError(
                ErrorCode.MALFORMED_PAYLOAD, f"the request is larger than the maximum of {self.max_request} bytes"
            )
            return
        self.parts.append(payload)

    def joined(self):
        return b"".join(self.parts)

    def interrupted(self):
        return self.error or ProtocolError(
            ErrorCode.MALFORMED_PAYLOAD, "another request began before this chunked request's last frame"
        )
