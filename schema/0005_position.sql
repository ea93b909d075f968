-- Positions per account and symbol, shaped on GET /v2/positions. Alpaca
-- reports short positions with a negative qty.
CREATE TABLE position (
    account_id uuid NOT NULL REFERENCES account (id),
    symbol symbol NOT NULL,
    asset_id uuid,
    exchange text NOT NULL,
    asset_class text NOT NULL CHECK (asset_class IN ('us_equity', 'us_option', 'crypto')),
    side text NOT NULL CHECK (side IN ('long', 'short')),
    qty wire_decimal NOT NULL,
    qty_available wire_decimal NOT NULL,
    avg_entry_price wire_decimal NOT NULL CHECK (avg_entry_price >= 0),
    market_value wire_decimal,
    cost_basis wire_decimal NOT NULL,
    unrealized_pl wire_decimal,
    unrealized_plpc wire_decimal,
    unrealized_intraday_pl wire_decimal,
    unrealized_intraday_plpc wire_decimal,
    current_price wire_decimal,
    lastday_price wire_decimal,
    change_today wire_decimal,
    updated_at timestamptz NOT NULL,
    updated_at_ns smallint NOT NULL CHECK (updated_at_ns BETWEEN 0 AND 999),
    PRIMARY KEY (account_id, symbol),
    CONSTRAINT position_side_matches_qty CHECK ((side = 'long' AND qty >= 0) OR (side = 'short' AND qty <= 0)),
    CONSTRAINT position_entry_price_when_open CHECK (qty = 0 OR avg_entry_price > 0)
);
