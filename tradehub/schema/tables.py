"""
The eleven tables, declared once: their columns (name, kind, meaning), keys
and the rules that are data (allowed values, the order status graph). The
wire layouts, the SQL, the documents and the C++ header derive from these.
"""

from __future__ import annotations

from .kinds import (
    BOOL,
    BYTES,
    DECIMAL,
    FLOAT,
    FLOAT_LIST,
    INT32,
    INT64,
    JSON,
    SYMBOL,
    TEXT,
    TEXT_LIST,
    TIMESTAMP,
    UUID,
)
from .model import Column, SQLTable, Table

_c = Column


# How far along its life an order is: a status may only stay or move up, and
# a final status (3) never changes. Its keys are the statuses an order may have.
ORDER_PROGRESS = {
    "new": 1,
    "accepted": 1,
    "pending_new": 0,
    "partially_filled": 2,
    "filled": 3,
    "done_for_day": 2,
    "canceled": 3,
    "expired": 3,
    "replaced": 3,
    "pending_cancel": 2,
    "pending_replace": 2,
    "stopped": 2,
    "rejected": 3,
    "suspended": 1,
    "calculated": 2,
    "accepted_for_bidding": 1,
    "held": 1,
}
ORDER_STATUSES = tuple(ORDER_PROGRESS)
FINAL_STATUSES = frozenset(s for s, progress in ORDER_PROGRESS.items() if progress == 3)


def status_may_move(old: str, new: str) -> bool:
    return old == new or (old not in FINAL_STATUSES and ORDER_PROGRESS[new] >= ORDER_PROGRESS[old])


def report_may_move(old: str, new: str) -> bool:
    """Alpaca may also refuse a cancel or a replace: the order goes back to where it was."""
    return status_may_move(old, new) or old in ("pending_cancel", "pending_replace")


ACCOUNT_STATUSES = (
    "ONBOARDING",
    "SUBMISSION_FAILED",
    "SUBMITTED",
    "ACCOUNT_UPDATED",
    "APPROVAL_PENDING",
    "ACTIVE",
    "REJECTED",
    "INACTIVE",
    "DISABLED",
    "ACCOUNT_CLOSED",
)
ASSET_CLASSES = ("us_equity", "us_option", "crypto")
SIDES = ("buy", "sell")


def _money(name, doc, optional=False):
    return _c(name, DECIMAL, doc, optional=optional)


ACCOUNT = Table(
    SQLTable.ACCOUNT,
    "account",
    [
        _c("id", UUID, "Alpaca's account id"),
        _c("account_number", TEXT, "Alpaca's account number"),
        _c("status", TEXT, "account status", choices=ACCOUNT_STATUSES),
        _c("currency", TEXT, "three-letter upper-case currency code"),
        _money("cash", "cash balance; never negative when multiplier is 1"),
        _money("buying_power", "current buying power"),
        _money("regt_buying_power", "Reg T buying power", True),
        _money("daytrading_buying_power", "day-trading buying power", True),
        _money("non_marginable_buying_power", "buying power for non-marginable assets", True),
        _money("equity", "cash + long_market_value + short_market_value"),
        _money("last_equity", "equity at the last trading day's close"),
        _money("long_market_value", "value of the long positions"),
        _money("short_market_value", "value of the short positions"),
        _money("portfolio_value", "total value", True),
        _money("initial_margin", "Reg T initial margin requirement"),
        _money("maintenance_margin", "maintenance margin requirement"),
        _money("last_maintenance_margin", "maintenance margin at the last close", True),
        _money("sma", "special memorandum account value", True),
        _c("multiplier", DECIMAL, "1 cash account, 2 or 4 margin account"),
        _c("daytrade_count", INT32, "day trades in the last five trading days"),
        _c("pattern_day_trader", BOOL, "flagged as a pattern day trader"),
        _c("trading_blocked", BOOL, "orders are not allowed"),
        _c("transfers_blocked", BOOL, "transfers are not allowed"),
        _c("account_blocked", BOOL, "all activity is prohibited"),
        _c("trade_suspended_by_user", BOOL, "the user suspended trading"),
        _c("shorting_enabled", BOOL, "short selling is allowed"),
        _c("created_at", TIMESTAMP, "when the account was opened"),
        _c("updated_at", TIMESTAMP, "when this row was last synced"),
    ],
    key=("id",),
    doc="Alpaca accounts (GET /v2/account).",
)

