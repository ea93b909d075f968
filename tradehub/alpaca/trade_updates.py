"""
Alpaca's trading stream, held for as long as the hub runs: authenticate,
listen to trade_updates, reconcile through REST whatever happened while the
stream was not listening, then store each event, in the order received,
through the ledger, so that subscribers to ORDER, TRADE and POSITION see a
fill moments after Alpaca reports it.

An event that cannot be stored for a reason that would not go away (a row
the rules refuse) is logged and left. Any other failure (the database gone,
a commit whose outcome is unknown) drops the connection: the stream comes
back, and its reconciliation fetches from Alpaca everything since the last
event stored, so no fill is lost across the gap.
"""

from __future__ import annotations

from collections import deque
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from ..errors import Conflict, Invalid, Missing
from ..schema.timestamp import Timestamp
from . import convert
from .stream import Stream, StreamState
from .sync import AlpacaSync

LISTEN = {"action": "listen", "data": {"streams": ["trade_updates"]}}
# Seconds to wait before trying keys Alpaca refused again.
REFUSED_KEYS_WAIT = 60.0
# An event whose rows the rules refuse is left; it would be refused again.
_LEFT = (Invalid, Missing, Conflict, KeyError, TypeError, ValueError, AttributeError, ArithmeticError)


def stream_url(base_url: str) -> str:
    """The trading stream of a Trading API URL: https://host -> wss://host/stream."""
    parts = urlsplit(base_url)
    return urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc, "/stream", "", ""))


