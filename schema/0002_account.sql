-- Alpaca accounts, shaped on GET /v2/account. Every timestamp is a timestamptz
-- (microseconds) plus <name>_ns, the nanoseconds within that microsecond, so
-- that a nanosecond value written over the wire reads back identical.
CREATE TABLE account (
    id uuid PRIMARY KEY,
    account_number text NOT NULL,
    status text NOT NULL CHECK (status IN ('ONBOARDING', 'SUBMISSION_FAILED', 'SUBMITTED', 'ACCOUNT_UPDATED',
        'APPROVAL_PENDING', 'ACTIVE', 'REJECTED', 'INACTIVE', 'DISABLED', 'ACCOUNT_CLOSED')),
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    cash wire_decimal NOT NULL,
    buying_power wire_decimal NOT NULL,
    regt_buying_power wire_decimal,
    daytrading_buying_power wire_decimal,
    non_marginable_buying_power wire_decimal,
    equity wire_decimal NOT NULL,
    last_equity wire_decimal NOT NULL,
    long_market_value wire_decimal NOT NULL,
    short_market_value wire_decimal NOT NULL,
    portfolio_value wire_decimal,
    initial_margin wire_decimal NOT NULL,
    maintenance_margin wire_decimal NOT NULL,
    last_maintenance_margin wire_decimal,
    sma wire_decimal,
    multiplier wire_decimal NOT NULL CHECK (multiplier >= 1),
    daytrade_count integer NOT NULL CHECK (daytrade_count >= 0),
    pattern_day_trader boolean NOT NULL,
    trading_blocked boolean NOT NULL,
    transfers_blocked boolean NOT NULL,
    account_blocked boolean NOT NULL,
    trade_suspended_by_user boolean NOT NULL,
    shorting_enabled boolean NOT NULL,
    created_at timestamptz NOT NULL,
    created_at_ns smallint NOT NULL CHECK (created_at_ns BETWEEN 0 AND 999),
    updated_at timestamptz NOT NULL,
    updated_at_ns smallint NOT NULL CHECK (updated_at_ns BETWEEN 0 AND 999),
    -- A cash account (multiplier 1) never has negative cash; margin accounts may.
    CONSTRAINT cash_account_cash_not_negative CHECK (multiplier > 1 OR cash >= 0)
);
