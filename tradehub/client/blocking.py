"""
A blocking client for ordinary synchronous Python (ML trainers, scripts):
plain sockets, the protocol package's own layouts, typed errors.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from typing import Any

from ..protocol.enums import FLAG_CANCEL, FLAG_MORE, MessageType, Role, ShutdownReason, SQLCommand, SQLTable
from ..protocol.framing import Frame, FrameDecoder
from ..protocol.messages import (
    ERROR,
    HELLO,
    HELLO_ACK,
    SHUTDOWN,
    SHUTDOWN_ACK,
    SUBSCRIBED,
    Header,
    Shutdown,
    ShutdownAck,
    encode_frame,
)
from .calls import Event, Result, TableCalls, decode_event, decode_result, request_frames, subscribe_payload
from .errors import HubError, ShuttingDown, raise_for_error, shutting_down


class BlockingClient(TableCalls):
    """
    One connection to the hub. Use as a context manager: leaving it sends
    SHUTDOWN, waits for SHUTDOWN_ACK and closes. C{hub_shutdown} is the
    hub's own SHUTDOWN once one has come: calls after it raise L{ShuttingDown}.
    """

    def __init__(
        self, host: str, port: int, role: Role, token: str, client_name: str = "python-blocking", timeout: float = 30.0
    ) -> None:
        self.role = Role(role)
        self._socket = socket.create_connection((host, port), timeout=timeout)
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._decoder = FrameDecoder(1 << 31)
        self._frames: deque[Frame] = deque()
        # Frames that arrived for a request_id other than the one being read:
        # a subscription's EVENTs while a request waits for its answer, and the reverse.
        self._held: defaultdict[int, deque[Frame]] = defaultdict(deque)
        self._next_id = 1
        self._send_lock = threading.Lock()
        self._last_sent = time.monotonic()
        self.hub_shutdown: Shutdown | None = None
        self.session = self._handshake(client_name, token)
        self._closing = threading.Event()
        threading.Thread(target=self._keep_alive, name="tradehub-heartbeat", daemon=True).start()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, data):
        with self._send_lock:
            self._socket.sendall(data)
            self._last_sent = time.monotonic()

    def _keep_alive(self):
        """Between calls (a trainer may think for minutes) send HEARTBEAT so the hub keeps the session."""
        interval = self.session.heartbeat_ms / 1000
        while not self._closing.wait(interval / 2):
            if time.monotonic() - self._last_sent >= interval:
                try:
                    self._send(encode_frame(MessageType.HEARTBEAT))
                except OSError:
                    return

    def _handshake(self, client_name, token):
        payload = HELLO.encode(
            {"role": self.role, "min_version": 1, "max_version": 1, "client_name": client_name, "token": token}
        )
        self._send(encode_frame(MessageType.HELLO, payload))
        header, payload = self.read_frame()
        if header.type == MessageType.ERROR:
            raise_for_error(ERROR.decode(payload))
        if header.type != MessageType.HELLO_ACK:
            raise HubError(0, f"expected HELLO_ACK, got message type {header.type}")
        return HELLO_ACK.decode(payload)

    def next_request_id(self) -> int:
        request_id, self._next_id = self._next_id, self._next_id + 1
        return request_id

    def send_request(self, command: SQLCommand, table: SQLTable, payload: bytes, request_id: int | None = None) -> int:
        """Send one REQUEST without waiting; returns its request_id."""
        if self.hub_shutdown is not None:
            raise shutting_down(self.hub_shutdown)
        request_id = request_id or self.next_request_id()
        self._send(request_frames(payload, request_id, command, table, self.session.max_frame))
        return request_id

    def read_frame(self) -> tuple[Header, bytes]:
        """
        The next frame other than HEARTBEAT and SHUTDOWN, as (header, payload).
        The hub's SHUTDOWN is noted, not returned: answers to what was sent
        before it still follow.
        """
        frame = self._held_frame() or self._receive()
        return frame.header, frame.payload

    def _held_frame(self, request_id: int | None = None) -> Frame | None:
        """The oldest held frame of C{request_id} (of any request when None), or None."""
        for held_id in [request_id] if request_id is not None else list(self._held):
            frames = self._held.get(held_id)
            if frames:
                frame = frames.popleft()
                if not frames:
                    del self._held[held_id]
                return frame
        return None

    def _receive(self) -> Frame:
        while True:
            while not self._frames:
                data = self._socket.recv(65536)
                if not data:
                    if self.hub_shutdown is not None:
                        raise shutting_down(self.hub_shutdown)
                    raise ConnectionError("the hub closed the connection")
                self._frames.extend(self._decoder.feed(data))
            frame = self._frames.popleft()
            if frame.header.type == MessageType.SHUTDOWN:
                self.hub_shutdown = SHUTDOWN.decode(frame.payload)
            elif frame.header.type != MessageType.HEARTBEAT:
                return frame

    def _frame_for(self, request_id: int) -> Frame:
        """The next frame of C{request_id}; frames of others are held for whoever reads them."""
        held = self._held_frame(request_id)
        if held is not None:
            return held
        while True:
            frame = self._receive()
            if frame.header.request_id == request_id:
                return frame
            self._held[frame.header.request_id].append(frame)

    def _message(self, request_id: int) -> tuple[Header, list[bytes]]:
        """One whole message of C{request_id}: its header and its frames' payloads, or the hub's ERROR raised."""
        payloads = []
        while True:
            frame = self._frame_for(request_id)
            if frame.header.type == MessageType.ERROR:
                raise_for_error(ERROR.decode(frame.payload))
            payloads.append(frame.payload)
            if not frame.header.flags & FLAG_MORE:
                return frame.header, payloads

    def read_answer(self, request_id: int) -> list[bytes]:
        """
        The RESPONSE payloads answering request_id (several when chunked), or
        the hub's ERROR raised as a typed exception. Frames of other requests
        and subscriptions that come first are kept for their readers.
        """
        return self._message(request_id)[1]

    def call(self, command: SQLCommand, table: SQLTable, payload: bytes) -> list[bytes]:
        """One request, its answer."""
        return self.read_answer(self.send_request(command, table, payload))

    def execute(self, command: SQLCommand, table: SQLTable, payload: bytes) -> Result:
        """One table command; the answer decoded as a L{Result}."""
        return decode_result(table, b"".join(self.call(command, table, payload)))

    def select_all(self, table: SQLTable, page_size: int = 1000, **query: Any) -> Iterator[dict]:
        """Every matching row, page by page: constant memory however many rows there are."""
        after = None
        while True:
            page = self.select(table, limit=page_size, after=after, **query)
            yield from page.rows
            if page.next_cursor is None:
                return
            after = page.next_cursor

    def subscribe(
        self, table: SQLTable, *, symbols: Iterable[str] = (), from_position: int | None = None, **filters: Any
    ) -> Subscription:
        """
        Follow a table's committed changes: iterate the result for L{Event}s.
        C{from_position} (the last position processed) replays what came
        after it first; C{filters} are the table's own (model_ids=,
        account_ids=, names=). Requests still work on this connection; events
        that arrive meanwhile wait in memory for the iteration.
        """
        payload = subscribe_payload(table, from_position, symbols, **filters)
        if self.hub_shutdown is not None:
            raise shutting_down(self.hub_shutdown)
        request_id = self.next_request_id()
        self._send(encode_frame(MessageType.SUBSCRIBE, payload, request_id, table=SQLTable(table)))
        answer = SUBSCRIBED.decode(b"".join(self.read_answer(request_id)))
        return Subscription(self, SQLTable(table), request_id, answer.position)

    def _next_event(self, request_id: int) -> Event:
        header, payloads = self._message(request_id)
        if header.type != MessageType.EVENT:
            raise HubError(0, f"expected an EVENT of subscription {request_id}, got message type {header.type}")
        return decode_event(header.command, header.table, b"".join(payloads))

    def _cancel(self, request_id: int, table: SQLTable) -> int:
        """End a subscription; events it had not handed out yet are dropped. Returns its last position."""
        self._send(encode_frame(MessageType.SUBSCRIBE, b"", request_id, table=table, flags=FLAG_CANCEL))
        while True:
            header, payloads = self._message(request_id)
            if header.type == MessageType.RESPONSE:
                return SUBSCRIBED.decode(b"".join(payloads)).position

    def close(self) -> ShutdownAck | None:
        """
        Clean shutdown: SHUTDOWN, wait for SHUTDOWN_ACK, close. Returns the
        ack, or None when the hub closed first (a hub shutting down itself
        answers no SHUTDOWN: it closes once it has answered what it received).
        """
        self._closing.set()
        try:
            payload = SHUTDOWN.encode({"reason": ShutdownReason.CLIENT_DONE, "deadline_ms": 10000, "message": "done"})
            self._send(encode_frame(MessageType.SHUTDOWN, payload))
            while True:
                header, payload = self.read_frame()
                if header.type == MessageType.SHUTDOWN_ACK:
                    return SHUTDOWN_ACK.decode(payload)
        except (OSError, ShuttingDown):
            return None
        finally:
            self._socket.close()


class Subscription:
    """
    A live subscription of a L{BlockingClient}: iterating it blocks for the
    next L{Event}. C{position} is the last position handed out (the one to
    resume from on another connection). A POSITION_EXPIRED, or any error
    that ends the subscription, is raised from the iteration.
    """

    def __init__(self, client: BlockingClient, table: SQLTable, request_id: int, position: int) -> None:
        self.client = client
        self.table = table
        self.request_id = request_id
        self.position = position
        self.cancelled = False

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> Event:
        if self.cancelled:
            raise StopIteration
        event = self.client._next_event(self.request_id)
        self.position = event.position
        return event

    def cancel(self) -> int:
        """End it; returns the position it was current to at the hub."""
        if self.cancelled:
            return self.position
        self.cancelled = True
        return self.client._cancel(self.request_id, self.table)
