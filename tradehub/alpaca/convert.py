"""
Alpaca's JSON to the hub's rows (the dicts the controllers validate): money
from Alpaca's decimal strings (or, in the data API, JSON numbers parsed as
Decimal), exactly; RFC 3339 timestamps to nanoseconds, UTC.
"""

from decimal import Decimal

from ..schema.kinds import decimal_in_range
from ..schema.timestamp import Timestamp
from .ledger import Execution, PositionReport


class Rows(list):
    """Rows converted from Alpaca's bodies, and how many bodies were skipped (named in the log)."""

    skipped = 0


def each(convert, bodies, what, log):
    """
    C{convert(body)} of each body (a row, or a list of rows). A body that
    lacks what the hub needs is skipped, with one log line naming it and
    why, so that one odd object never keeps the others out.
    """
    rows = Rows()
    for body in bodies:
        try:
            converted = convert(body)
        except (KeyError, TypeError, ValueError, ArithmeticError) as error:
            rows.skipped += 1
            name = body.get("id") or body.get("symbol") if isinstance(body, dict) else None
            reason = f"no {error.args[0]}" if isinstance(error, KeyError) else f"{type(error).__name__}: {error}"
            log.warn("alpaca {what} {name} skipped: {reason}", what=what, name=name or "?", reason=reason)
            continue
        rows += converted if isinstance(converted, list) else [converted]
    return rows


def timestamp(text):
    """An RFC 3339 timestamp, every digit kept; None stays None."""
    return None if text is None else Timestamp.from_rfc3339(text)


def _decimal_or_none(value):
    """L{decimal}, or None for a value it refuses."""
    try:
        return decimal(value)
    except (ValueError, ArithmeticError):
        return None


def decimal(value):
    """
    Alpaca sends money as strings ("262113.632"); the data API as numbers
    parsed as Decimal. One outside what the wire carries is refused here
    (ValueError), as the database would refuse it; places beyond 9 are
    rounded by the column, as numeric(19, 9) does.
    """
    if value is None or value == "":
        return None
    return decimal_in_range(Decimal(str(value)))


def account(body):
    return {
        "id": body["id"],
        "account_number": body["account_number"],
        "status": body["status"],
        "currency": body.get("currency") or "USD",
        "cash": decimal(body["cash"]),
        "buying_power": decimal(body["buying_power"]),
        "regt_buying_power": decimal(body.get("regt_buying_power")),
        "daytrading_buying_power": decimal(body.get("daytrading_buying_power")),
        "non_marginable_buying_power": decimal(body.get("non_marginable_buying_power")),
        "equity": decimal(body["equity"]),
        "last_equity": decimal(body["last_equity"]),
        "long_market_value": decimal(body["long_market_value"]),
        "short_market_value": decimal(body["short_market_value"]),
        "portfolio_value": decimal(body.get("portfolio_value")),
        "initial_margin": decimal(body["initial_margin"]),
        "maintenance_margin": decimal(body["maintenance_margin"]),
        "last_maintenance_margin": decimal(body.get("last_maintenance_margin")),
        "sma": decimal(body.get("sma")),
        "multiplier": decimal(body["multiplier"]),
        "daytrade_count": int(body["daytrade_count"]),
        "pattern_day_trader": bool(body["pattern_day_trader"]),
        "trading_blocked": bool(body["trading_blocked"]),
        "transfers_blocked": bool(body["transfers_blocked"]),
        "account_blocked": bool(body["account_blocked"]),
        "trade_suspended_by_user": bool(body["trade_suspended_by_user"]),
        "shorting_enabled": bool(body["shorting_enabled"]),
        "created_at": timestamp(body["created_at"]),
        "updated_at": Timestamp.now(),
    }


def asset(body):
    return {
        "id": body["id"],
        "class": body["class"],
        "exchange": body["exchange"],
        "symbol": body["symbol"],
        "name": body.get("name") or body["symbol"],
        "status": body["status"],
        # Flags Alpaca leaves out of some bodies (crypto, options) are false.
        "tradable": bool(body.get("tradable")),
        "marginable": bool(body.get("marginable")),
        "shortable": bool(body.get("shortable")),
        "easy_to_borrow": bool(body.get("easy_to_borrow")),
        "fractionable": bool(body.get("fractionable")),
        "min_order_size": decimal(body.get("min_order_size")),
        "min_trade_increment": decimal(body.get("min_trade_increment")),
        "price_increment": decimal(body.get("price_increment")),
        "maintenance_margin_requirement": decimal(body.get("maintenance_margin_requirement")),
        "updated_at": Timestamp.now(),
    }


