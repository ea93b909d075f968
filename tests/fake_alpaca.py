"""
A fake Alpaca on 127.0.0.1 for the tests: twisted.web serving bodies shaped
like Alpaca's documented ones, paginating, answering queued failures (429
with rate-limit headers, 5xx, 4xx with an error body, silence past the
client's timeout), and recording every request it receives. On the same
port, /stream is the trading stream (autobahn's server, binary frames like
Alpaca's paper endpoint): it checks the keys, acknowledges listen, and
sends trade_updates events as the fake's orders move; it can drop its
connections, go silent, and repeat an event.
"""

import json
import time
import uuid
from decimal import Decimal
from urllib.parse import urlsplit

import attrs
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tradehub.schema.timestamp import Timestamp

KEY_ID = "PKTESTKEYID"
SECRET = "test-secret-key-never-logged"
OPEN = ("new", "accepted", "pending_new", "partially_filled", "held", "pending_cancel", "pending_replace")
_last = _ahead = 0


def stamp():
    """Now, as Alpaca writes it (RFC 3339, nanoseconds): distinct and increasing."""
    global _last
    _last = max(time.time_ns() + _ahead, _last + 1)
    return Timestamp(_last).to_rfc3339()


def advance(seconds):
    """Alpaca's times from now on are this much later (what happens meanwhile, in a test that cannot wait)."""
    global _ahead
    _ahead += int(seconds * 1e9)


ACCOUNT = {
    "id": "904837e3-3b76-47ec-b432-046db621571b",
    "account_number": "PA3BF2V1ZQZF",
    "status": "ACTIVE",
    "crypto_status": "ACTIVE",
    "currency": "USD",
    "buying_power": "262113.632",
    "regt_buying_power": "262113.632",
    "daytrading_buying_power": "0",
    "non_marginable_buying_power": "131056.81",
    "cash": "-23140.200000001",
    "portfolio_value": "103820.56",
    "pattern_day_trader": False,
    "trading_blocked": False,
    "transfers_blocked": False,
    "account_blocked": False,
    "created_at": "2019-06-12T22:47:07.99658Z",
    "trade_suspended_by_user": False,
    "multiplier": "4",
    "shorting_enabled": True,
    "equity": "103820.56",
    "last_equity": "103529.24",
    "long_market_value": "126960.76",
    "short_market_value": "0",
    "initial_margin": "63480.38",
    "maintenance_margin": "38088.228",
    "last_maintenance_margin": "38000.832",
    "sma": "0",
    "daytrade_count": 0,
}

ASSETS = [
    {
        "id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
        "class": "us_equity",
        "exchange": "NASDAQ",
        "symbol": "AAPL",
        "name": "Apple Inc. Common Stock",
        "status": "active",
        "tradable": True,
        "marginable": True,
        "shortable": True,
        "easy_to_borrow": True,
        "fractionable": True,
        "min_order_size": "0.000000001",
        "min_trade_increment": "0.000000001",
        "price_increment": "0.01",
        "maintenance_margin_requirement": 30,
        "attributes": ["fractional_eh_enabled"],
    },
    {
        "id": "276e2673-764b-4ab6-a611-caf665ca6340",
        "class": "crypto",
        "exchange": "CRYPTO",
        "symbol": "BTC/USD",
        "name": "Bitcoin / US Dollar",
        "status": "active",
        "tradable": True,
        "marginable": False,
        "shortable": False,
        "easy_to_borrow": False,
        "fractionable": True,
        "min_order_size": "0.0001",
        "min_trade_increment": "0.000000001",
        "price_increment": "1",
    },
]

