-- Indicator values (sma, ema, rsi, macd, ...) per symbol and time; the
-- parameters are JSON, compared as jsonb so key order does not matter.
CREATE TABLE technical_indicator (
    id uuid PRIMARY KEY,
    symbol symbol NOT NULL,
    ts timestamptz NOT NULL,
    ts_ns smallint NOT NULL CHECK (ts_ns BETWEEN 0 AND 999),
    name text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]*$'),
    parameters jsonb NOT NULL,
    "values" double precision[] NOT NULL CHECK (cardinality("values") > 0),
    created_at timestamptz NOT NULL,
    created_at_ns smallint NOT NULL CHECK (created_at_ns BETWEEN 0 AND 999),
    CONSTRAINT technical_indicator_unique UNIQUE (symbol, ts, ts_ns, name, parameters)
);
CREATE INDEX technical_indicator_symbol_time ON technical_indicator (symbol, ts, ts_ns, id);
