"""
The Alpaca Trading and Market Data REST APIs over treq.

Every call has a timeout; HTTP 429 and 5xx, timeouts and connection failures
are retried with exponential backoff that honours Retry-After and
X-RateLimit-Reset; any other 4xx raises L{AlpacaRejected} with Alpaca's
code and message. The keys travel only in the APCA-API-* headers and are
never logged.
"""

import json
from collections.abc import Iterable
from decimal import Decimal
from urllib.parse import quote

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectError, ConnectionLost, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.client import ResponseFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers

from ..retry import retrying
from . import convert

PAGE_LIMIT = 500
ACTIVITY_PAGE = 100
MAX_WAIT = 60.0
_NETWORK_FAILURES = (
    CancelledError,
    ConnectError,
    ConnectionLost,
    DNSLookupError,
    TimeoutError,
    ResponseFailed,
    ResponseNeverReceived,
)


class AlpacaError(Exception):
    """Any failure talking to Alpaca."""


class AlpacaUnavailable(AlpacaError):
    """
    Alpaca did not answer usefully (timeout, 429, 5xx) within the retries.

    @ivar retry_after: the seconds Alpaca asked to wait before trying again
        (Retry-After or X-RateLimit-Reset), or None when it did not say.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AlpacaRejected(AlpacaError):
    """A 4xx answer: Alpaca's own error code and message."""

    def __init__(self, status, code, message):
        super().__init__(f"Alpaca refused (HTTP {status}, code {code}): {message}")
        self.status = status
        self.code = code
        self.message = message

    @property
    def conflict(self):
        """403 (e.g. insufficient buying power) and 409 are conflicts with account state."""
        return self.status in (403, 409)