ASSET = Table(
    SQLTable.ASSET,
    "asset",
    [
        _c("id", UUID, "Alpaca's asset id"),
        _c("class", TEXT, "asset class", choices=ASSET_CLASSES),
        _c("exchange", TEXT, "primary exchange"),
        _c("symbol", SYMBOL, "ticker; stored upper-case, unique per class"),
        _c("name", TEXT, "the asset's name"),
        _c("status", TEXT, "listing status", choices=("active", "inactive")),
        _c("tradable", BOOL, "tradable at Alpaca"),
        _c("marginable", BOOL, "marginable"),
        _c("shortable", BOOL, "shortable"),
        _c("easy_to_borrow", BOOL, "easy to borrow"),
        _c("fractionable", BOOL, "fractional orders allowed"),
        _c("min_order_size", DECIMAL, "smallest order quantity", optional=True),
        _c("min_trade_increment", DECIMAL, "quantity increment", optional=True),
        _c("price_increment", DECIMAL, "price tick: order prices must be multiples of it", optional=True),
        _c("maintenance_margin_requirement", DECIMAL, "maintenance margin requirement", optional=True),
        _c("updated_at", TIMESTAMP, "when this row was last synced"),
    ],
    key=("id",),
    doc="Instruments (GET /v2/assets).",
)

ORDER = Table(
    SQLTable.ORDER,
    "order",
    [
        _c("client_order_id", TEXT, "the client's id: unique, the key a retry uses (1-128 chars)"),
        _c("id", UUID, "Alpaca's order id, once submitted", optional=True),
        _c("account_id", UUID, "the account", optional=True),
        _c("asset_id", UUID, "the asset", optional=True),
        _c("symbol", SYMBOL, "ticker, upper-case"),
        _c("asset_class", TEXT, "asset class", choices=ASSET_CLASSES),
        _c("side", TEXT, "side", choices=SIDES),
        _c("type", TEXT, "order type", choices=("market", "limit", "stop", "stop_limit", "trailing_stop")),
        _c("time_in_force", TEXT, "time in force", choices=("day", "gtc", "opg", "cls", "ioc", "fok")),
        _c("order_class", TEXT, "order class", choices=("simple", "bracket", "oco", "oto", "mleg")),
        _c("parent_client_order_id", TEXT, "the parent order of a leg", optional=True),
        _c("qty", DECIMAL, "quantity; exactly one of qty and notional", optional=True),
        _c("notional", DECIMAL, "dollar amount; market day orders only", optional=True),
        _c("limit_price", DECIMAL, "required for limit and stop_limit", optional=True),
        _c("stop_price", DECIMAL, "required for stop and stop_limit", optional=True),
        _c("trail_price", DECIMAL, "trailing_stop: exactly one of trail_price and trail_percent", optional=True),
        _c("trail_percent", DECIMAL, "trailing_stop: exactly one of trail_price and trail_percent", optional=True),
        _c("hwm", DECIMAL, "high-water mark of a trailing stop", optional=True),
        _c("extended_hours", BOOL, "may fill outside regular hours"),
        _c("submit", BOOL, "the hub submits this order to Alpaca"),
        _c("status", TEXT, "status; moves only forward", choices=ORDER_STATUSES),
        _c("status_message", TEXT, "why the order was rejected, when it was", optional=True),
        _c("filled_qty", DECIMAL, "quantity filled so far, 0..qty"),
        _c("filled_avg_price", DECIMAL, "average fill price", optional=True),
        _c("replaced_by", UUID, "the order that replaced this one", optional=True),
        _c("replaces", UUID, "the order this one replaced", optional=True),
        _c("created_at", TIMESTAMP, "when the order was created"),
        _c("updated_at", TIMESTAMP, "when the order last changed"),
        _c("submitted_at", TIMESTAMP, "when it was submitted", optional=True),
        _c("filled_at", TIMESTAMP, "when it was filled", optional=True),
        _c("expired_at", TIMESTAMP, "when it expired", optional=True),
        _c("canceled_at", TIMESTAMP, "when it was canceled", optional=True),
        _c("failed_at", TIMESTAMP, "when it failed", optional=True),
        _c("replaced_at", TIMESTAMP, "when it was replaced", optional=True),
    ],
    key=("client_order_id",),
    follow=("account_id",),
    doc=(
        "Orders (GET /v2/orders). DELETE of a live order is refused: cancel it with an UPDATE to status canceled. "
        "An INSERT whose rows say `submit` (one order, with the legs of a bracket, oco or oto order) is stored as "
        "pending_new, submitted to Alpaca with its client_order_id and answered with Alpaca's id and status; "
        "Alpaca's refusal answers VALIDATION_FAILED (CONFLICT for buying power) and leaves the row rejected; "
        "no answer from Alpaca is BUSY, and the same INSERT again resumes it (never a second Alpaca order). "
        "An UPDATE to canceled of a submitted order cancels it at Alpaca first."
    ),
)

