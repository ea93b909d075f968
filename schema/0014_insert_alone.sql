-- A one-row (or one-batch) INSERT that needs no query before it runs as one
-- statement on its own, in one round trip: what it must check is in a guard,
-- and it numbers its own changes as it commits.

-- The guard on each new row: CASE WHEN <guard> THEN true ELSE
-- tradehub_guard_refused() END. A row that fails it fails the whole
-- statement, so nothing is stored; the hub then writes the rows the slow way,
-- in a transaction that names the row and the reason.
CREATE FUNCTION tradehub_guard_refused() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION 'a row failed its insert guard' USING ERRCODE = 'TH001';
END
$$;

-- Numbering, waiting for the head row (the relay) or not: a statement on its
-- own that set tradehub.number_at_commit numbers what is pending, its own
-- changes included, from its capture trigger, and holds the head row only
-- until it commits a moment later. When another relay holds the head, or more
-- is pending than one batch, it leaves the rest to a relay and asks every hub
-- for one (NOTIFY 'pending'). Numbering inside the writing transaction keeps
-- every rule of change_log_relay(): the head row makes relays take turns, a
-- relay that waited sees these positions once they commit, and the changes of
-- a transaction that committed before this one began have smaller ids.
CREATE FUNCTION change_log_number(batch_size integer, wait boolean) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    last bigint;
    numbered bigint;
BEGIN
    IF wait THEN
        SELECT last_position INTO last FROM change_log_head FOR UPDATE;
    ELSE
        SELECT last_position INTO last FROM change_log_head FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            PERFORM pg_notify('tradehub_change', 'pending');
            RETURN NULL;
        END IF;
    END IF;
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
    IF numbered = batch_size AND NOT wait THEN
        PERFORM pg_notify('tradehub_change', 'pending');
    END IF;
    RETURN last;
END
$$;

CREATE OR REPLACE FUNCTION change_log_relay(batch_size integer) RETURNS bigint LANGUAGE sql AS $$
    SELECT change_log_number(batch_size, true)
$$;

CREATE OR REPLACE FUNCTION change_log_capture() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO change_log (table_name, op, row_data) SELECT TG_TABLE_NAME, 1, to_jsonb(n) FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO change_log (table_name, op, row_data) SELECT TG_TABLE_NAME, 3, to_jsonb(n) FROM new_rows n;
    ELSE
        INSERT INTO change_log (table_name, op, row_data) SELECT TG_TABLE_NAME, 4, to_jsonb(o) FROM old_rows o;
    END IF;
    IF current_setting('tradehub.number_at_commit', true) = 'on' THEN
        PERFORM change_log_number(10000, false);
    END IF;
    RETURN NULL;
END
$$;
