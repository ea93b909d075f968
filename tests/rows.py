"""Valid rows of every table, with values that stress exactness: nanoseconds, 9-place decimals."""

import uuid
from decimal import Decimal

from tradehub.schema import Timestamp

T0 = 1_700_000_000_123_456_789


def ts(offset_ns=0):
    return Timestamp(T0 + offset_ns)


def new_id():
    return str(uuid.uuid4())


ACCOUNT_ID = "1d5493c9-ea39-4377-aa94-340734c368ae"
ASSET_ID = "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415"


def account(**changes):
    row = dict(
        id=ACCOUNT_ID,
        account_number="PA3ABCDEFGH",
        status="ACTIVE",
        currency="USD",
        cash=Decimal("100000.123456789"),
        buying_power=Decimal("400000.5"),
        regt_buying_power=Decimal("200000"),
        daytrading_buying_power=None,
        non_marginable_buying_power=Decimal("100000"),
        equity=Decimal("100000.123456789"),
        last_equity=Decimal("99000"),
        long_market_value=Decimal("0"),
        short_market_value=Decimal("0"),
        portfolio_value=Decimal("100000.123456789"),
        initial_margin=Decimal("0"),
        maintenance_margin=Decimal("0"),
        last_maintenance_margin=None,
        sma=Decimal("0"),
        multiplier=Decimal("4"),
        daytrade_count=0,
        pattern_day_trader=False,
        trading_blocked=False,
        transfers_blocked=False,
        account_blocked=False,
        trade_suspended_by_user=False,
        shorting_enabled=True,
        created_at=ts(-(10**15)),
        updated_at=ts(),
    )
    row.update(changes)
    return row


def asset(**changes):
    row = dict(
        id=ASSET_ID,
        **{"class": "us_equity"},
        exchange="NASDAQ",
        symbol="AAPL",
        name="Apple Inc. Common Stock",
        status="active",
        tradable=True,
        marginable=True,
        shortable=True,
        easy_to_borrow=True,
        fractionable=True,
        min_order_size=None,
        min_trade_increment=None,
        price_increment=Decimal("0.01"),
        maintenance_margin_requirement=Decimal("30"),
        updated_at=ts(7),
    )
    row.update(changes)
    return row


def order(**changes):
    row = dict(
        client_order_id=new_id(),
        id=None,
        account_id=None,
        asset_id=None,
        symbol="AAPL",
        asset_class="us_equity",
        side="buy",
        type="limit",
        time_in_force="day",
        order_class="simple",
        parent_client_order_id=None,
        qty=Decimal("10"),
        notional=None,
        limit_price=Decimal("189.12"),
        stop_price=None,
        trail_price=None,
        trail_percent=None,
        hwm=None,
        extended_hours=False,
        submit=False,
        status="new",
        status_message=None,
        filled_qty=Decimal("0"),
        filled_avg_price=None,
        replaced_by=None,
        replaces=None,
        created_at=ts(1),
        updated_at=ts(2),
        submitted_at=None,
        filled_at=None,
        expired_at=None,
        canceled_at=None,
        failed_at=None,
        replaced_at=None,
    )
    row.update(changes)
    return row


def position(**changes):
    row = dict(
        account_id=ACCOUNT_ID,
        symbol="AAPL",
        asset_id=ASSET_ID,
        exchange="NASDAQ",
        asset_class="us_equity",
        side="long",
        qty=Decimal("10"),
        qty_available=Decimal("10"),
        avg_entry_price=Decimal("189.123456789"),
        market_value=Decimal("1900"),
        cost_basis=Decimal("1891.23456789"),
        unrealized_pl=Decimal("8.76543211"),
        unrealized_plpc=Decimal("0.004634"),
        unrealized_intraday_pl=None,
        unrealized_intraday_plpc=None,
        current_price=Decimal("190"),
        lastday_price=Decimal("188"),
        change_today=Decimal("0.0106"),
        updated_at=ts(3),
    )
    row.update(changes)
    return row


def trade(client_order_id, **changes):
    row = dict(
        id=new_id(),
        client_order_id=client_order_id,
        symbol="AAPL",
        side="buy",
        qty=Decimal("4"),
        price=Decimal("189.1"),
        fee=Decimal("0.000000001"),
        liquidity="taker",
        executed_at=ts(5),
    )
    row.update(changes)
    return row


def tick(seq=1, **changes):
    row = dict(
        symbol="AAPL",
        ts=ts(seq),
        seq=seq,
        kind="trade",
        price=Decimal("189.123456789"),
        size=Decimal("100"),
        bid_price=None,
        bid_size=None,
        ask_price=None,
        ask_size=None,
        exchange="V",
        conditions=["@", "T"],
        tape="C",
    )
    row.update(changes)
    return row


def quote(seq=1, **changes):
    return tick(
        seq,
        kind="quote",
        price=None,
        size=None,
        bid_price=Decimal("189.1"),
        bid_size=Decimal("3"),
        ask_price=Decimal("189.2"),
        ask_size=Decimal("5"),
        conditions=[],
        **changes,
    )


def model(**changes):
    row = dict(
        id=new_id(),
        name="momentum",
        version=new_id()[:8],
        framework="lightgbm",
        hyperparameters='{"rate": 0.05, "depth": 6}',
        metrics='{"auc": 0.61}',
        artifact=b"\x00model\xff",
        artifact_uri=None,
        status="ready",
        created_at=ts(11),
    )
    row.update(changes)
    return row


def prediction(model_id, **changes):
    row = dict(
        id=new_id(),
        model_id=model_id,
        symbol="AAPL",
        ts=ts(20),
        horizon=300,
        value=0.0123,
        confidence=0.87,
        predicted_side="buy",
        created_at=ts(21),
    )
    row.update(changes)
    return row


def label(**changes):
    row = dict(
        id=new_id(),
        symbol="AAPL",
        ts=ts(30),
        horizon=300,
        label_class="up",
        label_value=0.5,
        feature_set_id=None,
        created_at=ts(31),
    )
    row.update(changes)
    return row


def features(**changes):
    row = dict(
        id=new_id(),
        name="basic",
        version="1",
        symbol="AAPL",
        ts=ts(40),
        features=[1.5, -2.25, 1e-300],
        feature_names=["ret_1m", "ret_5m", "tiny"],
        created_at=ts(41),
    )
    row.update(changes)
    return row


def indicator(**changes):
    row = dict(
        id=new_id(),
        symbol="AAPL",
        ts=ts(50),
        name="macd",
        parameters='{"fast": 12, "slow": 26, "signal": 9}',
        values=[0.5, 0.25, 0.25],
        created_at=ts(51),
    )
    row.update(changes)
    return row