POSITION = Table(
    SQLTable.POSITION,
    "position",
    [
        _c("account_id", UUID, "the account"),
        _c("symbol", SYMBOL, "ticker, upper-case"),
        _c("asset_id", UUID, "the asset", optional=True),
        _c("exchange", TEXT, "exchange"),
        _c("asset_class", TEXT, "asset class", choices=ASSET_CLASSES),
        _c("side", TEXT, "long (qty >= 0) or short (qty <= 0)", choices=("long", "short")),
        _c("qty", DECIMAL, "quantity; negative for short positions"),
        _c("qty_available", DECIMAL, "quantity not held by open orders"),
        _c("avg_entry_price", DECIMAL, "average entry price; above 0 while qty is not 0"),
        _c("market_value", DECIMAL, "market value", optional=True),
        _c("cost_basis", DECIMAL, "cost basis"),
        _c("unrealized_pl", DECIMAL, "unrealized profit/loss", optional=True),
        _c("unrealized_plpc", DECIMAL, "unrealized profit/loss percent", optional=True),
        _c("unrealized_intraday_pl", DECIMAL, "unrealized intraday profit/loss", optional=True),
        _c("unrealized_intraday_plpc", DECIMAL, "unrealized intraday profit/loss percent", optional=True),
        _c("current_price", DECIMAL, "current price", optional=True),
        _c("lastday_price", DECIMAL, "last trading day's close", optional=True),
        _c("change_today", DECIMAL, "percent change since the last close", optional=True),
        _c("updated_at", TIMESTAMP, "when this row was last synced"),
    ],
    key=("account_id", "symbol"),
    follow=("account_id",),
    doc="Positions per account and symbol (GET /v2/positions).",
)

TRADE = Table(
    SQLTable.TRADE,
    "trade",
    [
        _c("id", UUID, "the execution's id"),
        _c("client_order_id", TEXT, "the order filled; it must exist"),
        _c("symbol", SYMBOL, "ticker, upper-case"),
        _c("side", TEXT, "side", choices=SIDES),
        _c("qty", DECIMAL, "quantity filled, above 0"),
        _c("price", DECIMAL, "fill price, above 0"),
        _c("fee", DECIMAL, "fee, 0 or more"),
        _c("liquidity", TEXT, "liquidity flag", optional=True, choices=("maker", "taker")),
        _c("executed_at", TIMESTAMP, "when it executed"),
    ],
    key=("id",),
    doc="Executions (fills). An INSERT also updates the order's filled_qty, filled_avg_price and status.",
    series="executed_at",
)

MARKET_TICK = Table(
    SQLTable.MARKET_TICK,
    "market_tick",
    [
        _c("symbol", SYMBOL, "ticker, upper-case"),
        _c("ts", TIMESTAMP, "the feed's timestamp, nanoseconds kept"),
        _c("seq", INT64, "the feed's sequence number for this symbol and time"),
        _c("kind", TEXT, "trade or quote", choices=("trade", "quote")),
        _c("price", DECIMAL, "trades: price", optional=True),
        _c("size", DECIMAL, "trades: size", optional=True),
        _c("bid_price", DECIMAL, "quotes: bid price", optional=True),
        _c("bid_size", DECIMAL, "quotes: bid size", optional=True),
        _c("ask_price", DECIMAL, "quotes: ask price", optional=True),
        _c("ask_size", DECIMAL, "quotes: ask size", optional=True),
        _c("exchange", TEXT, "exchange code", optional=True),
        _c("conditions", TEXT_LIST, "condition codes"),
        _c("tape", TEXT, "tape", optional=True),
    ],
    key=("symbol", "ts", "seq"),
    doc="Trades and quotes of the data feed: the hot table.",
    series="ts",
)

