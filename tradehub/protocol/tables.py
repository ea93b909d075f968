"""
Every table's wire layouts, declared once: its columns (name, wire type,
meaning) and its key. The five commands' request layouts, the response
layout, the SQL the repositories run and the documentation all derive from
these declarations.
"""

import attrs

from .enums import SQLCommand, SQLTable
from .wire import (
    Field,
    Layout,
    WireType,
    blob,
    boolean,
    decimal_,
    f64,
    i32,
    i64,
    list_of,
    opt,
    string,
    text,
    timestamp,
    u32,
)

DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000


@attrs.frozen
class Column:
    """
    One column. C{kind} says how it is stored: uuid, text, json, decimal,
    timestamp (timestamptz plus <name>_ns), bool, int, float, bytes,
    text_list, float_list. C{choices} are the allowed values of a text column.
    A C{computed} column travels on the wire but is not a column of the
    table: its controller writes it elsewhere and its repository reads it back.
    """

    name: str
    kind: str
    doc: str
    optional: bool = False
    choices: tuple = ()
    hub_default: bool = False
    computed: bool = False

    @property
    def wire(self):
        base = _WIRE[self.kind]
        return opt(base) if self.optional else base

    @property
    def field(self):
        doc = self.doc
        if self.choices:
            doc += " (" + ", ".join(self.choices) + ")"
        if self.hub_default:
            doc += "; absent: the hub's clock"
        return Field(self.name, self.wire, doc)


_WIRE = {
    "uuid": string,
    "text": string,
    "json": text,
    "decimal": decimal_,
    "timestamp": timestamp,
    "bool": boolean,
    "int": i64,
    "int32": i32,
    "float": f64,
    "bytes": blob,
    "text_list": list_of(string),
    "float_list": list_of(f64),
}


def _row_type(name, layout):
    return WireType(name, layout.struct, layout.size, f"{name} (dict)", layout=layout)


class TableSpec:
    """
    A table as the wire sees it. C{series} names the time column of a
    time-series table (SELECT by symbol and time window, in time order).
    C{echo_writes}: whether write answers carry the stored rows (the tick
    hot path answers with the count only).
    """

    def __init__(self, table, sql_name, columns, key, doc, series=None, echo_writes=True):
        self.table = table
        self.sql_name = sql_name
        self.columns = tuple(columns)
        self.by_name = {c.name: c for c in self.columns}
        self.key = tuple(key)
        self.doc = doc
        self.series = series
        self.echo_writes = echo_writes
        title = table.name
        self.row = Layout(f"{title} row", [c.field for c in self.columns])
        self.key_row = Layout(f"{title} key", [self.by_name[k].field for k in self.key])
        self.sort = ((series,) if series else ()) + self.key
        self.cursor = Layout(f"{title} cursor", [self.by_name[k].field for k in self.sort])
        row_type = _row_type(f"{title} row", self.row)
        key_type = _row_type(f"{title} key", self.key_row)
        self.rows_request = Layout(
            f"{title} rows",
            [Field("rows", list_of(row_type), "the rows, written all or none")],
        )
        self.keys_request = Layout(f"{title} keys", [Field("keys", list_of(key_type), "the keys of the rows")])
        select_fields = [
            Field("keys", list_of(key_type), "rows with these keys; empty: no key filter"),
            Field("symbol", opt(string), "only rows of this symbol" if "symbol" in self.by_name else "must be absent"),
        ]
        if series:
            select_fields += [
                Field("since", opt(timestamp), f"only rows with {series} at or after this"),
                Field("until", opt(timestamp), f"only rows with {series} before this"),
            ]
        select_fields += [
            Field("limit", u32, f"most rows to return; 0 means {DEFAULT_LIMIT}; at most {MAX_LIMIT}"),
            Field("after", opt(blob), "next_cursor of the previous page; absent for the first page"),
        ]
        self.select_request = Layout(f"{title} select", select_fields)
        self.response = Layout(
            f"{title} response",
            [
                Field("affected", u32, "rows written, or rows in this page"),
                Field("rows", list_of(row_type), "the rows as stored" + ("" if echo_writes else " (SELECT only)")),
                Field("next_cursor", opt(blob), "SELECT: pass as `after` for the next page; absent on the last page"),
            ],
        )

    def request(self, command):
        return {
            SQLCommand.INSERT: self.rows_request,
            SQLCommand.UPSERT: self.rows_request,
            SQLCommand.UPDATE: self.rows_request,
            SQLCommand.DELETE: self.keys_request,
            SQLCommand.SELECT: self.select_request,
        }[command]


def _c(name, kind, doc, **options):
    return Column(name, kind, doc, **options)


