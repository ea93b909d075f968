"""
The Alpaca REST client: parsing, pagination, retries and errors against the
fake Alpaca in memory (treq's StubTreq) on a task.Clock, so that every wait
is an exact clock advance; one end-to-end test against the fake on loopback;
and the shared retry loop it uses.
"""

from decimal import Decimal

from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from tradehub.alpaca import convert
from tradehub.alpaca.client import MAX_WAIT, AlpacaClient, AlpacaRejected, AlpacaUnavailable, order_request
from tradehub.retry import retrying
from tradehub.schema import Timestamp

from . import rows
from .fake_alpaca import KEY_ID, SECRET, FakeAlpaca, start_fake_alpaca

BASE_URL = "https://paper-api.alpaca.markets"
DATA_URL = "https://data.alpaca.markets"
NOW = 1_795_000_000.0  # X-RateLimit-Reset is a Unix time: start the clock at a plausible one


def http_client():
    """treq without kept-alive connections, so each test leaves the reactor clean."""
    return HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))


def alpaca_for(fake, **options):
    """A client of the fake Alpaca on loopback, on the real reactor."""
    settings = dict(
        key_id=KEY_ID, secret_key=SECRET, base_url=fake.url, data_url=fake.url, timeout=2.0, retries=3, backoff=0.01
    )
    settings.update(options)
    return AlpacaClient(http_client(), reactor, **settings)


