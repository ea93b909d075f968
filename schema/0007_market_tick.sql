-- The data feed's trades and quotes: the hot table. seq is the feed's
-- sequence number (or the frontend's per-symbol counter), so a retried tick
-- is recognised instead of stored twice.
CREATE TABLE market_tick (
    symbol symbol NOT NULL,
    ts timestamptz NOT NULL,
    ts_ns smallint NOT NULL CHECK (ts_ns BETWEEN 0 AND 999),
    seq bigint NOT NULL,
    kind text NOT NULL CHECK (kind IN ('trade', 'quote')),
    price wire_decimal CHECK (price > 0),
    size wire_decimal CHECK (size > 0),
    bid_price wire_decimal CHECK (bid_price >= 0),
    bid_size wire_decimal CHECK (bid_size >= 0),
    ask_price wire_decimal CHECK (ask_price >= 0),
    ask_size wire_decimal CHECK (ask_size >= 0),
    exchange text,
    conditions text[] NOT NULL,
    tape text,
    PRIMARY KEY (symbol, ts, ts_ns, seq),
    CONSTRAINT market_tick_trade_fields CHECK (kind <> 'trade' OR (price IS NOT NULL AND size IS NOT NULL
        AND bid_price IS NULL AND bid_size IS NULL AND ask_price IS NULL AND ask_size IS NULL)),
    CONSTRAINT market_tick_quote_fields CHECK (kind <> 'quote' OR (price IS NULL AND size IS NULL
        AND bid_price IS NOT NULL AND bid_size IS NOT NULL AND ask_price IS NOT NULL AND ask_size IS NOT NULL))
);