class AlpacaClient:
    """
    One Alpaca account. C{http} is a treq HTTPClient (a StubTreq in tests);
    C{clock} times the request timeouts and the waits between retries.
    """

    log = Logger()

    def __init__(
        self,
        http: HTTPClient,
        clock: IReactorTime,
        *,
        key_id: str,
        secret_key: str,
        base_url: str,
        data_url: str,
        timeout: float = 10.0,
        retries: int = 4,
        backoff: float = 0.5,
    ) -> None:
        self._http = http
        self._clock = clock
        self._headers: dict[str | bytes, list[str | bytes]] = {
            "APCA-API-KEY-ID": [key_id],
            "APCA-API-SECRET-KEY": [secret_key],
            "Accept": ["application/json"],
        }
        self.base_url = base_url.rstrip("/")
        self.data_url = data_url.rstrip("/")
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff

    def __repr__(self):
        return f"AlpacaClient({self.base_url})"

    async def _call(self, method, base, path, params=None, body=None, allow_missing=False):
        def log_retry(error, wait):
            self.log.warn(
                "Alpaca {method} {path} failed ({reason}); retry in {wait:.2f}s",
                method=method,
                path=path,
                reason=str(error),
                wait=wait,
            )

        return await retrying(
            lambda: self._request(method, base, path, params, body, allow_missing),
            clock=self._clock,
            retries=self._retries,
            delay=self._backoff,
            retryable=lambda error: isinstance(error, AlpacaUnavailable),
            wait=self._wait,
            on_retry=log_retry,
        )

    async def _request(self, method, base, path, params, body, allow_missing):
        """One try: the decoded answer; L{AlpacaUnavailable} when worth retrying, L{AlpacaRejected} when not."""
        try:
            response = await self._http.request(
                method,
                (base + path).encode(),
                headers=self._headers,
                params=params,
                json=body,
                timeout=self._timeout,
                reactor=self._clock,  # type: ignore[arg-type]  # treq only times the timeout on it
            )
            payload = await response.content()
        except _NETWORK_FAILURES as error:
            raise AlpacaUnavailable(f"{method} {path}: {type(error).__name__}") from error
        if response.code < 300:
            return json.loads(payload, parse_float=Decimal) if payload else None
        if response.code == 404 and allow_missing:
            return None
        if response.code != 429 and response.code < 500:
            raise _rejected(response.code, payload)
        raise AlpacaUnavailable(f"{method} {path}: HTTP {response.code}", self._asked_wait(response.headers))

    def _asked_wait(self, headers: Headers) -> float | None:
        """The seconds Alpaca's rate-limit headers ask to wait, if they say."""
        retry_after = headers.getRawHeaders(b"retry-after")
        if retry_after:
            try:
                return float(retry_after[0])
            except ValueError:
                pass
        reset = headers.getRawHeaders(b"x-ratelimit-reset")
        if reset:
            try:
                return float(reset[0]) - self._clock.seconds()
            except ValueError:
                pass
        return None

    @staticmethod
    def _wait(error: Exception, delay: float) -> float:
        """The backoff delay, stretched to what Alpaca asked for but never past MAX_WAIT."""
        asked = error.retry_after if isinstance(error, AlpacaUnavailable) else None
        return delay if asked is None else min(MAX_WAIT, max(delay, asked))

    # Trading API

    async def account(self) -> dict:
        return convert.account(await self._call("GET", self.base_url, "/v2/account"))

    async def assets(self, status: str = "active", asset_class: str | None = None) -> convert.Rows:
        params = {"status": status}
        if asset_class:
            params["asset_class"] = asset_class
        return convert.each(
            convert.asset, await self._call("GET", self.base_url, "/v2/assets", params), "asset", self.log
        )

    async def positions(self, account_id: str) -> convert.Rows:
        bodies = await self._call("GET", self.base_url, "/v2/positions")
        return convert.each(lambda body: convert.position(body, account_id), bodies, "position", self.log)

    async def orders(
        self, account_id: str, status: str = "all", after: str | None = None, until: str | None = None
    ) -> list[dict]:
        """
        Every order (legs nested in their parents) from oldest to newest, page by
        page through `after` until a page comes back short.
        """
        rows, seen = convert.Rows(), set[str]()
        while True:
            params = {"status": status, "limit": str(PAGE_LIMIT), "direction": "asc", "nested": "true"}
            if after:
                params["after"] = after
            if until:
                params["until"] = until
            page = await self._call("GET", self.base_url, "/v2/orders", params)
            fresh = [body for body in page if body.get("id") not in seen]
            seen.update(body.get("id") for body in fresh)
            converted = convert.each(lambda body: convert.order(body, account_id), fresh, "order", self.log)
            rows += converted
            rows.skipped += converted.skipped
            if len(page) < PAGE_LIMIT:
                return rows
            after = page[-1]["created_at"]

    async def fills(self, after: str) -> list:
        """The account's executions after a time (RFC 3339), oldest first, page by page."""
        executions, token = [], None
        while True:
            params = {"after": after, "direction": "asc", "page_size": str(ACTIVITY_PAGE)}
            if token:
                params["page_token"] = token
            page = await self._call("GET", self.base_url, "/v2/account/activities/FILL", params)
            executions += [convert.fill_activity(body) for body in page]
            if len(page) < ACTIVITY_PAGE:
                return executions
            token = page[-1]["id"]

    async def order_by_client_order_id(self, client_order_id: str, account_id: str | None = None) -> list[dict] | None:
        body = await self._call(
            "GET",
            self.base_url,
            "/v2/orders:by_client_order_id",
            {"client_order_id": client_order_id},
            allow_missing=True,
        )
        return None if body is None else convert.order(body, account_id, submit=True)

    async def order(self, order_id: str, account_id: str | None = None) -> list[dict]:
        body = await self._call("GET", self.base_url, f"/v2/orders/{quote(order_id)}")
        return convert.order(body, account_id, submit=True)

    async def submit(self, parent: dict, legs: Iterable[dict] = (), account_id: str | None = None) -> list[dict]:
        """
        POST an order with its client_order_id. Submitting the same
        client_order_id twice never makes a second order: Alpaca refuses the
        duplicate and the existing order is returned instead.
        """
        body = order_request(parent, legs)
        try:
            answer = await self._call("POST", self.base_url, "/v2/orders", body=body)
        except AlpacaRejected as error:
            if "client_order_id must be unique" not in error.message:
                raise
            existing = await self.order_by_client_order_id(parent["client_order_id"], account_id)
            if existing is None:
                raise
            self.log.info(
                "order {client_order_id} was already at Alpaca; not submitted twice",
                client_order_id=parent["client_order_id"],
            )
            return existing
        return convert.order(answer, account_id, submit=True)

    async def cancel(self, order_id: str) -> None:
        """DELETE /v2/orders/{id}: Alpaca accepts the cancel; the order's status follows."""
        await self._call("DELETE", self.base_url, f"/v2/orders/{quote(order_id)}")

    # Market data API

    async def latest_trades(self, symbols: Iterable[str]) -> list[dict]:
        body = await self._call("GET", self.data_url, "/v2/stocks/trades/latest", {"symbols": ",".join(symbols)})
        return [convert.latest_trade(symbol, trade) for symbol, trade in sorted(body["trades"].items())]

    async def latest_quotes(self, symbols: Iterable[str]) -> list[dict]:
        body = await self._call("GET", self.data_url, "/v2/stocks/quotes/latest", {"symbols": ",".join(symbols)})
        return [convert.latest_quote(symbol, q) for symbol, q in sorted(body["quotes"].items())]

    async def bars(self, symbol: str, timeframe: str, start: str, end: str | None = None) -> list[dict]:
        """Historical bars, following next_page_token to the end."""
        bars, token = [], None
        while True:
            params = {"timeframe": timeframe, "start": start, "limit": "10000"}
            if end:
                params["end"] = end
            if token:
                params["page_token"] = token
            body = await self._call("GET", self.data_url, f"/v2/stocks/{quote(symbol)}/bars", params)
            bars += [convert.bar(b) for b in body.get("bars") or ()]
            token = body.get("next_page_token")
            if not token:
                return bars


def order_request(parent, legs=()):
    """The POST /v2/orders body for an order row and the leg rows of a bracket, oco or oto order."""
    body = {
        "symbol": parent["symbol"],
        "side": parent["side"],
        "type": parent["type"],
        "time_in_force": parent["time_in_force"],
        "client_order_id": parent["client_order_id"],
        "extended_hours": parent["extended_hours"],
    }
    for name in ("qty", "notional", "limit_price", "stop_price", "trail_price", "trail_percent"):
        if parent[name] is not None:
            body[name] = plain(parent[name])
    if parent["order_class"] != "simple":
        body["order_class"] = parent["order_class"]
    for leg in legs:
        if leg["type"] == "limit":
            body["take_profit"] = {"limit_price": plain(leg["limit_price"])}
        else:
            stop = {"stop_price": plain(leg["stop_price"])}
            if leg["limit_price"] is not None:
                stop["limit_price"] = plain(leg["limit_price"])
            body["stop_loss"] = stop
    return body


def plain(value):
    """A decimal as Alpaca's strings write it: 3.000000000 -> "3", 189.120000000 -> "189.12"."""
    text = format(Decimal(value).normalize(), "f")
    return text


def _rejected(status, payload):
    try:
        body = json.loads(payload)
        return AlpacaRejected(status, body.get("code"), str(body.get("message") or payload[:200]))
    except (ValueError, AttributeError):
        return AlpacaRejected(status, None, payload[:200].decode("utf-8", "replace"))