ORDER_STATUSES = (
    "new", "accepted", "pending_new", "partially_filled", "filled", "done_for_day", "canceled", "expired",
    "replaced", "pending_cancel", "pending_replace", "stopped", "rejected", "suspended", "calculated",
    "accepted_for_bidding", "held",
)
ACCOUNT_STATUSES = (
    "ONBOARDING", "SUBMISSION_FAILED", "SUBMITTED", "ACCOUNT_UPDATED", "APPROVAL_PENDING", "ACTIVE",
    "REJECTED", "INACTIVE", "DISABLED", "ACCOUNT_CLOSED",
)
ASSET_CLASSES = ("us_equity", "us_option", "crypto")
SIDES = ("buy", "sell")


def _money(name, doc, optional=False):
    return _c(name, "decimal", doc, optional=optional)


ACCOUNT = TableSpec(
    SQLTable.ACCOUNT,
    "account",
    [
        _c("id", "uuid", "Alpaca's account id"),
        _c("account_number", "text", "Alpaca's account number"),
        _c("status", "text", "account status", choices=ACCOUNT_STATUSES),
        _c("currency", "text", "three-letter upper-case currency code"),
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
        _c("multiplier", "decimal", "1 cash account, 2 or 4 margin account"),
        _c("daytrade_count", "int32", "day trades in the last five trading days"),
        _c("pattern_day_trader", "bool", "flagged as a pattern day trader"),
        _c("trading_blocked", "bool", "orders are not allowed"),
        _c("transfers_blocked", "bool", "transfers are not allowed"),
        _c("account_blocked", "bool", "all activity is prohibited"),
        _c("trade_suspended_by_user", "bool", "the user suspended trading"),
        _c("shorting_enabled", "bool", "short selling is allowed"),
        _c("created_at", "timestamp", "when the account was opened"),
        _c("updated_at", "timestamp", "when this row was last synced"),
    ],
    key=("id",),
    doc="Alpaca accounts (GET /v2/account).",
)

ASSET = TableSpec(
    SQLTable.ASSET,
    "asset",
    [
        _c("id", "uuid", "Alpaca's asset id"),
        _c("class", "text", "asset class", choices=ASSET_CLASSES),
        _c("exchange", "text", "primary exchange"),
        _c("symbol", "text", "ticker; stored upper-case, unique per class"),
        _c("name", "text", "the asset's name"),
        _c("status", "text", "listing status", choices=("active", "inactive")),
        _c("tradable", "bool", "tradable at Alpaca"),
        _c("marginable", "bool", "marginable"),
        _c("shortable", "bool", "shortable"),
        _c("easy_to_borrow", "bool", "easy to borrow"),
        _c("fractionable", "bool", "fractional orders allowed"),
        _c("min_order_size", "decimal", "smallest order quantity", optional=True),
        _c("min_trade_increment", "decimal", "quantity increment", optional=True),
        _c("price_increment", "decimal", "price tick: order prices must be multiples of it", optional=True),
        _c("maintenance_margin_requirement", "decimal", "maintenance margin requirement", optional=True),
        _c("updated_at", "timestamp", "when this row was last synced"),
    ],
    key=("id",),
    doc="Instruments (GET /v2/assets).",
)

