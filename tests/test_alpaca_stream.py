"""
The WebSocket stream under Alpaca's streams (tradehub/alpaca/stream.py):
over real loopback sockets against an autobahn server, it speaks first,
delivers messages in text and binary frames, reconnects when the server
drops it or goes silent; and, on a hand-driven clock, its waits between
attempts grow with jitter up to a ceiling and honour a hold-off.
"""

import json

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tradehub.alpaca.stream import Stream, StreamState, endpoint_for


class Recorder:
    """A handler that says hello when opened and keeps what it hears."""

    def __init__(self):
        self.messages = []
        self.opened_count = 0
        self.closed_count = 0
        self.waiting: list[tuple[int, Deferred]] = []

    def opened(self, stream):
        self.opened_count += 1
        stream.send({"action": "auth", "key": "k"})

    def received(self, stream, message):
        self.messages.append(message)
        self._wake()

    def closed(self, stream):
        self.closed_count += 1
        self._wake()

    def until(self, condition):
        waiting = Deferred()
        self.waiting.append((condition, waiting))
        self._wake()
        return waiting

    def _wake(self):
        for entry in list(self.waiting):
            condition, waiting = entry
            if condition():
                self.waiting.remove(entry)
                waiting.callback(None)


class FakeServer(WebSocketServerProtocol):
    """Answers each message with an echo; binary when the factory says so; silent when told."""

    def onConnect(self, request):
        self.factory.connections.append(self)

    def onMessage(self, payload, isBinary):
        self.factory.heard.append(json.loads(payload))
        if not self.factory.silent:
            self.sendMessage(json.dumps([{"T": "echo", "got": json.loads(payload)}]).encode(), self.factory.binary)

    def onPing(self, payload):
        if not self.factory.silent:
            self.sendPong(payload)


class StreamOverLoopbackTests(TestCase):
    def serve(self, binary=False, silent=False):
        factory = WebSocketServerFactory()
        factory.protocol = FakeServer
        factory.connections, factory.heard = [], []
        factory.binary, factory.silent = binary, silent
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.server = factory
        return f"ws://127.0.0.1:{port.getHost().port}/stream"

    def stream(self, url, **settings):
        handler = Recorder()
        states = []
        stream = Stream(
            "test",
            url,
            handler,
            reactor=reactor,
            backoff=(0.05, 0.2),
            on_state=lambda name, state: states.append(state),
            **settings,
        )
        stream.startService()
        self.addCleanup(self.stopped, stream)
        self.states = states
        return stream, handler

    async def stopped(self, stream):
        await stream.stopService()
        # The server's side of each connection ends a moment later.
        while any(c.state != WebSocketServerProtocol.STATE_CLOSED for c in self.server.connections):
            await deferLater(reactor, 0.01, lambda: None)

    async def test_it_speaks_first_and_hears_text_and_binary_messages(self):
        for binary in (False, True):
            stream, handler = self.stream(self.serve(binary=binary))
            await handler.until(lambda handler=handler: handler.messages)
            self.assertEqual(self.server.heard, [{"action": "auth", "key": "k"}])
            self.assertEqual(handler.messages, [[{"T": "echo", "got": {"action": "auth", "key": "k"}}]])
            self.assertEqual(self.states[:2], [StreamState.CONNECTING, StreamState.OPEN])
            await self.stopped(stream)

    async def test_a_dropped_connection_is_made_again_and_spoken_to_again(self):
        stream, handler = self.stream(self.serve())
        await handler.until(lambda: handler.messages)
        self.server.connections[0].dropConnection(abort=True)
        await handler.until(lambda: len(handler.messages) == 2)
        self.assertEqual((handler.opened_count, handler.closed_count), (2, 1))
        self.assertEqual(len(self.server.connections), 2)
        self.assertIn(StreamState.DOWN, self.states)

    async def test_a_silent_server_is_noticed_by_its_missing_pongs_and_left(self):
        stream, handler = self.stream(self.serve(silent=True), ping_interval=0.1, ping_timeout=0.1)
        await handler.until(lambda: handler.closed_count >= 1)
        await handler.until(lambda: handler.opened_count >= 2)
        self.assertEqual(handler.messages, [])
        self.assertGreaterEqual(len(self.server.connections), 2)

    async def test_stopping_closes_and_does_not_come_back(self):
        stream, handler = self.stream(self.serve())
        await handler.until(lambda: handler.messages)
        await self.stopped(stream)
        await deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(handler.opened_count, 1)
        self.assertEqual(stream.state, StreamState.STOPPED)


