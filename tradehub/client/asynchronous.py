"""
The Twisted client, for services: pipelined requests answered by Deferreds,
chunked answers joined or streamed, push subscriptions beside them,
heartbeats, clean shutdown, and a ClientService that reconnects with backoff
and resumes its subscriptions where they were.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectionClosed
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..protocol.enums import FLAG_CANCEL, FLAG_MORE, MessageType, Role, ShutdownReason, SQLCommand, SQLTable
from ..protocol.errors import ProtocolError
from ..protocol.framing import FrameDecoder
from ..protocol.messages import (
    ERROR,
    HELLO,
    HELLO_ACK,
    SHUTDOWN,
    SHUTDOWN_ACK,
    SUBSCRIBED,
    Header,
    HelloAck,
    Shutdown,
    encode_frame,
)
from .calls import Event, Result, TableCalls, decode_event, decode_result, request_frames, subscribe_payload
from .errors import HubError, ShuttingDown, Unavailable, raise_for_error, shutting_down

SILENT_INTERVALS = 3


def _typed(error_payload):
    try:
        raise_for_error(ERROR.decode(error_payload))
    except HubError as error:
        return error


class HubClientProtocol(Protocol, TableCalls):
    """
    One connection. C{ready} fires with the HELLO_ACK; every call returns a
    Deferred that fires with its answer, or fails with a typed L{HubError}.
    Calls may be pipelined: answers come back in order. Subscriptions
    (L{subscribe}) share the connection with them. C{hub_shutdown} is the
    hub's own SHUTDOWN once one has come: calls after it fail with
    L{ShuttingDown}, and so do those the hub closes without answering.
    """

    log = Logger()
    transport: ITCPTransport

    def __init__(self, role: Role, token: str, client_name: str, clock: IReactorTime) -> None:
        self.role = Role(role)
        self._token = token
        self.client_name = client_name
        self.clock = clock
        self.ready: Deferred[HelloAck] = Deferred()
        self.session: HelloAck | None = None
        self.hub_shutdown: Shutdown | None = None
        self.closed: Deferred[None] = Deferred()
        self._decoder = FrameDecoder(1 << 31)
        self._pending: dict[int, tuple[Deferred[bytes], list[bytes]]] = {}
        # Subscriptions by the request_id that names them, while the hub may still send frames for them.
        self._subscriptions: dict[int, Subscription] = {}
        self._ids = itertools.count(1)
        self._shutdown: Deferred[int] | None = None
        self._heartbeat: IDelayedCall | None = None
        self._last_sent = self._last_received = 0.0

    def connectionMade(self):
        payload = HELLO.encode(
            {
                "role": self.role,
                "min_version": 1,
                "max_version": 1,
                "client_name": self.client_name,
                "token": self._token,
            }
        )
        self._write(encode_frame(MessageType.HELLO, payload))
        self._last_received = self.clock.seconds()

    def dataReceived(self, data):
        self._last_received = self.clock.seconds()
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as error:
            self._fail_all(HubError(error.code, error.message))
            self.transport.abortConnection()
            return
        for frame in frames:
            self._on_frame(frame.header, frame.payload)

    def _on_frame(self, header, payload):
        kind = header.type
        if kind == MessageType.HELLO_ACK:
            self.session = HELLO_ACK.decode(payload)
            self._heartbeat = self.clock.callLater(self.session.heartbeat_ms / 1000, self._tick)
            self.ready.callback(self.session)
        elif kind == MessageType.EVENT:
            subscription = self._subscriptions.get(header.request_id)
            if subscription is None:
                self.log.warn("hub event for no subscription ({request_id})", request_id=header.request_id)
            else:
                subscription._event_frame(header, payload)
        elif kind == MessageType.RESPONSE and header.request_id in self._subscriptions:
            self._subscriptions[header.request_id]._answered(payload)
        elif kind == MessageType.RESPONSE:
            waiter, parts = self._pending[header.request_id]
            parts.append(payload)
            if not header.flags & FLAG_MORE:
                del self._pending[header.request_id]
                waiter.callback(b"".join(parts))
        elif kind == MessageType.ERROR:
            error = _typed(payload)
            pending = self._pending.pop(header.request_id, None)
            if pending is not None:
                pending[0].errback(error)
            elif header.request_id in self._subscriptions:
                self._subscriptions[header.request_id]._refused(error)
            elif not self.ready.called:
                self.ready.errback(error)
            else:
                self.log.error("hub error for no request: {error}", error=str(error))
        elif kind == MessageType.SHUTDOWN:
            self.hub_shutdown = SHUTDOWN.decode(payload)
            self.log.info("the hub is stopping: {message}", message=self.hub_shutdown.message)
            for subscription in list(self._subscriptions.values()):
                subscription._hub_stopped(shutting_down(self.hub_shutdown))
        elif kind == MessageType.SHUTDOWN_ACK and self._shutdown is not None:
            self._shutdown.callback(SHUTDOWN_ACK.decode(payload).completed)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._heartbeat is not None and self._heartbeat.active():
            self._heartbeat.cancel()
        if self.hub_shutdown is not None:
            error: Exception = shutting_down(self.hub_shutdown)
        elif isinstance(reason.value, ConnectionClosed):
            error = reason.value
        else:
            error = ConnectionError(str(reason.value))
        if not self.ready.called:
            self.ready.errback(error)
        self._fail_all(error)
        subscriptions, self._subscriptions = self._subscriptions, {}
        for subscription in subscriptions.values():
            subscription._connection_lost(error)
        if self._shutdown is not None and not self._shutdown.called:
            self._shutdown.errback(error)
        self.closed.callback(None)

    def _fail_all(self, error):
        pending, self._pending = self._pending, {}
        for waiter, _ in pending.values():
            waiter.errback(Failure(error))

    # Heartbeats: send one when idle, cut a silent hub.

    def _tick(self):
        interval = self._handshaken().heartbeat_ms / 1000
        now = self.clock.seconds()
        if now - self._last_received >= interval * SILENT_INTERVALS:
            self.log.warn(
                "the hub has been silent for {seconds:.1f}s; disconnecting", seconds=now - self._last_received
            )
            self.transport.abortConnection()
            return
        if now - self._last_sent >= interval:
            self._write(encode_frame(MessageType.HEARTBEAT))
        self._heartbeat = self.clock.callLater(interval / 2, self._tick)

    def _write(self, data):
        self._last_sent = self.clock.seconds()
        self.transport.write(data)

    # Calls

    def call(self, command: SQLCommand, table: SQLTable, payload: bytes) -> Deferred[bytes]:
        """Send one REQUEST; the Deferred fires with its RESPONSE payload (joined when chunked)."""
        max_frame = self._handshaken().max_frame
        if self.hub_shutdown is not None:
            return fail(shutting_down(self.hub_shutdown))
        request_id = next(self._ids)
        waiter: Deferred[bytes] = Deferred()
        self._pending[request_id] = (waiter, [])
        self._write(request_frames(payload, request_id, command, table, max_frame))
        return waiter

    def _handshaken(self) -> HelloAck:
        if self.session is None:
            raise ConnectionError("the handshake with the hub is not done")
        return self.session

    def execute(self, command: SQLCommand, table: SQLTable, payload: bytes) -> Deferred[Result]:
        return self.call(command, table, payload).addCallback(lambda answer: decode_result(table, answer))

    async def select_all(self, table, page_size=1000, **query):
        """Every matching row, streamed page by page (an async generator)."""
        after = None
        while True:
            page = await self.select(table, limit=page_size, after=after, **query)
            for row in page.rows:
                yield row
            if page.next_cursor is None:
                return
            after = page.next_cursor

    def subscribe(
        self,
        table: SQLTable,
        *,
        symbols: Iterable[str] = (),
        from_position: int | None = None,
        on_event: Callable[[Event], object] | None = None,
        **filters: Any,
    ) -> Deferred[Subscription]:
        """
        Follow a table's committed changes; fires with the L{Subscription}
        once the hub confirms it, or fails with the hub's refusal (typed:
        L{PositionExpired} when C{from_position} is past retention).
        C{from_position} (the last position processed) replays what came
        after it first; None starts at the hub's present. C{filters} are the
        table's own (model_ids=, account_ids=, names=). Events go to
        C{on_event}, or without it to C{async for event in subscription}.
        """
        payload = subscribe_payload(table, from_position, symbols, **filters)
        self._handshaken()
        if self.hub_shutdown is not None:
            return fail(shutting_down(self.hub_shutdown))
        confirmed: Deferred[Subscription] = Deferred()
        subscription = Subscription(self, SQLTable(table), next(self._ids), on_event, confirmed)
        self._subscriptions[subscription.request_id] = subscription
        self._write(encode_frame(MessageType.SUBSCRIBE, payload, subscription.request_id, table=subscription.table))
        return confirmed

    def shutdown(self, message: str = "done") -> Deferred[int]:
        """SHUTDOWN, then wait for SHUTDOWN_ACK and the close; fires with the ack's completed count."""
        if self._shutdown is None:
            self._shutdown = Deferred()
            payload = SHUTDOWN.encode({"reason": ShutdownReason.CLIENT_DONE, "deadline_ms": 10000, "message": message})
            self._write(encode_frame(MessageType.SHUTDOWN, payload))
        completed = self._shutdown

        def closed(count):
            self.transport.loseConnection()
            return self.closed.addCallback(lambda _: count)

        return completed.addCallback(closed)


