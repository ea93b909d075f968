-- The change log: every committed write to a wire table, whoever wrote it,
-- recorded by statement triggers in the writing transaction, so a change
-- exists exactly when its write committed.
--
-- A change gets its id (write order) when written and its position (commit
-- order) later, from change_log_relay(), once its transaction is over: a
-- relay sees only committed changes, takes them in id order, and numbers
-- them after every position already given. So positions never go back, a
-- long transaction that commits late gets positions after the short ones
-- that committed before it, a row's changes keep their commit order (a
-- second writer of a row waits for the first to commit before it writes its
-- change), and if B began after A committed, A's changes come first.
-- Positions are dense: every number up to last_position names a change.
CREATE TABLE change_log (
    id bigserial PRIMARY KEY,
    position bigint,
    table_name text NOT NULL,
    -- 1 INSERT, 3 UPDATE, 4 DELETE (the wire's SQLCommand numbers)
    op smallint NOT NULL CHECK (op IN (1, 3, 4)),
    -- The row as stored; for a DELETE, the row that was deleted.
    row_data jsonb NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);

-- What the relay has still to number.
CREATE INDEX change_log_pending ON change_log (id) WHERE position IS NULL;
-- Replay and live reads: one table's changes after a position.
CREATE INDEX change_log_table_position ON change_log (table_name, position) WHERE position IS NOT NULL;
-- Retention: the oldest changes, cheaply (rows are appended in time order).
CREATE INDEX change_log_written_at ON change_log USING brin (written_at);

-- One row: the last position given, and the positions retention removed.
CREATE TABLE change_log_head (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last_position bigint NOT NULL,
    trimmed_through bigint NOT NULL
);
INSERT INTO change_log_head VALUES (true, 0, 0);

CREATE FUNCTION change_log_capture() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO change_log (table_name, op, row_data) SELECT TG_TABLE_NAME, 1, to_jsonb(n) FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO change_log (table_name, op, row_data) SELECT TG_TABLE_NAME, 3, to_jsonb(n) FROM new_rows n;
    ELSE
        INSERT INTO change_log (table_name, op, row_data) SELECT TG_TABLE_NAME, 4, to_jsonb(o) FROM old_rows o;
    END IF;
    RETURN NULL;
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['account', 'asset', 'order', 'position', 'trade', 'market_tick', 'ml_model',
                             'ml_prediction', 'labeled_data', 'feature_set', 'technical_indicator'] LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS new_rows'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION change_log_capture()', t || '_change_insert', t);
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %I REFERENCING NEW TABLE AS new_rows'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION change_log_capture()', t || '_change_update', t);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS old_rows'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION change_log_capture()', t || '_change_delete', t);
    END LOOP;
END
$$;

-- Number the committed changes not numbered yet (at most batch_size of
-- them), in id order, after the last position; tell every hub. Relays of
-- all hubs take turns on the head row. Returns the last position.
CREATE FUNCTION change_log_relay(batch_size integer) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    last bigint;
    numbered bigint;
BEGIN
    SELECT last_position INTO last FROM change_log_head FOR UPDATE;
    WITH pending AS (
        SELECT id, row_number() OVER (ORDER BY id) AS n
        FROM (SELECT id FROM change_log WHERE position IS NULL ORDER BY id LIMIT batch_size) AS oldest
    )
    UPDATE change_log c SET position = last + p.n FROM pending p WHERE c.id = p.id;
    GET DIAGNOSTICS numbered = ROW_COUNT;
    IF numbered > 0 THEN
        last := last + numbered;
        UPDATE change_log_head SET last_position = last;
        PERFORM pg_notify('tradehub_change', last::text);
    END IF;
    RETURN last;
END
$$;

-- Remove up to batch_size numbered changes written before cutoff; returns
-- how many. trimmed_through then covers every position removed, so a
-- subscriber asking to resume from before it is told it expired (a reader
-- checks it after reading a page: a trim it raced is seen then).
CREATE FUNCTION change_log_trim(cutoff timestamptz, batch_size integer) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    removed bigint;
    highest bigint;
BEGIN
    WITH doomed AS (
        DELETE FROM change_log WHERE id IN (
            SELECT id FROM change_log WHERE written_at < cutoff AND position IS NOT NULL LIMIT batch_size
        ) RETURNING position
    )
    SELECT count(*), max(position) INTO removed, highest FROM doomed;
    IF removed > 0 THEN
        UPDATE change_log_head SET trimmed_through = greatest(trimmed_through, highest);
    END IF;
    RETURN removed;
END
$$;