class RefusingEndpoint:
    def __init__(self):
        self.attempts = 0

    def connect(self, factory):
        self.attempts += 1
        return fail(ConnectionRefusedError())


class BackoffTests(SynchronousTestCase):
    def stream(self, jitter):
        self.clock = Clock()
        self.endpoint = RefusingEndpoint()
        stream = Stream(
            "test",
            "wss://stream.example/v2",
            Recorder(),
            reactor=self.clock,
            endpoint=self.endpoint,
            backoff=(1.0, 8.0),
            jitter=lambda: jitter,
        )
        stream.startService()
        return stream

    def waits(self, count):
        waits = []
        for _ in range(count):
            [call] = self.clock.getDelayedCalls()
            waits.append(call.getTime() - self.clock.seconds())
            self.clock.advance(waits[-1])
        return waits

    def test_waits_double_up_to_the_ceiling_half_fixed_half_random(self):
        self.stream(jitter=1.0)
        self.assertEqual(self.waits(6), [1, 2, 4, 8, 8, 8])
        self.stream(jitter=0.0)
        self.assertEqual(self.waits(5), [0.5, 1, 2, 4, 4])
        self.assertEqual(self.endpoint.attempts, 6)

    def test_a_hold_off_makes_the_next_wait_longer_once(self):
        stream = self.stream(jitter=1.0)
        stream.hold_off(30)  # what the handler of a 406 asks
        self.assertEqual(self.waits(3), [1, 30, 4])

    def test_streaming_starts_the_backoff_over(self):
        stream = self.stream(jitter=1.0)
        self.waits(3)
        stream.streaming()
        self.assertEqual(stream.attempts, 0)

    def test_the_wait_stays_at_the_ceiling_however_long_the_outage(self):
        stream = self.stream(jitter=1.0)
        stream.attempts = 5000
        [call] = self.clock.getDelayedCalls()
        call.cancel()
        stream._again()
        [call] = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime() - self.clock.seconds(), 8)

    def test_stopping_while_connecting_cancels_the_attempt(self):
        cancelled = []
        clock = Clock()

        class Pending:
            def connect(self, factory):
                return Deferred(lambda d: cancelled.append(True))

        stream = Stream("test", "wss://stream.example/v2", Recorder(), reactor=clock, endpoint=Pending())
        stream.startService()
        self.successResultOf(stream.stopService())
        self.assertEqual((cancelled, clock.getDelayedCalls()), ([True], []))

    def test_a_late_message_or_close_after_stopping_does_not_bring_it_back(self):
        clock = Clock()

        class Opening:
            def connect(self, factory):
                return Deferred()

        stream = Stream("test", "wss://stream.example/v2", Recorder(), reactor=clock, endpoint=Opening())
        stream.startService()
        connection = FakeConnection()
        stream._made(connection)
        stream._opened(connection)
        gone = stream.stopService()
        self.assertEqual(connection.calls, [("send", b'{"action": "auth", "key": "k"}'), "close"])
        stream._received(connection, b'[{"T": "subscription"}]')
        stream.streaming()  # what a handler would do on that confirmation
        stream._closed(connection, 1000, None)
        self.successResultOf(gone)
        self.assertEqual((stream.state, clock.getDelayedCalls()), (StreamState.STOPPED, []))
        self.assertEqual(stream.handler.messages, [])

    def test_only_websocket_urls_are_accepted(self):
        self.assertRaises(ValueError, endpoint_for, Clock(), "https://paper-api.alpaca.markets/stream")


class FakeConnection:
    """What the stream calls on its connection, recorded."""

    state = WebSocketServerProtocol.STATE_OPEN

    def __init__(self):
        self.calls = []

    def sendMessage(self, payload):
        self.calls.append(("send", payload))

    def sendClose(self):
        self.calls.append("close")
        self.state = WebSocketServerProtocol.STATE_CLOSING

    def sendPing(self):
        self.calls.append("ping")

    def dropConnection(self, abort=False):
        self.calls.append("drop")
