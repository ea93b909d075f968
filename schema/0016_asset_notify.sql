-- Every hub keeps the assets' price increments in memory to check orders
-- without a round trip (tradehub/controllers/increments.py). A statement
-- that changes asset tells every hub, at its commit, on the change log's
-- channel: each hub empties its copy and reads it again when needed.
CREATE FUNCTION asset_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tradehub_change', 'asset');
    RETURN NULL;
END
$$;

CREATE TRIGGER asset_notify
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON asset
    FOR EACH STATEMENT EXECUTE FUNCTION asset_notify();
