"""
Alpaca's market-data stream in the hub (tradehub/alpaca/market_data.py):
against the fake's stream on loopback and real PostgreSQL, trades and
quotes land as MARKET_TICK rows, exactly, and reach an ML subscriber; the
upstream subscription follows the hub's own subscribers. On a hand-driven
stream: each of Alpaca's errors gets its policy, and a feed faster than the
database is read no faster than it is stored.
"""

import json
from decimal import Decimal

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tradehub.alpaca import market_data
from tradehub.alpaca.market_data import MarketData, is_crypto
from tradehub.alpaca.stream import Stream
from tradehub.client.asynchronous import connect
from tradehub.controllers import build_controllers
from tradehub.protocol.enums import Role, SQLTable
from tradehub.schema.timestamp import Timestamp

from . import wire
from .fake_alpaca import KEY_ID, SECRET, Decimal_like, quote, start_fake_alpaca, trade
from .hub import start_hub, table_registry
from .test_trade_updates import until

T1 = "2026-11-24T14:30:00.123456789Z"
T2 = "2026-11-24T14:30:00.987654321Z"


class MarketStreamTests(TestCase):
    timeout = 60

    async def setUp(self):
        self.fake = await start_fake_alpaca(self)
        self.hub = await start_hub(self, table_registry, push=True)
        self.market = MarketData(
            "stocks",
            build_controllers(self.hub.pool)[SQLTable.MARKET_TICK],
            KEY_ID,
            SECRET,
            ["AAPL"],
            lambda symbol: not is_crypto(symbol),
            lambda handler: Stream(
                "stocks", self.fake.data_stream_url + "/v2/iex", handler, reactor=reactor, backoff=(0.05, 0.2)
            ),
        )
        self.hub.feed.watch_symbols(SQLTable.MARKET_TICK, self.market.followed)
        self.market.startService()
        self.addCleanup(self.market.stopService)
        await until(lambda: self.market.upstream == {"AAPL"})

    def auths(self):
        return sum(1 for m in self.fake.stocks.heard if m["action"] == "auth")

    async def ml(self):
        client = await connect(reactor, f"tcp:127.0.0.1:{self.hub.port}", Role.ML, wire.ML_TOKEN)
        self.addCleanup(lambda: client.transport.connected and client.transport.loseConnection())
        return client

    async def test_trades_and_quotes_land_exactly_and_reach_a_subscriber(self):
        client = await self.ml()
        ticks = await client.subscribe(SQLTable.MARKET_TICK, symbols=["AAPL"])
        self.fake.stocks.send(
            trade("AAPL", T1, "189.1234", size=100, i=52983525029461, c=("@", "I")),
            quote("AAPL", T2, "189.11", "189.13"),
            trade("MSFT", T1, "420.5"),  # not subscribed: Alpaca would not send it, the fake does not
        )
        events = [await ticks.__anext__(), await ticks.__anext__()]
        rows = [e.row for e in events]
        self.assertEqual(
            [(r["kind"], r["ts"], r["seq"]) for r in rows],
            [("trade", Timestamp.from_rfc3339(T1), 52983525029461), ("quote", Timestamp.from_rfc3339(T2), 0)],
        )
        self.assertEqual(
            (rows[0]["price"], rows[0]["size"], rows[0]["conditions"]), (Decimal("189.1234"), 100, ["@", "I"])
        )
        self.assertEqual((rows[0]["exchange"], rows[0]["tape"]), ("V", "C"))
        self.assertEqual((rows[1]["bid_price"], rows[1]["ask_price"]), (Decimal("189.11"), Decimal("189.13")))
        # The events may come (on the LISTEN connection) before the INSERT's own answer.
        await until(lambda: self.market.stored == 2 and self.market._writing is None)

    async def test_crypto_streams_from_its_own_endpoint_and_lands_exactly(self):
        crypto = MarketData(
            "crypto",
            build_controllers(self.hub.pool)[SQLTable.MARKET_TICK],
            KEY_ID,
            SECRET,
            ["BTC/USD"],
            is_crypto,
            lambda handler: Stream(
                "crypto", self.fake.data_stream_url + "/v1beta3/crypto/us", handler, reactor=reactor
            ),
        )
        self.hub.feed.watch_symbols(SQLTable.MARKET_TICK, crypto.followed)
        crypto.startService()
        self.addCleanup(crypto.stopService)
        await until(lambda: crypto.upstream == {"BTC/USD"})
        client = await self.ml()
        await client.subscribe(SQLTable.MARKET_TICK, symbols=["ETH/USD", "MSFT"])
        await until(lambda: crypto.upstream == {"BTC/USD", "ETH/USD"} and self.market.upstream == {"AAPL", "MSFT"})
        # Crypto trades carry a taker side and no tape or conditions.
        self.fake.crypto.send(
            {
                "T": "t",
                "S": "BTC/USD",
                "p": Decimal_like("97123.5"),
                "s": Decimal_like("0.000123456"),
                "t": T1,
                "i": 4711,
                "tks": "B",
            }
        )
        await until(lambda: crypto.stored == 1 and crypto._writing is None)
        page = await client.select(SQLTable.MARKET_TICK, symbol="BTC/USD", limit=10)
        [row] = page.rows
        self.assertEqual(
            (row["price"], row["size"], row["seq"], row["conditions"], row["tape"]),
            (Decimal("97123.5"), Decimal("0.000123456"), 4711, [], None),
        )

    async def test_quotes_of_one_instant_are_all_kept_and_a_repeat_is_stored_once(self):
        client = await self.ml()
        batch = [quote("AAPL", T1, "189.1", "189.2"), quote("AAPL", T1, "189.1", "189.3")]
        self.fake.stocks.send(*batch)
        self.fake.stocks.send(*batch)
        self.fake.stocks.send(trade("AAPL", T2, "189.2"))
        await until(lambda: self.market.stored == 5 and self.market._writing is None)
        page = await client.select(SQLTable.MARKET_TICK, symbol="AAPL", limit=10)
        self.assertEqual(
            [(r["kind"], r["seq"], r["ask_price"]) for r in page.rows],
            [("quote", 0, Decimal("189.2")), ("quote", 1, Decimal("189.3")), ("trade", 1, None)],
        )

    async def test_the_upstream_subscription_follows_the_hubs_subscribers(self):
        first, second = await self.ml(), await self.ml()
        one = await first.subscribe(SQLTable.MARKET_TICK, symbols=["msft"])
        await until(lambda: self.market.upstream == {"AAPL", "MSFT"})
        two = await second.subscribe(SQLTable.MARKET_TICK, symbols=["MSFT", "NVDA"])
        await until(lambda: self.market.upstream == {"AAPL", "MSFT", "NVDA"})
        everything = await second.subscribe(SQLTable.MARKET_TICK)  # no symbols: asks for nothing upstream
        await one.cancel()
        self.assertEqual(self.fake.stocks.subscribed(), {"AAPL", "MSFT", "NVDA"})
        await two.cancel()
        # The configured symbol stays whoever leaves.
        await until(lambda: self.market.upstream == {"AAPL"})
        self.assertEqual(
            [m for m in self.fake.stocks.heard if m["action"] != "auth"],
            [
                {"action": "subscribe", "trades": ["AAPL"], "quotes": ["AAPL"]},
                {"action": "subscribe", "trades": ["MSFT"], "quotes": ["MSFT"]},
                {"action": "subscribe", "trades": ["NVDA"], "quotes": ["NVDA"]},
                {"action": "unsubscribe", "trades": ["MSFT", "NVDA"], "quotes": ["MSFT", "NVDA"]},
            ],
        )
        await everything.cancel()

    async def test_after_a_drop_it_subscribes_again_to_all_it_wants(self):
        client = await self.ml()
        await client.subscribe(SQLTable.MARKET_TICK, symbols=["TSLA"])
        await until(lambda: self.market.upstream == {"AAPL", "TSLA"})
        auths = self.auths()
        self.fake.stocks.drop()
        await until(lambda: self.auths() > auths and self.market.upstream == {"AAPL", "TSLA"})
        self.assertEqual(
            self.fake.stocks.heard[-1], {"action": "subscribe", "trades": ["AAPL", "TSLA"], "quotes": ["AAPL", "TSLA"]}
        )