class _Outcome:
    """
    A result that comes once (a value, or a Failure), given to each who asks,
    before or after it came, as a Deferred of their own: an end nobody
    waited for is not reported as an unhandled error in a Deferred.
    """

    def __init__(self) -> None:
        self.settled = False
        self._result: Any = None
        self._waiting: list[Deferred[Any]] = []

    def observe(self) -> Deferred[Any]:
        if not self.settled:
            self._waiting.append(Deferred())
            return self._waiting[-1]
        return fail(self._result) if isinstance(self._result, Failure) else succeed(self._result)

    def settle(self, result: Any) -> bool:
        """Settle it, unless it already was (then False)."""
        if self.settled:
            return False
        self.settled, self._result = True, result
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
        return True


class Subscription:
    """
    A push subscription on one connection (L{HubClientProtocol.subscribe}).

    Its events go to its C{on_event} callback, called as each arrives (one
    that raises is logged; the subscription and the connection go on), or,
    without a callback, to C{async for event in subscription}. The iteration
    reads from an unbounded in-memory queue that is as long as the consumer
    is behind, as in the blocking client: a consumer that may fall far
    behind should take a callback and bound its own work.

    C{position} is the last position delivered (to the callback, or out of
    the iteration): the one to resume from on another connection. C{ended}
    fires when the subscription is over: normally once cancelled; with the
    hub's typed error when the hub ended it (L{PositionExpired} when it fell
    behind retention); with the connection's error, or L{ShuttingDown}, when
    the connection ends or the hub stops. An iteration ends the same way,
    after the events already received.
    """

    log = Logger()

    def __init__(
        self,
        protocol: HubClientProtocol,
        table: SQLTable,
        request_id: int,
        on_event: Callable[[Event], object] | None,
        confirmation: Deferred[Subscription],
    ) -> None:
        self.table = table
        self.request_id = request_id
        self.position = 0
        self._protocol = protocol
        self._on_event = on_event
        # Fires once the hub answers the SUBSCRIBE.
        self._confirmation: Deferred[Subscription] | None = confirmation
        self._parts: list[bytes] = []
        self._queue: deque[Event] = deque()
        self._readers: list[Deferred[Event | None]] = []
        self._ending = _Outcome()
        self._cancelled: _Outcome | None = None
        # The hub sends nothing more for it but the answer to a cancel in flight.
        self._over_at_hub = False

    @property
    def ended(self) -> Deferred[None]:
        """Fires when it is over (see the class): a Deferred of one's own at each access."""
        return self._ending.observe()

    def __aiter__(self) -> Subscription:
        if self._on_event is not None:
            raise TypeError("this subscription delivers its events to its on_event callback")
        return self

    async def __anext__(self) -> Event:
        if self._queue:
            return self._hand_out(self._queue.popleft())
        if not self._ending.settled:
            # A reader that gives up (its Deferred cancelled) takes no event with it.
            reader: Deferred[Event | None] = Deferred(self._readers.remove)
            self._readers.append(reader)
            event = await reader
            if event is not None:
                return event
        await self.ended
        raise StopAsyncIteration

    def cancel(self) -> Deferred[int]:
        """
        End it: nothing more is delivered (queued events are dropped) and
        C{ended} fires. The Deferred fires with the position the hub had it
        current to, or with C{position} when the hub can no longer say
        (it had ended it, or the connection is closing).
        """
        if self._cancelled is not None:
            return self._cancelled.observe()
        if self._ending.settled:
            return succeed(self.position)
        self._cancelled = _Outcome()
        self._finish(None)
        if self._protocol._shutdown is not None:
            # Our SHUTDOWN already ended it at the hub, which takes no cancel after it.
            self._cancelled.settle(self.position)
        else:
            cancel = encode_frame(MessageType.SUBSCRIBE, b"", self.request_id, table=self.table, flags=FLAG_CANCEL)
            self._protocol._write(cancel)
        return self._cancelled.observe()

    # The hub's frames for it, from the protocol

    def _answered(self, payload: bytes) -> None:
        """A RESPONSE: the SUBSCRIBE confirmed, or the cancel done; both carry the position."""
        position = SUBSCRIBED.decode(payload).position
        confirmation, self._confirmation = self._confirmation, None
        if confirmation is not None and self._protocol.hub_shutdown is not None:
            # Confirmed as the hub began to stop: its SHUTDOWN ended it before any event.
            self._forget()
            confirmation.errback(shutting_down(self._protocol.hub_shutdown))
        elif confirmation is not None:
            self.position = position
            confirmation.callback(self)
        elif self._cancelled is not None:
            self._forget()
            self._cancelled.settle(position)
        else:
            self.log.warn("hub answer for live subscription {request_id}", request_id=self.request_id)

    def _refused(self, error: HubError) -> None:
        """
        An ERROR: the SUBSCRIBE refused, the subscription ended by the hub,
        or, once the hub had ended it, the refusal of the cancel that crossed
        that end (the only frame still to come for it).
        """
        confirmation, self._confirmation = self._confirmation, None
        if confirmation is not None:
            self._forget()
            confirmation.errback(error)
        elif self._cancelled is not None and self._over_at_hub:
            self._forget()
            self._cancelled.settle(self.position)
        else:
            self._ended_by_hub(error)

    def _hub_stopped(self, error: ShuttingDown) -> None:
        """The hub's SHUTDOWN ended every subscription it had confirmed; a SUBSCRIBE in flight still gets an answer."""
        if self._confirmation is None:
            self._ended_by_hub(error)

    def _ended_by_hub(self, error: HubError) -> None:
        self._over_at_hub = True
        self._finish(Failure(error))
        if self._cancelled is None:
            self._forget()

    def _connection_lost(self, error: Exception) -> None:
        confirmation, self._confirmation = self._confirmation, None
        if confirmation is not None:
            confirmation.errback(error)
            return
        self._finish(Failure(error))
        if self._cancelled is not None:
            self._cancelled.settle(self.position)

    def _forget(self) -> None:
        self._protocol._subscriptions.pop(self.request_id, None)

    def _event_frame(self, header: Header, payload: bytes) -> None:
        """One frame of an EVENT; the last (no MORE flag) completes it."""
        if self._ending.settled:
            return
        self._parts.append(payload)
        if header.flags & FLAG_MORE:
            return
        event = decode_event(header.command, header.table, b"".join(self._parts))
        self._parts = []
        if self._on_event is not None:
            self.position = event.position
            try:
                self._on_event(event)
            except Exception:
                self.log.failure(
                    "subscription {request_id} to {table}: on_event failed on position {position}",
                    request_id=self.request_id,
                    table=self.table.name,
                    position=event.position,
                )
        elif self._readers:
            self._readers.pop(0).callback(self._hand_out(event))
        else:
            self._queue.append(event)

    def _hand_out(self, event: Event) -> Event:
        self.position = event.position
        return event

    def _finish(self, end: Failure | None) -> None:
        """Over: C{ended} fires and waiting readers wake to see the end (a cancel also drops the queue)."""
        if not self._ending.settle(end):
            return
        if end is None:
            self._queue.clear()
        readers, self._readers = self._readers, []
        for reader in readers:
            reader.callback(None)


