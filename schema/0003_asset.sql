-- Tradable instruments, shaped on GET /v2/assets.
CREATE TABLE asset (
    id uuid PRIMARY KEY,
    class text NOT NULL CHECK (class IN ('us_equity', 'us_option', 'crypto')),
    exchange text NOT NULL,
    symbol symbol NOT NULL,
    name text NOT NULL,
    status text NOT NULL CHECK (status IN ('active', 'inactive')),
    tradable boolean NOT NULL,
    marginable boolean NOT NULL,
    shortable boolean NOT NULL,
    easy_to_borrow boolean NOT NULL,
    fractionable boolean NOT NULL,
    min_order_size wire_decimal CHECK (min_order_size > 0),
    min_trade_increment wire_decimal CHECK (min_trade_increment > 0),
    price_increment wire_decimal CHECK (price_increment > 0),
    maintenance_margin_requirement wire_decimal CHECK (maintenance_margin_requirement >= 0),
    updated_at timestamptz NOT NULL,
    updated_at_ns smallint NOT NULL CHECK (updated_at_ns BETWEEN 0 AND 999),
    CONSTRAINT asset_symbol_unique_per_class UNIQUE (class, symbol)
);
