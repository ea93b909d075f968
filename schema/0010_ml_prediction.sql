-- Predictions of a model for a symbol at a time, over a horizon in seconds.
CREATE TABLE ml_prediction (
    id uuid PRIMARY KEY,
    model_id uuid NOT NULL REFERENCES ml_model (id),
    symbol symbol NOT NULL,
    ts timestamptz NOT NULL,
    ts_ns smallint NOT NULL CHECK (ts_ns BETWEEN 0 AND 999),
    horizon bigint NOT NULL CHECK (horizon > 0),
    value double precision NOT NULL CHECK (value = value),
    confidence double precision NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    predicted_side text CHECK (predicted_side IN ('buy', 'sell', 'hold')),
    created_at timestamptz NOT NULL,
    created_at_ns smallint NOT NULL CHECK (created_at_ns BETWEEN 0 AND 999),
    CONSTRAINT ml_prediction_unique UNIQUE (model_id, symbol, ts, ts_ns, horizon)
);
CREATE INDEX ml_prediction_symbol_time ON ml_prediction (symbol, ts, ts_ns, id);