class _HubClientFactory(Factory):
    noisy = False

    def __init__(self, role, token, client_name, clock):
        self.role, self.token, self.client_name, self.clock = role, token, client_name, clock

    def buildProtocol(self, addr):
        return HubClientProtocol(self.role, self.token, self.client_name, self.clock)


async def connect(reactor, description, role, token, client_name="python-twisted"):
    """Connect with a client endpoint string and complete the handshake; returns the protocol."""
    factory = _HubClientFactory(role, token, client_name, reactor)
    protocol = await clientFromString(reactor, description).connect(factory)
    await protocol.ready
    return protocol


class HubClientService(ClientService):
    """
    A connection kept up for a long-running service: reconnects with
    exponential backoff. C{session()} fires with a handshaken protocol;
    C{subscribe()} follows a table across reconnections.
    """

    def __init__(
        self, reactor: Any, description: str, role: Role, token: str, client_name: str = "python-service"
    ) -> None:
        factory = _HubClientFactory(role, token, client_name, reactor)
        self._retry_policy = backoffPolicy(initialDelay=0.2, maxDelay=10.0)
        self._clock: IReactorTime = reactor
        self._connection: HubClientProtocol | None = None
        self._standing: list[StandingSubscription] = []
        super().__init__(
            clientFromString(reactor, description),
            factory,
            retryPolicy=self._retry_policy,
            clock=reactor,
            prepareConnection=self._prepare,
        )

    def session(self) -> Deferred[HubClientProtocol]:
        return cast("Deferred[HubClientProtocol]", self.whenConnected(failAfterFailures=None))

    def subscribe(
        self,
        table: SQLTable,
        on_event: Callable[[Event], object],
        *,
        from_position: int | None = None,
        symbols: Iterable[str] = (),
        **filters: Any,
    ) -> StandingSubscription:
        """
        Follow a table on every connection this service makes: see
        L{StandingSubscription}. C{from_position} is the last position
        already processed (None: from the first connection's present).
        """
        # A wrong filter raises here, not on every connection.
        subscribe_payload(table, from_position, symbols, **filters)
        standing = StandingSubscription(self, SQLTable(table), on_event, from_position, list(symbols), filters)
        self._standing.append(standing)
        if self._connection is not None:
            standing._attach(self._connection)
        return standing

    def _prepare(self, protocol: Any) -> Deferred[HelloAck]:
        """Each new connection is ready once handshaken; the standing subscriptions resume on it then."""
        connection = cast(HubClientProtocol, protocol)
        return connection.ready.addCallback(self._handshaken, connection)

    def _handshaken(self, ack: HelloAck, connection: HubClientProtocol) -> HelloAck:
        self._connection = connection
        connection.closed.addCallback(self._disconnected, connection)
        for standing in list(self._standing):
            standing._attach(connection)
        return ack

    def _disconnected(self, result: object, connection: HubClientProtocol) -> object:
        if self._connection is connection:
            self._connection = None
        return result


