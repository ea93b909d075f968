"""
One client connection: framing, the handshake, heartbeats, backpressure,
ordered answers and the shutdown drain.

States: AWAITING_HELLO → READY → DRAINING → CLOSED. Every request that
receives an answer is answered through the connection's lane, so answers
(errors included) leave in the order the requests arrived.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..db.fairness import working_for
from ..protocol.enums import (
    SUPPORTED_VERSIONS,
    ErrorCode,
    MessageType,
    Role,
    ShutdownReason,
)
from ..protocol.errors import ProtocolError
from ..protocol.framing import FrameDecoder
from ..protocol.messages import ERROR, HELLO, HELLO_ACK, SHUTDOWN, SHUTDOWN_ACK, HelloAck, encode_frame, split_frames
from .connection import Connection, Timers, bound_send_buffer, describe, write_now
from .lanes import Answer, Lane, Task
from .requests import RequestFrames, admit
from .routes import as_protocol_error, serve_group

SERVER_NAME = "tradehub"
SILENT_INTERVALS = 3
# A connection being closed whose peer does not read what is left is cut off.
CLOSE_GRACE = 5.0


if TYPE_CHECKING:
    from .hub import HubFactory


class State(enum.Enum):
    AWAITING_HELLO = "awaiting hello"
    READY = "ready"
    DRAINING = "draining"
    CLOSED = "closed"


_NEXT_STATES = {
    State.AWAITING_HELLO: {State.READY, State.CLOSED},
    State.READY: {State.DRAINING, State.CLOSED},
    State.DRAINING: {State.CLOSED},
    State.CLOSED: set(),
}


@implementer(IPushProducer)
class HubProtocol(Protocol):
    """
    The server side of one connection. It is the producer of its lane and a
    push producer for its transport: when the transport's write buffer is
    full the lane stops, and when too many requests wait unanswered the
    transport stops being read.
    """

    log = Logger()
    transport: Connection  # type: ignore[assignment]

    def __init__(self, hub: HubFactory) -> None:
        self.hub = hub
        self.clock = hub.clock
        self.state = State.AWAITING_HELLO
        self.session_id = 0
        self.role: Role | None = None
        self.client_name = ""
        self.peer = ""
        self.in_flight = 0
        self.in_flight_bytes = 0
        self.completed_since_shutdown: int | None = None
        self._decoder = FrameDecoder(hub.max_frame)
        self._requests = RequestFrames(hub.max_request)
        self._lane: Lane | None = None
        self._reading_paused = False
        self._handling_read = False
        self._deadline_over = False
        self._writes_paused: Deferred[None] | None = None
        self._timers = Timers(self.clock)
        self._last_sent = self._last_received = 0.0
        # While a group's answers are made, their frames wait here to leave in one write.
        self._held: list[bytes] | None = None
        # Live push subscriptions, by the request_id that names them.
        self.subscriptions: dict[int, Any] = {}
        self._frame_handlers = {
            MessageType.REQUEST: self._on_request,
            MessageType.SUBSCRIBE: self._on_subscribe,
            MessageType.HEARTBEAT: self._on_heartbeat,
            MessageType.SHUTDOWN: self._on_shutdown,
            MessageType.SHUTDOWN_ACK: self._on_shutdown_ack,
        }

    @property
    def lane(self) -> Lane:
        """The session's ordered lane: it exists from the handshake on."""
        assert self._lane is not None, "no lane before the handshake"
        return self._lane

    @property
    def queued(self) -> int:
        """Requests not started yet (none before the handshake): read by the metrics, from a scrape's thread."""
        lane = self._lane
        return 0 if lane is None else lane.queued

    # Logging

    def _log(self, level, text, **fields):
        getattr(self.log, level)(
            "session {session_id} {role} {client_name!r} {peer}: " + text,
            session_id=self.session_id,
            role=self.role.name if self.role else "-",
            client_name=self.client_name,
            peer=self.peer,
            **fields,
        )

    # Connection life

    def connectionMade(self):
        # Answers are small and latency matters: no Nagle delay (TCP only; unix sockets have none).
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)
        if self.hub.send_buffer is not None:
            bound_send_buffer(self.transport, self.hub.send_buffer)
        self.peer = describe(self.transport.getPeer())
        self._last_received = self.clock.seconds()
        self.transport.registerProducer(self, True)
        self._timers.schedule("handshake", self.hub.handshake_timeout, self._handshake_timed_out)
        self.hub.sessions.add(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        was = self.state
        self._enter(State.CLOSED)
        self._end_subscriptions()
        self._timers.cancel_all()
        if self._lane is None:
            self.hub.sessions.discard(self)
            return
        self._drop_pending("connection lost")
        if was is not State.CLOSED:
            self._log("info", "connection closed: {reason}", reason=reason.getErrorMessage())
        self._lane.close().addBoth(lambda _: self.hub.sessions.discard(self))

    def dataReceived(self, data):
        if self.state is State.CLOSED:
            return
        self._last_received = self.clock.seconds()
        self.hub.metrics.bytes_received += len(data)
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as error:
            self._fail_and_close(error, request_id=0)
            return
        self._handling_read = True
        try:
            for frame in frames:
                if self.state is State.CLOSED:
                    return
                if self.state is State.AWAITING_HELLO:
                    self._on_first_frame(frame)
                else:
                    self._on_frame(frame)
        finally:
            self._handling_read = False
        self._end_drain_if_done()

    # Handshake

    def _on_first_frame(self, frame):
        header = frame.header
        if header.type != MessageType.HELLO:
            self._fail_and_close(
                ProtocolError(ErrorCode.NOT_HANDSHAKEN, "the first frame must be HELLO"), header.request_id
            )
            return
        try:
            hello = HELLO.decode(frame.payload)
        except ProtocolError as error:
            self._fail_and_close(error, header.request_id)
            return
        self.client_name = hello.client_name
        version = _choose_version(hello.min_version, hello.max_version)
        if version is None:
            self._fail_and_close(
                ProtocolError(
                    ErrorCode.UNSUPPORTED_VERSION,
                    f"client speaks {hello.min_version}..{hello.max_version}, server speaks {list(SUPPORTED_VERSIONS)}",
                ),
                header.request_id,
            )
            return
        if not self.hub.authenticate(hello.role, hello.token):
            self._fail_and_close(ProtocolError(ErrorCode.AUTH_FAILED, "unknown role or wrong token"), header.request_id)
            return
        self.role = Role(hello.role)
        self.session_id = self.hub.next_session_id()
        self._enter(State.READY)
        self._timers.cancel("handshake")
        ack = HelloAck(
            version=version,
            session_id=self.session_id,
            heartbeat_ms=self.hub.heartbeat_ms,
            max_frame=self.hub.max_frame,
            max_in_flight=self.hub.max_in_flight,
            server_name=SERVER_NAME,
        )
        self._send(MessageType.HELLO_ACK, HELLO_ACK.encode(ack), header.request_id)
        self._lane = Lane(self._execute, self._writable, self._end_drain_if_done)
        self._lane.start()
        self._timers.schedule("heartbeat", self.hub.heartbeat, self._heartbeat_due)
        self._timers.schedule("silence", self.hub.heartbeat * SILENT_INTERVALS, self._silence_check)
        self._log("info", "handshake done (protocol v{version})", version=version)

    def _handshake_timed_out(self):
        self._timers.fired("handshake")
        self._fail_and_close(
            ProtocolError(ErrorCode.NOT_HANDSHAKEN, f"no HELLO within {self.hub.handshake_timeout:g}s"), 0
        )

    # Frames after the handshake

    def _on_frame(self, frame):
        handler = self._frame_handlers.get(frame.header.type, self._on_unexpected_type)
        handler(frame)

    def _on_request(self, frame):
        for task in self._requests.add(frame.header, frame.payload, self._task_for):
            self._push(task)

    def _task_for(self, header, payload):
        if self.state is State.DRAINING:
            return Task(header.request_id, error=ProtocolError(ErrorCode.SHUTTING_DOWN, "the session is shutting down"))
        return admit(self.hub.registry, self.role, header, payload)

    def _on_subscribe(self, frame):
        header = frame.header
        if self.state is State.DRAINING:
            task = Task(header.request_id, error=ProtocolError(ErrorCode.SHUTTING_DOWN, "the session is shutting down"))
        elif self.hub.subscriptions is None:
            task = Task(header.request_id, error=ProtocolError(ErrorCode.UNKNOWN_TYPE, "push is off on this hub"))
        else:
            task = self.hub.subscriptions.task(self, header, frame.payload)
        self._push(task)

    # What a subscription needs of its session (changes.subscription.Outlet)

    @property
    def max_frame(self) -> int:
        return self.hub.max_frame

    @property
    def closed(self) -> bool:
        return self.state is not State.READY

    def send_events(self, frames: bytes, count: int) -> None:
        if self.state is not State.CLOSED:
            self.hub.metrics.events_sent += count
            self._write(frames)

    def writable(self) -> Deferred[None] | None:
        return self._writes_paused

    def subscription_failed(self, request_id: int, error: Exception) -> None:
        self.subscriptions.pop(request_id, None)
        if self.state is not State.CLOSED:
            self._send_error(as_protocol_error(error), request_id)

    def _end_subscriptions(self) -> None:
        """SHUTDOWN from either side, or the connection's end, ends every subscription: clients resume by position."""
        subscriptions, self.subscriptions = self.subscriptions, {}
        for subscription in subscriptions.values():
            subscription.end()

    def _on_heartbeat(self, frame):
        """Receiving it already proved liveness; nothing answers it."""

    def _on_shutdown(self, frame):
        try:
            SHUTDOWN.decode(frame.payload)
        except ProtocolError as error:
            self._push(Task(frame.header.request_id, error=error))
            return
        if self.state is not State.READY:
            return
        self._log("info", "client asked to shut down with {pending} requests pending", pending=self.in_flight)
        self._enter(State.DRAINING)
        self._end_subscriptions()
        self.completed_since_shutdown = 0

    def _on_shutdown_ack(self, frame):
        self._log("info", "client acknowledged the shutdown")

    def _on_unexpected_type(self, frame):
        header = frame.header
        try:
            name = MessageType(header.type).name
        except ValueError:
            message = f"unknown message type {header.type}"
        else:
            message = f"{name} is not accepted from a client"
        self._push(Task(header.request_id, error=ProtocolError(ErrorCode.UNKNOWN_TYPE, message)))

    # The lane

    def _push(self, task):
        task.arrived = self._last_received
        self.in_flight += 1
        self.in_flight_bytes += task.size
        self.lane.push(task)
        full = self.in_flight >= self.hub.max_in_flight or self.in_flight_bytes >= self.hub.max_in_flight_bytes
        if full and not self._reading_paused and self.state is not State.CLOSED:
            self._reading_paused = True
            self.transport.pauseProducing()

    async def _execute(self, tasks):
        # The pool schedules this connection's database work fairly against the others'.
        working_for(self)
        first = tasks[0]
        results: Sequence[Any]
        if first.error is not None:
            results = [first.error]
        else:
            results = await serve_group(first.route, [task.value for task in tasks])
        self._held = []
        try:
            for task, result in zip(tasks, results, strict=True):
                self._answer(task, result)
        finally:
            self._release_held()

    def _answer(self, task, result):
        self.in_flight -= 1
        self.in_flight_bytes -= task.size
        if self.completed_since_shutdown is not None:
            self.completed_since_shutdown += 1
        if isinstance(result, ProtocolError) and result.cause is not None:
            self.log.failure(
                "session {session_id} {role} {client_name!r} {peer}: internal error serving request {request_id}",
                result.cause,
                session_id=self.session_id,
                role=self.role.name if self.role else "-",
                client_name=self.client_name,
                peer=self.peer,
                request_id=task.request_id,
            )
        if self.state is State.CLOSED:
            return
        if isinstance(result, ProtocolError):
            self._send_error(result, task.request_id)
        elif isinstance(result, Answer):
            self._send_response(result.payload, task.request_id)
            result.then()
        else:
            self._send_response(result, task.request_id)
        self.hub.metrics.answered(task, result, self._last_sent - task.arrived)
        if (
            self._reading_paused
            and self.in_flight <= self.hub.low_water
            and self.in_flight_bytes <= self.hub.max_in_flight_bytes // 2
        ):
            self._reading_paused = False
            self.transport.resumeProducing()

    def _writable(self):
        return self._writes_paused

    # IPushProducer: the transport's write buffer

    def pauseProducing(self):
        if self._writes_paused is None:
            self._writes_paused = Deferred()

    def resumeProducing(self):
        if self._writes_paused is not None:
            waiter, self._writes_paused = self._writes_paused, None
            waiter.callback(None)

    def stopProducing(self):
        self.resumeProducing()

    # Heartbeats

    def _heartbeat_due(self):
        idle = self.clock.seconds() - self._last_sent
        if idle >= self.hub.heartbeat:
            self._send(MessageType.HEARTBEAT)
            idle = 0
        self._timers.schedule("heartbeat", self.hub.heartbeat - idle, self._heartbeat_due)

    def _silence_check(self):
        silent = self.clock.seconds() - self._last_received
        limit = self.hub.heartbeat * SILENT_INTERVALS
        if silent >= limit:
            self._timers.fired("silence")
            # A peer that is alive but broke the heartbeat rule reads why; one that is gone costs the grace at most.
            self._fail_and_close(
                ProtocolError(
                    ErrorCode.BAD_FRAME,
                    f"nothing received for {silent:.1f}s ({SILENT_INTERVALS} heartbeat intervals)",
                ),
                0,
            )
            return
        self._timers.schedule("silence", limit - silent, self._silence_check)

    # Server-initiated shutdown

    def server_shutdown(self, deadline):
        """
        Tell the client the server is stopping, answer what was received,
        refuse what comes later, and close once the lane is empty. Fires
        when this session is closed.
        """
        closed: Deferred[None] = Deferred()
        self.hub.when_gone(self, closed)
        if self.state is State.AWAITING_HELLO:
            self._close()
            return closed
        if self.state is State.READY:
            self._enter(State.DRAINING)
            self._end_subscriptions()
            payload = SHUTDOWN.encode(
                {
                    "reason": ShutdownReason.SERVER_STOPPING,
                    "deadline_ms": int(deadline * 1000),
                    "message": "tradehub is stopping",
                }
            )
            self._send(MessageType.SHUTDOWN, payload)
            self._end_drain_if_done()
        self._timers.schedule("deadline", deadline, self._deadline_passed)
        return closed

    def _deadline_passed(self):
        self._timers.fired("deadline")
        if self.state is not State.DRAINING:
            return
        refused = self.lane.fail_pending(
            ProtocolError(ErrorCode.SHUTTING_DOWN, "the shutdown deadline passed before this request ran")
        )
        if refused:
            self._log("warn", "shutdown deadline passed with {count} requests not started", count=refused)
        self._deadline_over = True
        self._end_drain_if_done()

    # Both shutdowns

    def _end_drain_if_done(self):
        """
        A draining session ends once every request it has received is
        answered: none queued or running, none among the frames of the read
        being handled, and none partly in (the rest of a frame, or of a chunked
        request, may be in the next read). Past the deadline a request partly
        in is no longer waited for.
        """
        if self.state is not State.DRAINING or self._handling_read or len(self.lane):
            return
        partly_in = self._decoder.buffered or self._requests.unfinished
        if partly_in and not self._deadline_over:
            return
        if self.completed_since_shutdown is not None:
            # The client asked to shut down.
            self._send(MessageType.SHUTDOWN_ACK, SHUTDOWN_ACK.encode({"completed": self.completed_since_shutdown}))
        self._close()

    # Writing and closing

    def _send(self, message_type, payload=b"", request_id=0):
        self._write(encode_frame(message_type, payload, request_id))

    def _send_response(self, payload, request_id):
        self._write(split_frames(MessageType.RESPONSE, payload, request_id, self.hub.max_frame))

    def _write(self, frames):
        self._last_sent = self.clock.seconds()
        self.hub.metrics.bytes_sent += len(frames)
        if self._held is not None:
            self._held.append(frames)
        else:
            write_now(self.transport, frames)

    def _release_held(self):
        held, self._held = self._held, None
        if held:
            write_now(self.transport, b"".join(held))

    def _send_error(self, error, request_id):
        payload = ERROR.encode({"code": error.code, "row_index": error.row_index, "message": error.message[:4000]})
        self._send(MessageType.ERROR, payload, request_id)

    def _fail_and_close(self, error, request_id):
        self._log("warn", "{code}: {message}; closing", code=error.code.name, message=error.message)
        self._send_error(error, request_id)
        self._close()

    def _close(self):
        """
        Close after everything written has been sent. On TCP the write side
        closes first and what the client still sends is read and dropped:
        closing with unread data makes the kernel send RST, which can destroy
        answers the client has not read yet.
        """
        if self.state is State.CLOSED:
            return
        self._release_held()
        self._enter(State.CLOSED)
        self._end_subscriptions()
        self._drop_pending("closing")
        self.transport.unregisterProducer()
        # Nothing is written from now on: a lane waiting for the write buffer must not wait for it.
        self.stopProducing()
        if hasattr(self.transport, "loseWriteConnection"):
            if self._reading_paused:
                self._reading_paused = False
                self.transport.resumeProducing()
            self.transport.loseWriteConnection()
        else:
            self.transport.loseConnection()
        self._timers.schedule("abort", CLOSE_GRACE, self.transport.abortConnection)

    def _drop_pending(self, why):
        """Requests not started when the session ends are not executed: no answer could tell their outcome."""
        if self._lane is None:
            return
        dropped = self._lane.discard_pending()
        if dropped:
            self._log(
                "warn", "{why} with {count} requests not started; they were not executed", why=why, count=len(dropped)
            )
        self.in_flight -= len(dropped)
        self.in_flight_bytes -= sum(task.size for task in dropped)

    def _enter(self, state):
        if state is self.state:
            return
        if state not in _NEXT_STATES[self.state]:
            raise RuntimeError(f"session cannot go from {self.state.value} to {state.value}")
        self.state = state


def _choose_version(low, high):
    common = [v for v in SUPPORTED_VERSIONS if low <= v <= high]
    return max(common) if common else None
