-- Training labels: a class name and/or a value for a symbol, time and horizon.
CREATE TABLE labeled_data (
    id uuid PRIMARY KEY,
    symbol symbol NOT NULL,
    ts timestamptz NOT NULL,
    ts_ns smallint NOT NULL CHECK (ts_ns BETWEEN 0 AND 999),
    horizon bigint NOT NULL CHECK (horizon > 0),
    label_class text,
    label_value double precision CHECK (label_value = label_value),
    feature_set_id uuid REFERENCES feature_set (id),
    created_at timestamptz NOT NULL,
    created_at_ns smallint NOT NULL CHECK (created_at_ns BETWEEN 0 AND 999),
    CONSTRAINT labeled_data_has_label CHECK (label_class IS NOT NULL OR label_value IS NOT NULL)
);
CREATE INDEX labeled_data_symbol_time ON labeled_data (symbol, ts, ts_ns, id);