# What ends a standing subscription's current subscription without ending it:
# the connection is gone or going (the next one resumes it), or the database
# is down for a while (it resubscribes after a backoff).
_PASSING = (ConnectionClosed, ConnectionError, ShuttingDown, Unavailable)


class StandingSubscription:
    """
    A subscription that outlives connections (L{HubClientService.subscribe}):
    on each new connection it subscribes again from the last position it
    delivered to C{on_event}, so C{on_event} gets every change once, in
    order, however often the connection drops (changes made while it was
    down come when it is back). A callback that raises is logged; the event
    counts as delivered.

    C{position} is that last position (None, when it starts at the present,
    until the hub first confirms it). C{ended} fires once C{cancel()} stops
    it, or fails with the hub's refusal that subscribing again cannot cure,
    which is also logged: L{PositionExpired} (the changes after its position
    are gone; start again from fresh state), L{PermissionDenied}, ... A
    stopped service pauses it; it resumes if the service starts again.
    """

    log = Logger()

    def __init__(
        self,
        service: HubClientService,
        table: SQLTable,
        on_event: Callable[[Event], object],
        from_position: int | None,
        symbols: list[str],
        filters: dict[str, Any],
    ) -> None:
        self.table = table
        self.position = from_position
        self._service = service
        self._on_event = on_event
        self._symbols = symbols
        self._filters = filters
        # The connection it subscribes on, and the subscription there once confirmed.
        self._connection: HubClientProtocol | None = None
        self._subscription: Subscription | None = None
        self._retry: IDelayedCall | None = None
        self._retries = 0
        self._ending = _Outcome()
        self._waiting: list[Deferred[int | None]] = []

    @property
    def ended(self) -> Deferred[None]:
        """Fires when it is over (see the class): a Deferred of one's own at each access."""
        return self._ending.observe()

    def subscribed(self) -> Deferred[int | None]:
        """
        Fires once the hub has confirmed a subscription (at once when one is
        live), with the position it is current to: no change after it will be
        missed. None when it is cancelled first; its error when it ends first.
        """
        if self._ending.settled:
            return self.ended.addCallback(lambda _: None)
        if self._subscription is not None:
            return succeed(self.position)
        self._waiting.append(Deferred())
        return self._waiting[-1]

    def cancel(self) -> Deferred[int | None]:
        """Stop following; fires with the position the hub had it current to, or C{position} when not live."""
        if self._ending.settled:
            return succeed(self.position)
        self._end(None)
        subscription, self._subscription = self._subscription, None
        if subscription is None:
            return succeed(self.position)
        return cast("Deferred[int | None]", subscription.cancel())

    def _attach(self, connection: HubClientProtocol) -> None:
        """A new connection: subscribe on it from the last position delivered."""
        if self._ending.settled or connection is self._connection:
            return
        self._connection = connection
        self._stop_retrying()
        self._subscribe()

    def _subscribe(self) -> None:
        assert self._connection is not None
        self._connection.subscribe(
            self.table,
            symbols=self._symbols,
            from_position=self.position,
            on_event=self._deliver,
            **self._filters,
        ).addCallbacks(self._confirmed, self._lost)

    def _confirmed(self, subscription: Subscription) -> None:
        if self._ending.settled:
            # Cancelled while the hub was confirming it.
            subscription.cancel()
            return
        self._subscription = subscription
        self.position = subscription.position
        self._retries = 0
        subscription.ended.addErrback(self._lost)
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(self.position)

    def _deliver(self, event: Event) -> object:
        self.position = event.position
        return self._on_event(event)

    def _lost(self, failure: Failure) -> None:
        """The subscription ended, or was refused, by something other than a cancel."""
        self._subscription = None
        if self._ending.settled:
            return
        if not failure.check(*_PASSING):
            self.log.error(
                "subscription to {table} ended at position {position}: {error}",
                table=self.table.name,
                position=self.position,
                error=str(failure.value),
            )
            self._end(failure)
        elif failure.check(Unavailable):
            delay = self._service._retry_policy(self._retries)
            self._retries += 1
            self._retry = self._service._clock.callLater(delay, self._resubscribe, self._connection)
        else:
            self.log.info(
                "subscription to {table} paused at position {position} ({error}); it resumes on the next connection",
                table=self.table.name,
                position=self.position,
                error=str(failure.value),
            )

    def _resubscribe(self, connection: HubClientProtocol) -> None:
        """After a backoff, on the same connection: a new one would have subscribed already."""
        self._retry = None
        if connection is self._connection and not connection.closed.called:
            self._subscribe()

    def _stop_retrying(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def _end(self, end: Failure | None) -> None:
        self._ending.settle(end)
        self._stop_retrying()
        self._service._standing.remove(self)
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            self.subscribed().chainDeferred(waiter)
