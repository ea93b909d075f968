"""
Alpaca's market-data stream, held for as long as the hub runs: authenticate,
subscribe to trades and quotes of the configured symbols and of those the
hub's own MARKET_TICK subscribers name (upstream when the first asks, no
longer when the last leaves), and store each trade and quote as a
MARKET_TICK, so that ticks reach ML subscribers through the change log.

Ticks are written as they come, coalesced: while one INSERT is under way,
what arrives waits and goes in the next, in one statement. When more waits
than MAX_WAITING, the stream stops reading until it has gone in.

Alpaca's control messages are logged, and its errors each get their policy:
refused keys (401, 402, 404) and a feed the account may not use (409) wait
long before trying again; too many connections (406) backs off and never
hammers the server; a symbol limit (405) keeps what is subscribed and says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from . import convert
from .stream import Stream

# Ticks waiting to be written beyond which the stream stops reading.
MAX_WAITING = 50_000
# Seconds to stay away after Alpaca refused the keys or the feed, or had too many connections.
REFUSED_WAIT = 60.0
FEED_REFUSED_WAIT = 600.0
CONNECTION_LIMIT_WAIT = 60.0

_TICKS = {"t": convert.latest_trade, "q": convert.latest_quote}
_REFUSED_KEYS = {401: "not authenticated", 402: "auth failed", 404: "auth timeout"}


def is_crypto(symbol: str) -> bool:
    """Crypto pairs (BTC/USD) stream from the crypto endpoint, everything else from the stock feed."""
    return "/" in symbol


class MarketData(Service):
    """
    One market-data stream (C{stream_for(handler)} makes its L{Stream}):
    C{symbols} are always subscribed; C{takes(symbol)} says which of the
    subscribers' symbols belong to it (stocks or crypto).
    """

    log = Logger()

    def __init__(
        self,
        name: str,
        ticks: Any,
        key_id: str,
        secret_key: str,
        symbols: Iterable[str],
        takes: Callable[[str], bool],
        stream_for: Callable[[MarketData], Stream],
    ) -> None:
        self.name = f"alpaca-{name}"
        self._ticks = ticks
        self._auth = {"action": "auth", "key": key_id, "secret": secret_key}
        self._symbols = frozenset(symbols)
        self._takes = takes
        self._followed: frozenset[str] = frozenset()
        self._asked: frozenset[str] = frozenset()  # what this connection asked Alpaca for
        self.upstream: frozenset[str] = frozenset()  # what Alpaca last said is subscribed
        self.authenticated = False
        self.stored = 0
        self.left = 0
        self._waiting: list[dict] = []
        self._writing: Deferred[None] | None = None
        self._paused = False
        self.stream = stream_for(self)

    # The service

    def startService(self) -> None:
        super().startService()
        self.stream.startService()

    def stopService(self) -> Deferred[None]:
        """Close the stream, then write what was read."""
        super().stopService()
        return ensureDeferred(self._stopped())

    async def _stopped(self) -> None:
        await self.stream.stopService()
        while self._writing is not None:
            await self._writing

    # The hub's subscribers

    def followed(self, symbols: frozenset[str]) -> None:
        """The symbols the hub's MARKET_TICK subscribers name now."""
        self._followed = frozenset(s for s in symbols if self._takes(s))
        self._subscribe()

    @property
    def wanted(self) -> frozenset[str]:
        return self._symbols | self._followed

    def _subscribe(self) -> None:
        if not self.authenticated:
            return
        wanted = self.wanted
        added, removed = sorted(wanted - self._asked), sorted(self._asked - wanted)
        self._asked = wanted
        if added:
            self.stream.send({"action": "subscribe", "trades": added, "quotes": added})
        if removed:
            self.stream.send({"action": "unsubscribe", "trades": removed, "quotes": removed})
        if not (added or removed or wanted):
            self.stream.streaming()  # authenticated, and nothing to ask for yet

    # What the stream hears

    def opened(self, stream: Stream) -> None:
        self.authenticated = False
        self._asked = self.upstream = frozenset()

    def closed(self, stream: Stream) -> None:
        self.authenticated = False

    def received(self, stream: Stream, message: Any) -> None:
        ticks = []
        for item in message if isinstance(message, list) else [message]:
            kind = item.get("T") if isinstance(item, dict) else None
            if kind in _TICKS:
                try:
                    ticks.append(_TICKS[kind](item["S"], item))
                except (KeyError, TypeError, ValueError, ArithmeticError) as error:
                    self.left += 1
                    self.log.warn("alpaca {name}: left a malformed tick ({error!r})", name=self.name, error=error)
            elif kind == "success":
                self._success(stream, item)
            elif kind == "subscription":
                self._subscribed(stream, item)
            elif kind == "error":
                self._error(stream, item)
        if ticks:
            self._take(ticks)

    def _success(self, stream: Stream, item: dict) -> None:
        if item.get("msg") == "connected":
            stream.send(self._auth)
        elif item.get("msg") == "authenticated":
            self.authenticated = True
            self._subscribe()

    def _subscribed(self, stream: Stream, item: dict) -> None:
        self.upstream = frozenset(item.get("trades") or ()) | frozenset(item.get("quotes") or ())
        self.log.info(
            "alpaca {name}: subscribed to {count} symbols ({symbols})",
            name=self.name,
            count=len(self.upstream),
            symbols=", ".join(sorted(self.upstream)[:20]) or "none",
        )
        stream.streaming()

    def _error(self, stream: Stream, item: dict) -> None:
        code, text = item.get("code"), item.get("msg") or "no message"
        if code in _REFUSED_KEYS:
            self._stay_away(stream, REFUSED_WAIT, f"Alpaca refused the keys ({code} {text})")
        elif code == 406:
            self._stay_away(stream, CONNECTION_LIMIT_WAIT, f"too many connections for these keys (406 {text})")
        elif code == 409:
            self._stay_away(
                stream, FEED_REFUSED_WAIT, f"the account may not use this feed (409 {text}): check TRADEHUB_ALPACA_FEED"
            )
        elif code == 405:
            self.log.error(
                "alpaca {name}: symbol limit reached (405 {text}): {count} asked, still subscribed to {held}",
                name=self.name,
                text=text,
                count=len(self.wanted),
                held=len(self.upstream),
            )
        else:
            self.log.error("alpaca {name}: error {code} {text}", name=self.name, code=code, text=text)

    def _stay_away(self, stream: Stream, seconds: float, why: str) -> None:
        self.log.error("alpaca {name}: {why}; trying again in {wait:.0f}s", name=self.name, why=why, wait=seconds)
        stream.hold_off(seconds)
        stream.drop(why)

    # Writing, coalesced

    def _take(self, ticks: list[dict]) -> None:
        self._waiting += ticks
        if len(self._waiting) >= MAX_WAITING and not self._paused:
            self._paused = True
            self.stream.pause()
        if self._writing is None:
            writing = ensureDeferred(self._write())
            if not writing.called:
                self._writing = writing

    async def _write(self) -> None:
        try:
            while self._waiting:
                ticks, self._waiting = _distinct(self._waiting), []
                try:
                    left = await self._ticks.insert_feed(ticks)
                except Exception as error:
                    self.log.error(
                        "alpaca {name}: {count} ticks not stored: {error}",
                        name=self.name,
                        count=len(ticks),
                        error=error,
                    )
                    continue
                self.stored += len(ticks) - len(left)
                self.left += len(left)
                for reason in left[:3]:
                    self.log.warn("alpaca {name}: left a tick: {reason}", name=self.name, reason=reason)
                if self._paused and len(self._waiting) < MAX_WAITING // 2:
                    self._paused = False
                    self.stream.resume()
        finally:
            self._writing = None


def _distinct(ticks: list[dict]) -> list[dict]:
    """
    Quotes carry no sequence number: quotes of one symbol at one instant
    are numbered in the order they came, so that each is kept.
    """
    seen: dict[tuple, int] = {}
    for tick in ticks:
        if tick["kind"] == "quote":
            key = (tick["symbol"], tick["ts"])
            tick["seq"] = seen.get(key, 0)
            seen[key] = tick["seq"] + 1
    return ticks