ORDER = TableSpec(
    SQLTable.ORDER,
    "order",
    [
        _c("client_order_id", "text", "the client's id: unique, the key a retry uses (1-128 chars)"),
        _c("id", "uuid", "Alpaca's order id, once submitted", optional=True),
        _c("account_id", "uuid", "the account", optional=True),
        _c("asset_id", "uuid", "the asset", optional=True),
        _c("symbol", "text", "ticker, upper-case"),
        _c("asset_class", "text", "asset class", choices=ASSET_CLASSES),
        _c("side", "text", "side", choices=SIDES),
        _c("type", "text", "order type", choices=("market", "limit", "stop", "stop_limit", "trailing_stop")),
        _c("time_in_force", "text", "time in force", choices=("day", "gtc", "opg", "cls", "ioc", "fok")),
        _c("order_class", "text", "order class", choices=("simple", "bracket", "oco", "oto", "mleg")),
        _c("parent_client_order_id", "text", "the parent order of a leg", optional=True),
        _c("qty", "decimal", "quantity; exactly one of qty and notional", optional=True),
        _c("notional", "decimal", "dollar amount; market day orders only", optional=True),
        _c("limit_price", "decimal", "required for limit and stop_limit", optional=True),
        _c("stop_price", "decimal", "required for stop and stop_limit", optional=True),
        _c("trail_price", "decimal", "trailing_stop: exactly one of trail_price and trail_percent", optional=True),
        _c("trail_percent", "decimal", "trailing_stop: exactly one of trail_price and trail_percent", optional=True),
        _c("hwm", "decimal", "high-water mark of a trailing stop", optional=True),
        _c("extended_hours", "bool", "may fill outside regular hours"),
        _c("submit", "bool", "the hub submits this order to Alpaca"),
        _c("status", "text", "status; moves only forward", choices=ORDER_STATUSES),
        _c("status_message", "text", "why the order was rejected, when it was", optional=True),
        _c("filled_qty", "decimal", "quantity filled so far, 0..qty"),
        _c("filled_avg_price", "decimal", "average fill price", optional=True),
        _c("replaced_by", "uuid", "the order that replaced this one", optional=True),
        _c("replaces", "uuid", "the order this one replaced", optional=True),
        _c("created_at", "timestamp", "when the order was created"),
        _c("updated_at", "timestamp", "when the order last changed"),
        _c("submitted_at", "timestamp", "when it was submitted", optional=True),
        _c("filled_at", "timestamp", "when it was filled", optional=True),
        _c("expired_at", "timestamp", "when it expired", optional=True),
        _c("canceled_at", "timestamp", "when it was canceled", optional=True),
        _c("failed_at", "timestamp", "when it failed", optional=True),
        _c("replaced_at", "timestamp", "when it was replaced", optional=True),
    ],
    key=("client_order_id",),
    doc=(
        "Orders (GET /v2/orders). DELETE of a live order is refused: cancel it with an UPDATE to status canceled. "
        "An INSERT whose rows say `submit` (one order, with the legs of a bracket, oco or oto order) is stored as "
        "pending_new, submitted to Alpaca with its client_order_id and answered with Alpaca's id and status; "
        "Alpaca's refusal answers VALIDATION_FAILED (CONFLICT for buying power) and leaves the row rejected; "
        "no answer from Alpaca is BUSY, and the same INSERT again resumes it (never a second Alpaca order). "
        "An UPDATE to canceled of a submitted order cancels it at Alpaca first."
    ),
)

POSITION = TableSpec(
    SQLTable.POSITION,
    "position",
    [
        _c("account_id", "uuid", "the account"),
        _c("symbol", "text", "ticker, upper-case"),
        _c("asset_id", "uuid", "the asset", optional=True),
        _c("exchange", "text", "exchange"),
        _c("asset_class", "text", "asset class", choices=ASSET_CLASSES),
        _c("side", "text", "long (qty >= 0) or short (qty <= 0)", choices=("long", "short")),
        _c("qty", "decimal", "quantity; negative for short positions"),
        _c("qty_available", "decimal", "quantity not held by open orders"),
        _c("avg_entry_price", "decimal", "average entry price; above 0 while qty is not 0"),
        _c("market_value", "decimal", "market value", optional=True),
        _c("cost_basis", "decimal", "cost basis"),
        _c("unrealized_pl", "decimal", "unrealized profit/loss", optional=True),
        _c("unrealized_plpc", "decimal", "unrealized profit/loss percent", optional=True),
        _c("unrealized_intraday_pl", "decimal", "unrealized intraday profit/loss", optional=True),
        _c("unrealized_intraday_plpc", "decimal", "unrealized intraday profit/loss percent", optional=True),
        _c("current_price", "decimal", "current price", optional=True),
        _c("lastday_price", "decimal", "last trading day's close", optional=True),
        _c("change_today", "decimal", "percent change since the last close", optional=True),
        _c("updated_at", "timestamp", "when this row was last synced"),
    ],
    key=("account_id", "symbol"),
    doc="Positions per account and symbol (GET /v2/positions).",
)

TRADE = TableSpec(
    SQLTable.TRADE,
    "trade",
    [
        _c("id", "uuid", "the execution's id"),
        _c("client_order_id", "text", "the order filled; it must exist"),
        _c("symbol", "text", "ticker, upper-case"),
        _c("side", "text", "side", choices=SIDES),
        _c("qty", "decimal", "quantity filled, above 0"),
        _c("price", "decimal", "fill price, above 0"),
        _c("fee", "decimal", "fee, 0 or more"),
        _c("liquidity", "text", "liquidity flag", optional=True, choices=("maker", "taker")),
        _c("executed_at", "timestamp", "when it executed"),
    ],
    key=("id",),
    doc="Executions (fills). An INSERT also updates the order's filled_qty, filled_avg_price and status.",
    series="executed_at",
)