class StubbedClientTests(SynchronousTestCase):
    """
    The client against the fake Alpaca in memory. A call answers at once
    unless it waits on the clock (a retry's backoff, a timeout), so tests
    advance the clock by exactly the waits they expect.
    """

    def setUp(self):
        self.fake = FakeAlpaca()
        self.addCleanup(self.fake.release)
        self.clock = Clock()
        self.clock.advance(NOW)
        self.alpaca = self.client()

    def client(self, **options):
        settings = dict(
            key_id=KEY_ID, secret_key=SECRET, base_url=BASE_URL, data_url=DATA_URL, timeout=2.0, retries=3, backoff=1.0
        )
        settings.update(options)
        return AlpacaClient(StubTreq(self.fake), self.clock, **settings)

    def answer(self, coroutine):
        """The result of a call that must not wait on the clock."""
        return self.successResultOf(ensureDeferred(coroutine))

    def advance_expecting(self, steps, call):
        """
        Advance the clock step by step; after each step Alpaca must have
        received the given number of requests and C{call} must not be done
        until the last step.
        """
        for index, (seconds, requests) in enumerate(steps):
            self.clock.advance(seconds)
            self.assertEqual(len(self.fake.received), requests, f"after step {index} ({seconds} s)")
            if index < len(steps) - 1:
                self.assertNoResult(call)

    def test_account_maps_every_field_exactly(self):
        account = self.answer(self.alpaca.account())
        self.assertEqual(account["id"], "904837e3-3b76-47ec-b432-046db621571b")
        self.assertEqual(account["cash"], Decimal("-23140.200000001"))
        self.assertEqual((account["multiplier"], account["buying_power"]), (Decimal(4), Decimal("262113.632")))
        self.assertEqual(account["created_at"], convert.timestamp("2019-06-12T22:47:07.99658Z"))
        self.assertEqual(account["created_at"].ns % 10**9, 996580000)
        sent = self.fake.received[-1]
        self.assertEqual((sent.headers["apca-api-key-id"], sent.headers["apca-api-secret-key"]), (KEY_ID, SECRET))

    def test_assets_positions_and_market_data(self):
        assets = self.answer(self.alpaca.assets())
        self.assertEqual([a["symbol"] for a in assets], ["AAPL", "BTC/USD"])
        self.assertEqual(
            (assets[0]["price_increment"], assets[0]["maintenance_margin_requirement"]), (Decimal("0.01"), Decimal(30))
        )
        [position] = self.answer(self.alpaca.positions(rows.ACCOUNT_ID))
        self.assertEqual((position["qty"], position["avg_entry_price"]), (Decimal(5), Decimal("100.123456789")))
        [trade] = self.answer(self.alpaca.latest_trades(["AAPL"]))
        self.assertEqual(
            (trade["price"], trade["size"], trade["seq"]), (Decimal("189.12"), Decimal(100), 52983525029461)
        )
        self.assertEqual(trade["ts"].ns % 10**9, 123456789)
        [quote] = self.answer(self.alpaca.latest_quotes(["AAPL"]))
        self.assertEqual((quote["bid_price"], quote["ask_price"]), (Decimal("189.11"), Decimal("189.13")))
        bars = self.answer(self.alpaca.bars("AAPL", "1Min", "2026-11-20T00:00:00Z"))
        self.assertEqual(len(bars), 5)
        self.assertEqual(bars[0]["vwap"], Decimal("100.4321"))
        self.assertEqual(
            [r.query.get("page_token") for r in self.fake.received if r.path.endswith("/bars")], [None, ["2"], ["4"]]
        )
        hosts = {r.path: r.headers["host"] for r in self.fake.received}
        self.assertEqual(
            (hosts["/v2/positions"], hosts["/v2/stocks/trades/latest"]),
            ("paper-api.alpaca.markets", "data.alpaca.markets"),
        )

    def test_orders_paginate_to_exhaustion(self):
        for i in range(1203):
            self.fake.orders.append(
                self.fake.order_json(
                    {
                        "client_order_id": f"c{i:05d}",
                        "symbol": "AAPL",
                        "qty": "1",
                        "side": "buy",
                        "type": "market",
                        "time_in_force": "day",
                    }
                )
            )
        orders = self.answer(self.alpaca.orders(rows.ACCOUNT_ID))
        self.assertEqual([o["client_order_id"] for o in orders], [f"c{i:05d}" for i in range(1203)])
        pages = [r for r in self.fake.received if r.path == "/v2/orders"]
        self.assertEqual(len(pages), 3)
        self.assertEqual(pages[1].query["after"], [self.fake.orders[499]["created_at"]])

    def test_rate_limit_and_server_errors_are_retried_honouring_headers(self):
        self.fake.fail_next(429, {"message": "too many requests"}, {"X-RateLimit-Reset": NOW + 30})
        self.fake.fail_next(503)
        call = ensureDeferred(self.alpaca.account())
        # The rate-limit reset (30 s) is waited for, then the doubled backoff (2 s) after the 503.
        self.advance_expecting([(0, 1), (29.5, 1), (0.5, 2), (1.5, 2), (0.5, 3)], call)
        account = self.successResultOf(call)
        self.assertEqual(account["account_number"], "PA3BF2V1ZQZF")
        self.assertEqual(len(self.fake.received), 3)
        self.assertEqual(self.clock.seconds() - NOW, 32)

    def test_retry_after_is_honoured_up_to_a_minute(self):
        self.fake.fail_next(429, None, {"Retry-After": 5})
        self.fake.fail_next(429, None, {"Retry-After": 3600})
        self.fake.fail_next(503)
        call = ensureDeferred(self.alpaca.account())
        # 5 s asked; an hour asked but MAX_WAIT waited; then the backoff, doubled twice: 4 s.
        self.assertEqual(MAX_WAIT, 60)
        self.advance_expecting([(4.5, 1), (0.5, 2), (59.5, 2), (0.5, 3), (3.5, 3), (0.5, 4)], call)
        self.assertEqual(self.successResultOf(call)["currency"], "USD")

    def test_rate_limit_headers_never_shorten_the_backoff(self):
        self.fake.fail_next(429, None, {"Retry-After": 0})
        self.fake.fail_next(429, None, {"X-RateLimit-Reset": NOW - 100})
        self.fake.fail_next(429, None, {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT", "X-RateLimit-Reset": NOW + 13})
        call = ensureDeferred(self.alpaca.account())
        # Backoff 1 s and 2 s win over "now"; a Retry-After date is not understood, the reset 10 s away is.
        self.advance_expecting([(0.5, 1), (0.5, 2), (1.5, 2), (0.5, 3), (9.5, 3), (0.5, 4)], call)
        self.assertEqual(self.successResultOf(call)["currency"], "USD")

    def test_retries_are_bounded(self):
        self.fake.fail_next(500, times=4)
        call = ensureDeferred(self.alpaca.account())
        self.advance_expecting([(0, 1), (1, 2), (2, 3), (4, 4)], call)
        failure = self.failureResultOf(call, AlpacaUnavailable)
        self.assertEqual(str(failure.value), "GET /v2/account: HTTP 500")
        self.assertEqual(len(self.fake.received), 4)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_client_errors_are_typed_and_not_retried(self):
        self.fake.fail_next(422, {"code": 40010001, "message": "qty must be > 0"})
        refused = self.failureResultOf(ensureDeferred(self.alpaca.account()), AlpacaRejected)
        self.assertEqual(
            (refused.value.status, refused.value.code, refused.value.message), (422, 40010001, "qty must be > 0")
        )
        self.assertEqual(len(self.fake.received), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_slow_answers_time_out_and_are_retried(self):
        alpaca = self.client(timeout=0.5)
        self.fake.stay_silent_next()
        call = ensureDeferred(alpaca.account())
        # Timed out after 0.5 s, retried after the 1 s backoff.
        self.advance_expecting([(0.25, 1), (0.25, 1), (0.75, 1), (0.25, 2)], call)
        account = self.successResultOf(call)
        self.assertEqual(account["currency"], "USD")
        self.assertEqual(len(self.fake.received), 2)

    def test_timeouts_are_retried_a_bounded_number_of_times(self):
        self.fake.stay_silent_next(times=4)
        call = ensureDeferred(self.alpaca.account())
        # Four 2 s timeouts with backoffs of 1, 2 and 4 s between them.
        self.advance_expecting([(2, 1), (1, 2), (2, 2), (2, 3), (2, 3), (4, 4), (1.5, 4), (0.5, 4)], call)
        failure = self.failureResultOf(call, AlpacaUnavailable)
        self.assertEqual(str(failure.value), "GET /v2/account: ResponseNeverReceived")
        self.assertEqual(self.clock.seconds() - NOW, 15)

    def test_submitting_the_same_client_order_id_twice_makes_one_order(self):
        order = rows.order(client_order_id="idem-1", qty=Decimal("3"), limit_price=Decimal("189.12"))
        first = self.answer(self.alpaca.submit(order))
        second = self.answer(self.alpaca.submit(order))
        self.assertEqual(len(self.fake.orders), 1)
        self.assertEqual(first[0]["id"], second[0]["id"])
        self.assertEqual(self.fake.received[0].body["client_order_id"], "idem-1")
        self.assertEqual(self.fake.received[0].body["limit_price"], "189.12")

    def test_keys_never_reach_the_log(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.fake.fail_next(503)
        self.fake.stay_silent_next()
        call = ensureDeferred(self.alpaca.account())
        self.clock.pump([1, 2, 2])
        self.successResultOf(call)
        self.assertTrue(events)
        self.assertNotIn(SECRET, repr(events))
        self.assertNotIn(KEY_ID, repr(events))
        retries = [(e["reason"], e["wait"]) for e in events if e.get("log_namespace", "").endswith("AlpacaClient")]
        self.assertEqual(retries, [("GET /v2/account: HTTP 503", 1.0), ("GET /v2/account: ResponseNeverReceived", 2.0)])


class LoopbackTests(TestCase):
    """The one end-to-end test: real HTTP to the fake Alpaca on 127.0.0.1, on the real reactor."""

    timeout = 60

    async def test_calls_retries_and_timeouts_over_a_real_connection(self):
        fake = await start_fake_alpaca(self)
        alpaca = alpaca_for(fake, timeout=0.3)
        fake.fail_next(503)
        fake.stay_silent_next()
        account = await alpaca.account()
        self.assertEqual(account["account_number"], "PA3BF2V1ZQZF")
        self.assertEqual([r.path for r in fake.received], ["/v2/account"] * 3)
        sent = fake.received[-1]
        self.assertEqual((sent.headers["apca-api-key-id"], sent.headers["apca-api-secret-key"]), (KEY_ID, SECRET))
        [submitted, *legs] = await alpaca.submit(rows.order(client_order_id="loop-1", qty=Decimal("3")))
        self.assertEqual((submitted["client_order_id"], submitted["qty"], legs), ("loop-1", Decimal(3), []))
        self.assertEqual((fake.received[-1].method, fake.received[-1].body["qty"]), ("POST", "3"))
        [listed] = await alpaca.orders(rows.ACCOUNT_ID)
        self.assertEqual(listed["id"], submitted["id"])
        self.assertEqual(fake.received[-1].query["status"], ["all"])


class ConvertTests(SynchronousTestCase):
    def test_rfc3339_keeps_every_digit_and_converts_offsets(self):
        self.assertEqual(convert.timestamp("2024-04-24T18:26:49.434425542Z"), Timestamp(1713983209434425542))
        self.assertEqual(
            convert.timestamp("2024-04-24T20:26:49.5+02:00"), convert.timestamp("2024-04-24T18:26:49.500Z")
        )
        self.assertRaises(ValueError, convert.timestamp, "yesterday")

    def test_order_maps_every_field_and_its_legs(self):
        body = {
            "id": "61e69015-8549-4bfd-b9c3-01e75843f47d",
            "client_order_id": "eb9e2aaa-f71a-4f51-b5b4-52a6c565dad4",
            "created_at": "2021-03-16T18:38:01.942282Z",
            "updated_at": "2021-03-16T18:38:01.942282Z",
            "submitted_at": "2021-03-16T18:38:01.937734Z",
            "filled_at": "2021-03-16T18:38:02.123456789Z",
            "expired_at": None,
            "canceled_at": None,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
            "symbol": "AAPL",
            "asset_class": "us_equity",
            "notional": None,
            "qty": "2.5",
            "filled_qty": "2.5",
            "filled_avg_price": "189.123456789",
            "order_class": "bracket",
            "order_type": "limit",
            "type": "limit",
            "side": "buy",
            "time_in_force": "gtc",
            "limit_price": "189.2",
            "stop_price": None,
            "status": "filled",
            "extended_hours": True,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "legs": [
                {
                    "id": "a1e69015-8549-4bfd-b9c3-01e75843f47d",
                    "client_order_id": "leg-1",
                    "created_at": "2021-03-16T18:38:01.942282Z",
                    "updated_at": None,
                    "submitted_at": None,
                    "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
                    "symbol": "AAPL",
                    "asset_class": "us_equity",
                    "qty": "2.5",
                    "filled_qty": "0",
                    "order_class": "bracket",
                    "type": "limit",
                    "side": "sell",
                    "time_in_force": "gtc",
                    "limit_price": "200",
                    "status": "held",
                    "extended_hours": False,
                    "legs": None,
                }
            ],
        }
        parent, leg = convert.order(body, rows.ACCOUNT_ID)
        self.assertEqual(
            {
                k: parent[k]
                for k in ("id", "account_id", "order_class", "type", "time_in_force", "status", "extended_hours")
            },
            {
                "id": body["id"],
                "account_id": rows.ACCOUNT_ID,
                "order_class": "bracket",
                "type": "limit",
                "time_in_force": "gtc",
                "status": "filled",
                "extended_hours": True,
            },
        )
        self.assertEqual(
            (parent["qty"], parent["filled_avg_price"], parent["limit_price"]),
            (Decimal("2.5"), Decimal("189.123456789"), Decimal("189.2")),
        )
        self.assertEqual(parent["filled_at"].ns % 10**9, 123456789)
        self.assertEqual(parent["submitted_at"], convert.timestamp("2021-03-16T18:38:01.937734Z"))
        self.assertIsNone(parent["notional"])
        self.assertEqual(
            (leg["parent_client_order_id"], leg["status"], leg["limit_price"]),
            (body["client_order_id"], "held", Decimal(200)),
        )
        self.assertEqual(leg["updated_at"], leg["created_at"])
        self.assertEqual(set(parent), set(rows.order()))

    def test_bracket_order_request_carries_its_legs(self):
        parent = rows.order(order_class="bracket", type="market", limit_price=None, qty=Decimal("2"))
        take = rows.order(type="limit", limit_price=Decimal("200"), side="sell")
        stop = rows.order(type="stop", stop_price=Decimal("180"), limit_price=None, side="sell")
        body = order_request(parent, [take, stop])
        self.assertEqual(body["order_class"], "bracket")
        self.assertEqual((body["take_profit"], body["stop_loss"]), ({"limit_price": "200"}, {"stop_price": "180"}))
        self.assertEqual(body["qty"], "2")


class Flaky:
    """An attempt that fails with the queued errors, then answers "done"; it records when it was called."""

    def __init__(self, clock, *errors):
        self.clock = clock
        self.errors = list(errors)
        self.calls = []

    async def __call__(self):
        self.calls.append(self.clock.seconds())
        if self.errors:
            raise self.errors.pop(0)
        return "done"


class Transient(Exception):
    pass


class RetryTests(SynchronousTestCase):
    """The shared backoff loop of tradehub.retry, driven by a task.Clock."""

    def setUp(self):
        self.clock = Clock()
        self.retries = []

    def run_retrying(self, attempt, **options):
        settings = dict(
            clock=self.clock,
            retries=3,
            delay=1.0,
            retryable=lambda error: isinstance(error, Transient),
            on_retry=lambda error, wait: self.retries.append((str(error), wait)),
        )
        settings.update(options)
        return ensureDeferred(retrying(attempt, **settings))

    def test_delays_double_between_tries(self):
        attempt = Flaky(self.clock, Transient("a"), Transient("b"), Transient("c"))
        done = self.run_retrying(attempt)
        steps = [(0.5, [0]), (0.5, [0, 1]), (1.5, [0, 1]), (0.5, [0, 1, 3]), (3.5, [0, 1, 3]), (0.5, [0, 1, 3, 7])]
        for step, calls in steps:
            self.clock.advance(step)
            self.assertEqual(attempt.calls, calls)
        self.assertEqual(self.successResultOf(done), "done")
        self.assertEqual(self.retries, [("a", 1.0), ("b", 2.0), ("c", 4.0)])

    def test_the_wait_override_wins_and_the_backoff_still_doubles_beneath_it(self):
        attempt = Flaky(self.clock, Transient("slow down"), Transient("again"), Transient("ok"))
        asked = []

        def wait(error, delay):
            asked.append(delay)
            return 10.0 if str(error) == "slow down" else delay

        done = self.run_retrying(attempt, wait=wait)
        self.clock.advance(9.5)
        self.assertEqual(attempt.calls, [0], "the override, not the 1 s backoff, sets the first wait")
        self.clock.pump([0.5, 2, 4])
        self.assertEqual(self.successResultOf(done), "done")
        self.assertEqual(attempt.calls, [0, 10, 12, 16])
        self.assertEqual(asked, [1.0, 2.0, 4.0])
        self.assertEqual(self.retries, [("slow down", 10.0), ("again", 2.0), ("ok", 4.0)])

    def test_a_failure_not_worth_retrying_is_raised_at_once(self):
        attempt = Flaky(self.clock, ValueError("final"))
        failure = self.failureResultOf(self.run_retrying(attempt), ValueError)
        self.assertEqual(str(failure.value), "final")
        self.assertEqual((attempt.calls, self.retries, self.clock.getDelayedCalls()), ([0], [], []))

    def test_the_last_failure_is_raised_when_the_retries_are_spent(self):
        attempt = Flaky(self.clock, Transient("1"), Transient("2"), Transient("3"), Transient("4"), Transient("5"))
        done = self.run_retrying(attempt)
        self.clock.pump([1, 2, 4])
        failure = self.failureResultOf(done, Transient)
        self.assertEqual(str(failure.value), "4")
        self.assertEqual(attempt.calls, [0, 1, 3, 7])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_retries_means_one_try(self):
        attempt = Flaky(self.clock, Transient("once"))
        self.failureResultOf(self.run_retrying(attempt, retries=0), Transient)
        self.assertEqual((attempt.calls, self.retries), ([0], []))