class TradeUpdates(Service):
    """
    The trading stream (C{stream_for(handler)} makes its L{Stream}) and
    what it says. C{trusted} is true once the stream is listening and what
    it missed is reconciled: from then on, what it says is the whole story.
    """

    name = "alpaca-trade-updates"
    log = Logger()

    def __init__(self, sync: AlpacaSync, key_id: str, secret_key: str, stream_for: Any) -> None:
        self._sync = sync
        self._ledger = sync.ledger
        self._auth = {"action": "auth", "key": key_id, "secret": secret_key}
        self.stream: Stream = stream_for(self)
        self.trusted = False
        self.last_event: Timestamp | None = None
        self.events = 0
        self._connection = 0  # counts connections: work queued for an earlier one is stale
        self._queue: deque[tuple[int, dict | None]] = deque()
        self._draining: Deferred[None] | None = None

    # The service

    def startService(self) -> None:
        super().startService()
        # Started again (this hub leads again), it reconciles from what is stored, not from its last term.
        self.last_event = None
        self.stream.startService()

    def stopService(self) -> Deferred[None]:
        """Close the stream, then let the event being stored finish."""
        super().stopService()
        return ensureDeferred(self._stopped())

    async def _stopped(self) -> None:
        await self.stream.stopService()
        self._queue.clear()
        if self._draining is not None:
            await self._draining

    # What the stream hears

    def opened(self, stream: Stream) -> None:
        self._connection += 1
        stream.send(self._auth)

    def received(self, stream: Stream, message: Any) -> None:
        if not isinstance(message, dict):
            self.log.warn("alpaca trading stream: ignored a message that is not an object: {m!r}", m=message)
            return
        kind, data = message.get("stream"), message.get("data") or {}
        if kind == "trade_updates":
            self._enqueue(data)
        elif kind == "authorization":
            self._authorized(stream, data)
        elif kind == "listening":
            self._listening(stream, data)
        else:
            self.log.info("alpaca trading stream: ignored a {kind} message", kind=kind)

    def closed(self, stream: Stream) -> None:
        self._connection += 1
        if self.trusted:
            self.log.warn("alpaca trading stream: down; fills reach the hub through the REST sync until it is back")
        self.trusted = False

    def _authorized(self, stream: Stream, data: dict) -> None:
        if data.get("status") == "authorized":
            stream.send(LISTEN)
            return
        self.log.error(
            "alpaca trading stream: Alpaca refused the keys ({status}: {why}); trying again in {wait:.0f}s",
            status=data.get("status"),
            why=data.get("message") or "no reason given",
            wait=REFUSED_KEYS_WAIT,
        )
        stream.hold_off(REFUSED_KEYS_WAIT)
        stream.drop("unauthorized")

    def _listening(self, stream: Stream, data: dict) -> None:
        if "trade_updates" in (data.get("streams") or ()):
            self._queue.append((self._connection, None))
            self._drain()
            return
        self.log.error("alpaca trading stream: Alpaca did not start trade_updates ({data!r})", data=data)
        stream.hold_off(REFUSED_KEYS_WAIT)
        stream.drop("not listening to trade_updates")

    # Storing, one at a time and in order

    def _enqueue(self, data: dict) -> None:
        self._queue.append((self._connection, data))
        self._drain()

    def _drain(self) -> None:
        if self._draining is None and self.running:
            draining = ensureDeferred(self._drained())
            if not draining.called:  # else it is over already, and said so
                self._draining = draining

    async def _drained(self) -> None:
        try:
            while self._queue and self.running:
                connection, event = self._queue.popleft()
                try:
                    if event is None:
                        await self._reconcile(connection)
                    else:
                        await self._store(event)
                except Exception as error:
                    self._failed(connection, event, error)
        finally:
            self._draining = None

    async def _reconcile(self, connection: int) -> None:
        """Fetch through REST what the stream may have missed; then trust it."""
        if connection != self._connection:
            return  # that connection is gone: the next one reconciles
        since, changes = await self._sync.reconcile(self.last_event)
        if connection != self._connection:
            return
        self.trusted = True
        self.stream.streaming()
        self.log.info(
            "alpaca trading stream: reconciled since {since}: {changes}; streaming",
            since=since or "the start",
            changes=", ".join(changes) or "nothing missed",
        )

    async def _store(self, data: dict) -> None:
        orders, execution, position = convert.trade_update(data, self._sync.account_id)
        recorded = await self._ledger.record(orders, [execution] if execution else [], [position] if position else [])
        self.events += 1
        at = execution.executed_at if execution else orders[0]["updated_at"]
        self.last_event = at if self.last_event is None else max(self.last_event, at)
        for reason in recorded.skipped:
            self.log.warn("alpaca trading stream: {event}: skipped {reason}", event=data["event"], reason=reason)
        self.log.debug(
            "alpaca trade update {event} {order}: {what}",
            event=data["event"],
            order=orders[0]["client_order_id"],
            what=", ".join(recorded.summary()) or "nothing new",
        )

    def _failed(self, connection: int, event: dict | None, error: Exception) -> None:
        kind = event.get("event") if isinstance(event, dict) else None
        if event is not None and isinstance(error, _LEFT):
            order = event.get("order") if isinstance(event, dict) else None
            self.log.error(
                "alpaca trading stream: left a {event} event of order {order}: {error}",
                event=kind,
                order=order.get("id") if isinstance(order, dict) else None,
                error=str(error) or repr(error),
            )
            return
        what = "the reconciliation" if event is None else f"storing a {kind} event"
        self.log.error("alpaca trading stream: {what} failed: {error}", what=what, error=str(error) or repr(error))
        if connection == self._connection:
            # What follows is not stored either: drop the queue and the
            # connection, and the next one reconciles from the last event stored.
            self._queue.clear()
            self.trusted = False
            self.stream.drop(f"{what} failed")

    # For /readyz

    def describe(self) -> str:
        """How the stream stands, for /readyz: what it says when trusted, or why it is not."""
        if self.trusted:
            return f"streaming; {self.events} events stored, the last at {self.last_event or '-'}"
        state = self.stream.state
        if state is StreamState.OPEN:
            now = "connected, authenticating and reconciling"
        else:
            now = f"{state.value} (attempt {self.stream.attempts})"
        return f"the trading stream is {now}: fills reach the hub through the REST sync until it is back"
