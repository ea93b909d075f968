"""
The whole loop, pushed end to end against the fake Alpaca and real
PostgreSQL: Alpaca market data -> ticks -> an ML subscriber -> its
prediction -> a frontend subscriber -> the frontend's order, submitted ->
the fake's REST accepts it -> the fake's trading stream fills it -> the
frontend's ORDER subscription sees it filled.
"""

from decimal import Decimal

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tradehub.alpaca.market_data import MarketData, is_crypto
from tradehub.alpaca.stream import Stream
from tradehub.alpaca.sync import AlpacaSync
from tradehub.alpaca.trade_updates import TradeUpdates, stream_url
from tradehub.client.asynchronous import connect
from tradehub.controllers import build_controllers
from tradehub.protocol.enums import Role, SQLTable

from . import rows, wire
from .fake_alpaca import KEY_ID, SECRET, start_fake_alpaca, trade
from .hub import start_hub, table_registry
from .test_alpaca_client import alpaca_for
from .test_trade_updates import until


class LoopTests(TestCase):
    timeout = 60

    async def setUp(self):
        self.fake = await start_fake_alpaca(self)
        broker = alpaca_for(self.fake)
        self.hub = await start_hub(self, table_registry, push=True, broker=broker)
        controllers = build_controllers(self.hub.pool)
        sync = AlpacaSync(broker, controllers, reactor, every=15, assets_every=86400)
        self.updates = TradeUpdates(
            sync, KEY_ID, SECRET, lambda h: Stream("trading", stream_url(self.fake.url), h, reactor=reactor)
        )
        self.market = MarketData(
            "stocks",
            controllers[SQLTable.MARKET_TICK],
            KEY_ID,
            SECRET,
            [],
            lambda symbol: not is_crypto(symbol),
            lambda h: Stream("stocks", self.fake.data_stream_url + "/v2/iex", h, reactor=reactor),
        )
        self.hub.feed.watch_symbols(SQLTable.MARKET_TICK, self.market.followed)
        for service in (self.updates, self.market):
            service.startService()
            self.addCleanup(service.stopService)
        await until(lambda: self.updates.trusted)

    async def client(self, role, token):
        client = await connect(reactor, f"tcp:127.0.0.1:{self.hub.port}", role, token)
        self.addCleanup(lambda: client.transport.connected and client.transport.loseConnection())
        return client

    async def test_market_data_to_a_prediction_to_an_order_to_its_fill_all_pushed(self):
        ml = await self.client(Role.ML, wire.ML_TOKEN)
        frontend = await self.client(Role.FRONTEND, wire.FRONTEND_TOKEN)
        model = rows.model(status="ready")
        await ml.insert(SQLTable.ML_MODEL, [model])
        ticks = await ml.subscribe(SQLTable.MARKET_TICK, symbols=["AAPL"])
        predictions = await frontend.subscribe(SQLTable.ML_PREDICTION, model_ids=[model["id"]])
        orders = await frontend.subscribe(SQLTable.ORDER)
        # The ML side's subscription made the hub subscribe upstream.
        await until(lambda: self.market.upstream == {"AAPL"})

        self.fake.stocks.send(trade("AAPL", "2026-11-25T14:30:00.123456789Z", "189.12", i=11))
        tick = (await ticks.__anext__()).row
        self.assertEqual((tick["symbol"], tick["price"]), ("AAPL", Decimal("189.12")))

        await ml.insert(SQLTable.ML_PREDICTION, [rows.prediction(model["id"], symbol="AAPL", ts=tick["ts"])])
        prediction = (await predictions.__anext__()).row
        self.assertEqual(prediction["symbol"], "AAPL")

        self.fake.fill_on_submit = "189.13"
        order = rows.order(client_order_id="from-prediction", submit=True, type="market", limit_price=None)
        [answered] = (await frontend.insert(SQLTable.ORDER, [order])).rows
        self.assertEqual(answered["id"], self.fake.orders[0]["id"])
        async for change in orders:
            if change.row["client_order_id"] == "from-prediction" and change.row["status"] == "filled":
                break
        self.assertEqual((change.row["filled_qty"], change.row["filled_avg_price"]), (Decimal(10), Decimal("189.13")))
        [fill] = [e for e in self.fake.trade_stream.sent if e["event"] == "fill"]
        [stored_trade] = (await frontend.select(SQLTable.TRADE, keys=[{"id": fill["execution_id"]}])).rows
        self.assertEqual(stored_trade["client_order_id"], "from-prediction")