POSITION = {
    "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
    "symbol": "AAPL",
    "exchange": "NASDAQ",
    "asset_class": "us_equity",
    "asset_marginable": True,
    "qty": "5",
    "avg_entry_price": "100.123456789",
    "side": "long",
    "market_value": "600.0",
    "cost_basis": "500.617283945",
    "unrealized_pl": "99.382716055",
    "unrealized_plpc": "0.198521",
    "unrealized_intraday_pl": "10.0",
    "unrealized_intraday_plpc": "0.0084",
    "current_price": "120.0",
    "lastday_price": "119.0",
    "change_today": "0.0084",
    "qty_available": "5",
}


@attrs.define
class Received:
    method: str
    path: str
    query: dict
    headers: dict
    body: object


class FakeAlpaca(Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.account = dict(ACCOUNT)
        self.assets = [dict(a) for a in ASSETS]
        self.positions = [dict(POSITION)]
        self.orders = []
        self.answer_delay = 0.0  # seconds before answering a POST /v2/orders
        self.fill_on_submit = None  # a price: each new order fills at once, before the answer
        self.activities = []
        self.trade_stream = TradeStream()
        self.received = []
        self.failures = []
        self.held = []
        self.bars = [
            {
                "t": f"2026-11-2{i // 3}T14:3{i % 3}:00Z",
                "o": 100.01 + i,
                "h": 101.5,
                "l": 99.25,
                "c": 100.5,
                "v": 1200 + i,
                "n": 42,
                "vw": 100.4321,
            }
            for i in range(5)
        ]

    # Failure injection

    def fail_next(self, status, body=None, headers=None, times=1):
        for _ in range(times):
            self.failures.append((status, body, headers or {}))

    def stay_silent_next(self, times=1):
        for _ in range(times):
            self.failures.append(("silent", None, {}))

    def act_then_stay_silent_next(self):
        """Carry out the next request, then never answer it: the answer is lost on the way."""
        self.failures.append(("act-silent", None, {}))

    def release(self):
        """Drop the connections of requests left unanswered on purpose."""
        for request in self.held:
            if request.channel is not None:
                request.channel.transport.abortConnection()
        self.held.clear()

    def order_json(self, body, status="accepted"):
        now = stamp()
        order = {
            "id": str(uuid.uuid4()),
            "client_order_id": body.get("client_order_id") or str(uuid.uuid4()),
            "created_at": now,
            "updated_at": now,
            "submitted_at": now,
            "filled_at": None,
            "expired_at": None,
            "canceled_at": None,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": self.assets[0]["id"],
            "symbol": body["symbol"],
            "asset_class": "us_equity",
            "notional": body.get("notional"),
            "qty": body.get("qty"),
            "filled_qty": "0",
            "filled_avg_price": None,
            "order_class": body.get("order_class", ""),
            "order_type": body["type"],
            "type": body["type"],
            "side": body["side"],
            "time_in_force": body["time_in_force"],
            "limit_price": body.get("limit_price"),
            "stop_price": body.get("stop_price"),
            "status": status,
            "extended_hours": body.get("extended_hours", False),
            "legs": None,
            "trail_percent": body.get("trail_percent"),
            "trail_price": body.get("trail_price"),
            "hwm": None,
        }
        return order

    # Orders moving at Alpaca

    def fill(self, order, qty, price):
        """
        Alpaca fills C{qty} of an order at C{price}: the order and the
        position move, a FILL activity is recorded, and a listening stream
        hears the event (a stream that is down never does).
        """
        qty, price = Decimal(qty), Decimal(price)
        done = Decimal(order["filled_qty"])
        average = (Decimal(order["filled_avg_price"] or 0) * done + price * qty) / (done + qty)
        now = stamp()
        order.update(
            filled_qty=str(done + qty),
            filled_avg_price=format(average.quantize(Decimal("1e-9")).normalize(), "f"),
            status="filled" if done + qty >= Decimal(order["qty"]) else "partially_filled",
            updated_at=now,
        )
        if order["status"] == "filled":
            order["filled_at"] = now
        execution_id = str(uuid.uuid4())
        position_qty = self._move_position(order, qty if order["side"] == "buy" else -qty, price)
        kind = "fill" if order["status"] == "filled" else "partial_fill"
        self.activities.append(
            {
                "id": f"{now[:23].replace('-', '').replace(':', '').replace('T', '').replace('.', '')}::{execution_id}",
                "activity_type": "FILL",
                "transaction_time": now,
                "type": kind,
                "price": str(price),
                "qty": str(qty),
                "side": order["side"],
                "symbol": order["symbol"],
                "leaves_qty": str(Decimal(order["qty"]) - done - qty),
                "order_id": order["id"],
                "cum_qty": order["filled_qty"],
                "order_status": order["status"],
            }
        )
        return self.trade_stream.publish(
            kind,
            order,
            execution_id=execution_id,
            price=str(price),
            qty=str(qty),
            position_qty=str(position_qty),
            timestamp=now,
        )

    def move(self, order, event, **changes):
        """Any other event (canceled, expired, replaced...): the order changes, a listening stream hears it."""
        now = stamp()
        order.update(status=changes.pop("status", event), updated_at=now, **changes)
        return self.trade_stream.publish(event, order, timestamp=now)

    def _move_position(self, order, change, price):
        held = next((p for p in self.positions if p["symbol"] == order["symbol"]), None)
        qty = (Decimal(held["qty"]) if held else Decimal(0)) + change
        if held is None:
            held = dict(POSITION, symbol=order["symbol"], avg_entry_price=str(price), asset_id=order["asset_id"])
            self.positions.append(held)
        if qty == 0:
            self.positions.remove(held)
        else:
            entry = Decimal(held["avg_entry_price"])
            held.update(
                qty=str(qty),
                qty_available=str(qty),
                side="long" if qty > 0 else "short",
                cost_basis=str(qty * entry),
                market_value=str(qty * price),
            )
        return qty

    # twisted.web

    def render(self, request):
        path = urlsplit(request.uri.decode()).path
        query = {k.decode(): [v.decode() for v in vs] for k, vs in request.args.items()}
        raw = request.content.read()
        body = json.loads(raw) if raw else None
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.received.append(Received(request.method.decode(), path, query, headers, body))
        request.setHeader(b"content-type", b"application/json")
        if headers.get("apca-api-key-id") != KEY_ID or headers.get("apca-api-secret-key") != SECRET:
            return self._answer(request, 401, {"code": 40110000, "message": "request is not authorized"})
        if self.failures:
            status, error, extra = self.failures.pop(0)
            if status in ("silent", "act-silent"):
                if status == "act-silent":
                    self._route(request, request.method.decode(), path, query, body)
                self.held.append(request)
                return NOT_DONE_YET
            for name, value in extra.items():
                request.setHeader(name.encode(), str(value).encode())
            return self._answer(request, status, error or {"message": "injected failure"})
        return self._route(request, request.method.decode(), path, query, body)

    def _answer(self, request, status, body):
        request.setResponseCode(status)
        return b"" if body is None else json.dumps(body).encode()

    def _route(self, request, method, path, query, body):
        if (method, path) == ("GET", "/v2/account"):
            return self._answer(request, 200, self.account)
        if (method, path) == ("GET", "/v2/assets"):
            status = query.get("status", ["active"])[0]
            return self._answer(request, 200, [a for a in self.assets if a["status"] == status])
        if (method, path) == ("GET", "/v2/positions"):
            return self._answer(request, 200, self.positions)
        if (method, path) == ("GET", "/v2/orders"):
            return self._answer(request, 200, self._list_orders(query))
        if (method, path) == ("GET", "/v2/account/activities/FILL"):
            return self._answer(request, 200, self._list_activities(query))
        if (method, path) == ("POST", "/v2/orders"):
            return self._create_order(request, body)
        if (method, path) == ("GET", "/v2/orders:by_client_order_id"):
            found = [o for o in self.orders if o["client_order_id"] == query["client_order_id"][0]]
            return (
                self._answer(request, 200, found[0])
                if found
                else self._answer(request, 404, {"code": 40410000, "message": "order not found"})
            )
        if path.startswith("/v2/orders/"):
            found = [o for o in self.orders if o["id"] == path.rsplit("/", 1)[1]]
            if not found:
                return self._answer(request, 404, {"code": 40410000, "message": "order not found"})
            if method == "GET":
                return self._answer(request, 200, found[0])
            if method == "DELETE":
                if found[0]["status"] not in OPEN:
                    return self._answer(
                        request, 422, {"code": 42210000, "message": f"order is not cancelable ({found[0]['status']})"}
                    )
                found[0].update(status="canceled", canceled_at=stamp(), updated_at=stamp())
                request.setResponseCode(204)
                return b""
        if (method, path) == ("GET", "/v2/stocks/trades/latest"):
            symbols = query["symbols"][0].split(",")
            trades = {
                s: {
                    "t": "2026-11-24T14:30:00.123456789Z",
                    "x": "V",
                    "p": Decimal_like("189.12"),
                    "s": 100,
                    "c": ["@"],
                    "i": 52983525029461,
                    "z": "C",
                }
                for s in symbols
            }
            return self._raw(request, {"trades": trades})
        if (method, path) == ("GET", "/v2/stocks/quotes/latest"):
            symbols = query["symbols"][0].split(",")
            quotes = {
                s: {
                    "t": "2026-11-24T14:30:00.5Z",
                    "ax": "V",
                    "ap": Decimal_like("189.13"),
                    "as": 2,
                    "bx": "Q",
                    "bp": Decimal_like("189.11"),
                    "bs": 3,
                    "c": ["R"],
                    "z": "C",
                }
                for s in symbols
            }
            return self._raw(request, {"quotes": quotes})
        if method == "GET" and path.startswith("/v2/stocks/") and path.endswith("/bars"):
            start = int(query.get("page_token", ["0"])[0])
            page = self.bars[start : start + 2]
            token = str(start + 2) if start + 2 < len(self.bars) else None
            return self._answer(request, 200, {"bars": page, "symbol": path.split("/")[3], "next_page_token": token})
        return self._answer(request, 404, {"code": 40410000, "message": f"no route {method} {path}"})

    def _raw(self, request, body):
        """The data API's numbers written with every digit (json.dumps would write floats)."""
        request.setResponseCode(200)
        return json.dumps(body, default=str).replace('"@@', "").replace('@@"', "").encode()

    def _list_orders(self, query):
        status = query.get("status", ["open"])[0]
        limit = int(query.get("limit", ["50"])[0])
        after = query.get("after", [None])[0]
        orders = [o for o in self.orders if status == "all" or (o["status"] in OPEN) == (status == "open")]
        if after:
            orders = [o for o in orders if o["created_at"] > after]
        return orders[:limit]

    def _list_activities(self, query):
        after = query["after"][0]
        size = int(query.get("page_size", ["100"])[0])
        token = query.get("page_token", [None])[0]
        found = [a for a in self.activities if a["transaction_time"] > after]
        if token:
            found = found[[a["id"] for a in found].index(token) + 1 :]
        return found[:size]

    def _create_order(self, request, body):
        if any(o["client_order_id"] == body.get("client_order_id") for o in self.orders):
            return self._answer(request, 422, {"code": 40010001, "message": "client_order_id must be unique"})
        if body["symbol"] == "NOPE":
            return self._answer(request, 422, {"code": 40010001, "message": "asset NOPE not found"})
        if body["symbol"] == "POOR":
            return self._answer(request, 403, {"code": 40310000, "message": "insufficient buying power"})
        order = self.order_json(body)
        legs = []
        if "take_profit" in body:
            legs.append(
                self.order_json(
                    {
                        **body,
                        "client_order_id": order["client_order_id"] + "-tp",
                        "type": "limit",
                        "limit_price": body["take_profit"]["limit_price"],
                        "side": _other(body["side"]),
                    },
                    "held",
                )
            )
        if "stop_loss" in body:
            legs.append(
                self.order_json(
                    {
                        **body,
                        "client_order_id": order["client_order_id"] + "-sl",
                        "type": "stop",
                        "stop_price": body["stop_loss"]["stop_price"],
                        "limit_price": None,
                        "side": _other(body["side"]),
                    },
                    "held",
                )
            )
        order["legs"] = legs or None
        self.orders.append(order)
        accepted = json.dumps(order).encode()  # the answer: the order as it was when accepted
        # Alpaca's stream may speak of the order before its answer to the POST arrives.
        self.trade_stream.publish("new", dict(order, status="new"), timestamp=order["updated_at"])
        if self.fill_on_submit:
            self.fill(order, order["qty"], self.fill_on_submit)
        request.setResponseCode(200)
        if not self.answer_delay:
            return accepted
        reactor.callLater(self.answer_delay, lambda: request.finished or (request.write(accepted), request.finish()))
        return NOT_DONE_YET


def Decimal_like(text):
    """A JSON number spelled exactly (the marker is stripped when the body is written)."""
    return f"@@{text}@@"


def _other(side):
    return "sell" if side == "buy" else "buy"


class _StreamConnection(WebSocketServerProtocol):
    """One client of the fake trading stream."""

    listening = False

    def onOpen(self):
        self.factory.stream.connections.append(self)

    def onMessage(self, payload, isBinary):
        stream = self.factory.stream
        message = json.loads(payload)
        stream.heard.append(message)
        if stream.silent:
            return
        if message.get("action") == "auth":
            good = (message.get("key"), message.get("secret")) == (KEY_ID, SECRET) and not stream.refuse_keys
            data = {"action": "authenticate", "status": "authorized" if good else "unauthorized"}
            if not good:
                data["message"] = "access key verification failed"
            self.authorized = good
            self.send("authorization", data)
        elif message.get("action") == "listen" and getattr(self, "authorized", False):
            streams = [s for s in message["data"]["streams"] if s == "trade_updates"]
            self.listening = bool(streams)
            self.send("listening", {"streams": streams})

    def onPing(self, payload):
        if not self.factory.stream.silent:
            self.sendPong(payload)

    def onClose(self, wasClean, code, reason):
        if self in self.factory.stream.connections:
            self.factory.stream.connections.remove(self)

    def send(self, stream, data):
        self.sendMessage(json.dumps({"stream": stream, "data": data}).encode(), isBinary=True)


class TradeStream:
    """The fake's trading stream: what its clients said, and what it sends them."""

    def __init__(self):
        self.connections = []
        self.heard = []
        self.sent = []
        self.silent = False
        self.refuse_keys = False

    def listening(self):
        return [c for c in self.connections if c.listening]

    def publish(self, event, order, **fields):
        """Send a trade_updates event carrying the order as it is now to every listening client."""
        data = {"event": event, "order": json.loads(json.dumps(order)), **fields}
        self.sent.append(data)
        self.repeat(data)
        return data

    def repeat(self, data):
        """Send an event (again) to every listening client."""
        for connection in self.listening():
            connection.send("trade_updates", data)

    def drop(self):
        """Drop every connection: from now until a client listens again, events are lost."""
        for connection in list(self.connections):
            connection.listening = False
            connection.dropConnection(abort=True)


class _MarketConnection(WebSocketServerProtocol):
    """One client of a fake market-data stream: text frames, every message an array, as Alpaca's."""

    def onOpen(self):
        market = self.factory.market
        market.connections.append(self)
        self.subscribed = set()
        self.authenticated = False
        if len(market.connections) > market.max_connections:
            market.over_limit += 1
            self.send({"T": "error", "code": 406, "msg": "connection limit exceeded"})
            self.sendClose()
            return
        self.send({"T": "success", "msg": "connected"})

    def onMessage(self, payload, isBinary):
        market = self.factory.market
        message = json.loads(payload)
        market.heard.append(message)
        action = message.get("action")
        if action == "auth":
            if (message.get("key"), message.get("secret")) != (KEY_ID, SECRET):
                self.send({"T": "error", "code": 402, "msg": "auth failed"})
                self.sendClose()
                return
            self.authenticated = True
            self.send({"T": "success", "msg": "authenticated"})
        elif action in ("subscribe", "unsubscribe") and self.authenticated:
            symbols = set(message.get("trades", ())) | set(message.get("quotes", ()))
            self.subscribed = self.subscribed | symbols if action == "subscribe" else self.subscribed - symbols
            listed = sorted(self.subscribed)
            self.send({"T": "subscription", "trades": listed, "quotes": listed, "bars": []})

    def onClose(self, wasClean, code, reason):
        if self in self.factory.market.connections:
            self.factory.market.connections.remove(self)

    def send(self, *items):
        self.sendMessage(json.dumps(list(items)).replace('"@@', "").replace('@@"', "").encode())


class MarketStream:
    """A fake market-data stream (stocks or crypto): what its clients asked, and the ticks it sends them."""

    def __init__(self):
        self.connections = []
        self.heard = []
        self.max_connections = 1
        self.over_limit = 0  # connections refused with 406

    def subscribed(self):
        return set().union(*(c.subscribed for c in self.connections)) if self.connections else set()

    def send(self, *items):
        """One message (an array) of trades and quotes, to every client subscribed to their symbols."""
        for connection in list(self.connections):
            wanted = [item for item in items if item["S"] in connection.subscribed]
            if wanted:
                connection.send(*wanted)

    def drop(self):
        for connection in list(self.connections):
            connection.dropConnection(abort=True)


def trade(symbol, t, price, size=100, i=1, c=("@",), z="C", x="V"):
    """A stream trade, its price a JSON number written with every digit."""
    return {"T": "t", "S": symbol, "i": i, "x": x, "p": Decimal_like(price), "s": size, "t": t, "c": list(c), "z": z}


def quote(symbol, t, bid, ask, bid_size=3, ask_size=2, c=("R",), z="C"):
    return {
        "T": "q",
        "S": symbol,
        "bx": "Q",
        "bp": Decimal_like(bid),
        "bs": bid_size,
        "ax": "V",
        "ap": Decimal_like(ask),
        "as": ask_size,
        "t": t,
        "c": list(c),
        "z": z,
    }


def _market_site(stocks, crypto):
    root = Resource()
    for path, market in ((b"v2/iex", stocks), (b"v1beta3/crypto/us", crypto)):
        factory = WebSocketServerFactory()
        factory.protocol = _MarketConnection
        factory.market = market
        parent = root
        *parents, leaf = path.split(b"/")
        for name in parents:
            child = parent.children.get(name) or Resource()
            parent.putChild(name, child)
            parent = child
        parent.putChild(leaf, WebSocketResource(factory))
    return Site(root)


async def start_fake_alpaca(test):
    fake = FakeAlpaca()
    factory = WebSocketServerFactory()
    factory.protocol = _StreamConnection
    factory.stream = fake.trade_stream
    root = Resource()
    root.putChild(b"v2", fake)
    root.putChild(b"stream", WebSocketResource(factory))
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(Site(root))
    test.addCleanup(port.stopListening)
    test.addCleanup(fake.trade_stream.drop)
    test.addCleanup(fake.release)
    fake.url = f"http://127.0.0.1:{port.getHost().port}"
    fake.stocks, fake.crypto = MarketStream(), MarketStream()
    data = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(_market_site(fake.stocks, fake.crypto))
    test.addCleanup(data.stopListening)
    test.addCleanup(fake.stocks.drop)
    test.addCleanup(fake.crypto.drop)
    fake.data_stream_url = f"ws://127.0.0.1:{data.getHost().port}"
    return fake