class Hand:
    def __init__(self):
        self.sent, self.dropped, self.held_off, self.paused = [], [], [], []
        self.streamed = 0

    def send(self, message):
        self.sent.append(message)

    def drop(self, reason):
        self.dropped.append(reason)

    def hold_off(self, seconds):
        self.held_off.append(seconds)

    def streaming(self):
        self.streamed += 1

    def pause(self):
        self.paused.append(True)

    def resume(self):
        self.paused.append(False)

    def startService(self):
        pass


class Ticks:
    """A MARKET_TICK controller whose writes finish when the test says."""

    def __init__(self):
        self.writes = []

    def insert_feed(self, rows):
        done = Deferred()
        self.writes.append((rows, done))
        return done


class HandDrivenTests(SynchronousTestCase):
    def setUp(self):
        self.hand = Hand()
        self.ticks = Ticks()
        self.market = MarketData("stocks", self.ticks, "key", "secret", ["AAPL"], lambda s: True, lambda h: self.hand)
        self.market.startService()
        self.market.opened(self.hand)

    def hear(self, *items):
        """Items as the stream decodes them: the fake's exact numbers become Decimals."""
        text = json.dumps(list(items)).replace('"@@', "").replace('@@"', "")
        self.market.received(self.hand, json.loads(text, parse_float=Decimal))

    def test_it_authenticates_when_told_it_is_connected_then_subscribes(self):
        self.hear({"T": "success", "msg": "connected"})
        self.assertEqual(self.hand.sent, [{"action": "auth", "key": "key", "secret": "secret"}])
        self.hear({"T": "success", "msg": "authenticated"})
        self.assertEqual(self.hand.sent[-1], {"action": "subscribe", "trades": ["AAPL"], "quotes": ["AAPL"]})
        self.hear({"T": "subscription", "trades": ["AAPL"], "quotes": ["AAPL"], "bars": []})
        self.assertEqual((self.market.upstream, self.hand.streamed), ({"AAPL"}, 1))

    def test_each_error_gets_its_policy(self):
        waits = {}
        for code in (401, 402, 404, 406, 409, 405, 500):
            self.hand.held_off.clear()
            self.hand.dropped.clear()
            self.hear({"T": "error", "code": code, "msg": "from the test"})
            waits[code] = (self.hand.held_off[:], len(self.hand.dropped))
        refused = ([market_data.REFUSED_WAIT], 1)
        self.assertEqual(
            waits,
            {
                401: refused,
                402: refused,
                404: refused,
                406: ([market_data.CONNECTION_LIMIT_WAIT], 1),
                409: ([market_data.FEED_REFUSED_WAIT], 1),
                405: ([], 0),  # what is subscribed stays
                500: ([], 0),
            },
        )

    def test_writes_are_coalesced_and_a_backlog_pauses_the_stream(self):
        self.patch(market_data, "MAX_WAITING", 4)
        self.hear(trade("AAPL", T1, "1", i=1))
        self.assertEqual(len(self.ticks.writes), 1)
        for i in range(2, 7):
            self.hear(trade("AAPL", T1, "1", i=i))
        self.assertEqual(len(self.ticks.writes), 1, "one write at a time")
        self.assertEqual(self.hand.paused, [True])
        self.ticks.writes[0][1].callback([])
        self.assertEqual([len(rows) for rows, _ in self.ticks.writes], [1, 5], "what waited goes in together")
        self.ticks.writes[1][1].callback([])
        self.assertEqual(self.hand.paused, [True, False])
        self.assertEqual(self.market.stored, 6)

    def test_a_malformed_tick_is_left_and_the_rest_are_stored(self):
        self.hear({"T": "t", "S": "AAPL", "t": T1}, trade("AAPL", T1, "1"))
        [(rows, _)] = self.ticks.writes
        self.assertEqual(len(rows), 1)
        self.assertEqual(self.market.left, 1)