def order(body, account_id=None, submit=False, parent=None):
    """One order; its legs (bracket, oco, oto) follow with parent_client_order_id set."""
    row = {
        "client_order_id": body["client_order_id"],
        "id": body["id"],
        "account_id": account_id,
        "asset_id": body.get("asset_id"),
        "symbol": body["symbol"],
        "asset_class": body.get("asset_class") or "us_equity",
        "side": body["side"],
        "type": body.get("type") or body.get("order_type"),
        "time_in_force": body["time_in_force"],
        "order_class": body.get("order_class") or "simple",
        "parent_client_order_id": parent,
        "qty": decimal(body.get("qty")),
        "notional": decimal(body.get("notional")),
        "limit_price": decimal(body.get("limit_price")),
        "stop_price": decimal(body.get("stop_price")),
        "trail_price": decimal(body.get("trail_price")),
        "trail_percent": decimal(body.get("trail_percent")),
        "hwm": decimal(body.get("hwm")),
        "extended_hours": bool(body.get("extended_hours")),
        "submit": submit,
        "status": body["status"],
        "status_message": None,
        "filled_qty": decimal(body.get("filled_qty")) or Decimal(0),
        "filled_avg_price": decimal(body.get("filled_avg_price")),
        "replaced_by": body.get("replaced_by"),
        "replaces": body.get("replaces"),
        "created_at": timestamp(body["created_at"]),
        "updated_at": timestamp(body.get("updated_at") or body["created_at"]),
        "submitted_at": timestamp(body.get("submitted_at")),
        "filled_at": timestamp(body.get("filled_at")),
        "expired_at": timestamp(body.get("expired_at")),
        "canceled_at": timestamp(body.get("canceled_at")),
        "failed_at": timestamp(body.get("failed_at")),
        "replaced_at": timestamp(body.get("replaced_at")),
    }
    legs = [order(leg, account_id, submit, body["client_order_id"]) for leg in body.get("legs") or ()]
    return [row] + [leg for group in legs for leg in group]


# trade_updates events that report an execution.
FILL_EVENTS = frozenset({"fill", "partial_fill"})


def trade_update(data, account_id):
    """
    A trade_updates event: the order rows as it left them, the execution it
    reports (fill, partial_fill) and the position after it, when it says.
    """
    orders = order(data["order"], account_id)
    execution = position_report = None
    if data["event"] in FILL_EVENTS and data.get("execution_id") and data.get("qty") and data.get("price"):
        execution = Execution(
            order_id=orders[0]["id"],
            id=data["execution_id"],
            qty=decimal(data["qty"]),
            price=decimal(data["price"]),
            executed_at=timestamp(data.get("timestamp")) or orders[0]["updated_at"],
        )
        # A position beyond the decimal range is not reported: the fill still counts, the REST sync says the rest.
        position_qty = _decimal_or_none(data.get("position_qty"))
        if position_qty is not None:
            position_report = PositionReport(
                account_id=account_id,
                symbol=orders[0]["symbol"],
                qty=position_qty,
                price=execution.price,
                asset_id=orders[0]["asset_id"],
                asset_class=orders[0]["asset_class"],
                at=execution.executed_at,
            )
    return orders, execution, position_report


def fill_activity(body):
    """
    A FILL account activity as an execution. Its id is "<time>::<uuid>";
    the uuid is the execution id the trading stream reports for that fill.
    """
    return Execution(
        order_id=body["order_id"],
        id=body["id"].rpartition("::")[2],
        qty=decimal(body["qty"]),
        price=decimal(body["price"]),
        executed_at=timestamp(body["transaction_time"]),
    )


def position(body, account_id):
    return {
        "account_id": account_id,
        "symbol": body["symbol"],
        "asset_id": body.get("asset_id"),
        "exchange": body.get("exchange") or "",
        "asset_class": body.get("asset_class") or "us_equity",
        "side": body["side"],
        "qty": decimal(body["qty"]),
        "qty_available": decimal(body.get("qty_available")) or decimal(body["qty"]),
        "avg_entry_price": decimal(body["avg_entry_price"]),
        "market_value": decimal(body.get("market_value")),
        "cost_basis": decimal(body["cost_basis"]),
        "unrealized_pl": decimal(body.get("unrealized_pl")),
        "unrealized_plpc": decimal(body.get("unrealized_plpc")),
        "unrealized_intraday_pl": decimal(body.get("unrealized_intraday_pl")),
        "unrealized_intraday_plpc": decimal(body.get("unrealized_intraday_plpc")),
        "current_price": decimal(body.get("current_price")),
        "lastday_price": decimal(body.get("lastday_price")),
        "change_today": decimal(body.get("change_today")),
        "updated_at": Timestamp.now(),
    }


def latest_trade(symbol, body):
    """A data-API trade ({t, x, p, s, c, i, z}) as a MARKET_TICK row."""
    return {
        "symbol": symbol,
        "ts": timestamp(body["t"]),
        "seq": int(body.get("i") or 0),
        "kind": "trade",
        "price": decimal(body["p"]),
        "size": decimal(body["s"]),
        "bid_price": None,
        "bid_size": None,
        "ask_price": None,
        "ask_size": None,
        "exchange": body.get("x"),
        "conditions": list(body.get("c") or ()),
        "tape": body.get("z"),
    }


def latest_quote(symbol, body):
    """A data-API quote ({t, ax, ap, as, bx, bp, bs, c, z}) as a MARKET_TICK row."""
    return {
        "symbol": symbol,
        "ts": timestamp(body["t"]),
        "seq": 0,
        "kind": "quote",
        "price": None,
        "size": None,
        "bid_price": decimal(body["bp"]),
        "bid_size": decimal(body["bs"]),
        "ask_price": decimal(body["ap"]),
        "ask_size": decimal(body["as"]),
        "exchange": body.get("ax") or body.get("bx"),
        "conditions": list(body.get("c") or ()),
        "tape": body.get("z"),
    }


def bar(body):
    """A data-API bar ({t, o, h, l, c, v, n, vw}) as a dict with exact decimals."""
    return {
        "t": timestamp(body["t"]),
        "open": decimal(body["o"]),
        "high": decimal(body["h"]),
        "low": decimal(body["l"]),
        "close": decimal(body["c"]),
        "volume": decimal(body["v"]),
        "trades": body.get("n"),
        "vwap": decimal(body.get("vw")),
    }