MARKET_TICK = TableSpec(
    SQLTable.MARKET_TICK,
    "market_tick",
    [
        _c("symbol", "text", "ticker, upper-case"),
        _c("ts", "timestamp", "the feed's timestamp, nanoseconds kept"),
        _c("seq", "int", "the feed's sequence number for this symbol and time"),
        _c("kind", "text", "trade or quote", choices=("trade", "quote")),
        _c("price", "decimal", "trades: price", optional=True),
        _c("size", "decimal", "trades: size", optional=True),
        _c("bid_price", "decimal", "quotes: bid price", optional=True),
        _c("bid_size", "decimal", "quotes: bid size", optional=True),
        _c("ask_price", "decimal", "quotes: ask price", optional=True),
        _c("ask_size", "decimal", "quotes: ask size", optional=True),
        _c("exchange", "text", "exchange code", optional=True),
        _c("conditions", "text_list", "condition codes"),
        _c("tape", "text", "tape", optional=True),
    ],
    key=("symbol", "ts", "seq"),
    doc="Trades and quotes of the data feed: the hot table.",
    series="ts",
    echo_writes=False,
)

ML_MODEL = TableSpec(
    SQLTable.ML_MODEL,
    "ml_model",
    [
        _c("id", "uuid", "the model's id"),
        _c("name", "text", "model name"),
        _c("version", "text", "version; unique with name"),
        _c("framework", "text", "training framework"),
        _c("hyperparameters", "json", "JSON object, stored as jsonb"),
        _c("metrics", "json", "JSON object, stored as jsonb"),
        _c("artifact", "bytes", "the serialized model", optional=True),
        _c("artifact_uri", "text", "where the artifact lives instead", optional=True),
        _c("status", "text", "lifecycle", choices=("training", "ready", "retired")),
        _c("created_at", "timestamp", "when it was registered", optional=True, hub_default=True),
    ],
    key=("id",),
    doc="Trained models. A large artifact's RESPONSE spans several frames.",
)

ML_PREDICTION = TableSpec(
    SQLTable.ML_PREDICTION,
    "ml_prediction",
    [
        _c("id", "uuid", "the prediction's id"),
        _c("model_id", "uuid", "the model; it must exist and be ready"),
        _c("symbol", "text", "ticker, upper-case"),
        _c("ts", "timestamp", "the time the prediction is for"),
        _c("horizon", "int", "horizon in seconds, above 0"),
        _c("value", "float", "predicted value"),
        _c("confidence", "float", "confidence in [0, 1]"),
        _c("predicted_side", "text", "suggested side", optional=True, choices=("buy", "sell", "hold")),
        _c("created_at", "timestamp", "when it was made", optional=True, hub_default=True),
    ],
    key=("id",),
    doc="Model predictions; unique per (model_id, symbol, ts, horizon).",
    series="ts",
)

LABELED_DATA = TableSpec(
    SQLTable.LABELED_DATA,
    "labeled_data",
    [
        _c("id", "uuid", "the label's id"),
        _c("symbol", "text", "ticker, upper-case"),
        _c("ts", "timestamp", "the time labeled"),
        _c("horizon", "int", "horizon in seconds, above 0"),
        _c("label_class", "text", "class name; label_class or label_value or both", optional=True),
        _c("label_value", "float", "label value", optional=True),
        _c("feature_set_id", "uuid", "the feature set it was computed from", optional=True),
        _c("created_at", "timestamp", "when it was made", optional=True, hub_default=True),
    ],
    key=("id",),
    doc="Training labels.",
    series="ts",
)

FEATURE_SET = TableSpec(
    SQLTable.FEATURE_SET,
    "feature_set",
    [
        _c("id", "uuid", "the vector's id"),
        _c("name", "text", "feature set name"),
        _c("version", "text", "feature set version"),
        _c("symbol", "text", "ticker, upper-case"),
        _c("ts", "timestamp", "the time the features describe"),
        _c("features", "float_list", "the feature values"),
        _c(
            "feature_names",
            "text_list",
            "names of the features, kept once per (name, version): give them with the first vector, "
            "then give them again identically or leave the list empty",
            computed=True,
        ),
        _c("created_at", "timestamp", "when it was made", optional=True, hub_default=True),
    ],
    key=("id",),
    doc="Feature vectors; every vector of a (name, version) has one value per feature name.",
    series="ts",
)

TECHNICAL_INDICATOR = TableSpec(
    SQLTable.TECHNICAL_INDICATOR,
    "technical_indicator",
    [
        _c("id", "uuid", "the value's id"),
        _c("symbol", "text", "ticker, upper-case"),
        _c("ts", "timestamp", "the time of the value"),
        _c("name", "text", "indicator: sma, ema, rsi, macd, ... (lower-case)"),
        _c("parameters", "json", "JSON object of the indicator's parameters, stored as jsonb"),
        _c("values", "float_list", "the value(s), at least one (macd has three)"),
        _c("created_at", "timestamp", "when it was computed", optional=True, hub_default=True),
    ],
    key=("id",),
    doc="Technical indicators; unique per (symbol, ts, name, parameters).",
    series="ts",
)

TABLE_SPECS = {
    spec.table: spec
    for spec in (
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
