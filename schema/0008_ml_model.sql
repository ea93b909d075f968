-- Trained models: parameters and metrics as validated JSON, the artifact
-- inline (may be megabytes) or by URI.
CREATE TABLE ml_model (
    id uuid PRIMARY KEY,
    name text NOT NULL CHECK (name <> ''),
    version text NOT NULL CHECK (version <> ''),
    framework text NOT NULL,
    hyperparameters jsonb NOT NULL,
    metrics jsonb NOT NULL,
    artifact bytea,
    artifact_uri text,
    status text NOT NULL CHECK (status IN ('training', 'ready', 'retired')),
    created_at timestamptz NOT NULL,
    created_at_ns smallint NOT NULL CHECK (created_at_ns BETWEEN 0 AND 999),
    CONSTRAINT ml_model_name_version_unique UNIQUE (name, version)
);