ML_MODEL = Table(
    SQLTable.ML_MODEL,
    "ml_model",
    [
        _c("id", UUID, "the model's id"),
        _c("name", TEXT, "model name"),
        _c("version", TEXT, "version; unique with name"),
        _c("framework", TEXT, "training framework"),
        _c("hyperparameters", JSON, "JSON object, stored as jsonb"),
        _c("metrics", JSON, "JSON object, stored as jsonb"),
        _c("artifact", BYTES, "the serialized model", optional=True),
        _c("artifact_uri", TEXT, "where the artifact lives instead", optional=True),
        _c("status", TEXT, "lifecycle", choices=("training", "ready", "retired")),
        _c("created_at", TIMESTAMP, "when it was registered", optional=True, hub_default=True),
    ],
    key=("id",),
    doc="Trained models. A large artifact's RESPONSE spans several frames.",
)

ML_PREDICTION = Table(
    SQLTable.ML_PREDICTION,
    "ml_prediction",
    [
        _c("id", UUID, "the prediction's id"),
        _c("model_id", UUID, "the model; it must exist and be ready"),
        _c("symbol", SYMBOL, "ticker, upper-case"),
        _c("ts", TIMESTAMP, "the time the prediction is for"),
        _c("horizon", INT64, "horizon in seconds, above 0"),
        _c("value", FLOAT, "predicted value"),
        _c("confidence", FLOAT, "confidence in [0, 1]"),
        _c("predicted_side", TEXT, "suggested side", optional=True, choices=("buy", "sell", "hold")),
        _c("created_at", TIMESTAMP, "when it was made", optional=True, hub_default=True),
    ],
    key=("id",),
    follow=("model_id",),
    doc="Model predictions; unique per (model_id, symbol, ts, horizon).",
    series="ts",
)

LABELED_DATA = Table(
    SQLTable.LABELED_DATA,
    "labeled_data",
    [
        _c("id", UUID, "the label's id"),
        _c("symbol", SYMBOL, "ticker, upper-case"),
        _c("ts", TIMESTAMP, "the time labeled"),
        _c("horizon", INT64, "horizon in seconds, above 0"),
        _c("label_class", TEXT, "class name; label_class or label_value or both", optional=True),
        _c("label_value", FLOAT, "label value", optional=True),
        _c("feature_set_id", UUID, "the feature set it was computed from", optional=True),
        _c("created_at", TIMESTAMP, "when it was made", optional=True, hub_default=True),
    ],
    key=("id",),
    doc="Training labels.",
    series="ts",
)

FEATURE_SET = Table(
    SQLTable.FEATURE_SET,
    "feature_set",
    [
        _c("id", UUID, "the vector's id"),
        _c("name", TEXT, "feature set name"),
        _c("version", TEXT, "feature set version"),
        _c("symbol", SYMBOL, "ticker, upper-case"),
        _c("ts", TIMESTAMP, "the time the features describe"),
        _c("features", FLOAT_LIST, "the feature values"),
        _c(
            "feature_names",
            TEXT_LIST,
            "names of the features, kept once per (name, version): give them with the first vector, "
            "then give them again identically or leave the list empty",
            computed=True,
        ),
        _c("created_at", TIMESTAMP, "when it was made", optional=True, hub_default=True),
    ],
    key=("id",),
    doc="Feature vectors; every vector of a (name, version) has one value per feature name.",
    series="ts",
)

TECHNICAL_INDICATOR = Table(
    SQLTable.TECHNICAL_INDICATOR,
    "technical_indicator",
    [
        _c("id", UUID, "the value's id"),
        _c("symbol", SYMBOL, "ticker, upper-case"),
        _c("ts", TIMESTAMP, "the time of the value"),
        _c("name", TEXT, "indicator: sma, ema, rsi, macd, ... (lower-case)"),
        _c("parameters", JSON, "JSON object of the indicator's parameters, stored as jsonb"),
        _c("values", FLOAT_LIST, "the value(s), at least one (macd has three)"),
        _c("created_at", TIMESTAMP, "when it was computed", optional=True, hub_default=True),
    ],
    key=("id",),
    follow=("name",),
    doc="Technical indicators; unique per (symbol, ts, name, parameters).",
    series="ts",
)

TABLES = {
    table.id: table
    for table in (
        ACCOUNT,
        ASSET,
        ORDER,
        POSITION,
        TRADE,
        MARKET_TICK,
        ML_MODEL,
        ML_PREDICTION,
        LABELED_DATA,
        FEATURE_SET,
        TECHNICAL_INDICATOR,
    )
}
