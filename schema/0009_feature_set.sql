-- Feature vectors. The names of a (name, version)'s features are kept once,
-- in feature_schema, and every vector must have as many values.
CREATE TABLE feature_schema (
    name text NOT NULL,
    version text NOT NULL,
    feature_names text[] NOT NULL CHECK (cardinality(feature_names) > 0),
    PRIMARY KEY (name, version)
);

CREATE TABLE feature_set (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    version text NOT NULL,
    symbol symbol NOT NULL,
    ts timestamptz NOT NULL,
    ts_ns smallint NOT NULL CHECK (ts_ns BETWEEN 0 AND 999),
    features double precision[] NOT NULL,
    created_at timestamptz NOT NULL,
    created_at_ns smallint NOT NULL CHECK (created_at_ns BETWEEN 0 AND 999),
    FOREIGN KEY (name, version) REFERENCES feature_schema (name, version)
);
CREATE INDEX feature_set_symbol_time ON feature_set (symbol, ts, ts_ns, id);
