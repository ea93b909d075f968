-- The symbols each hub's subscribers follow, per table (MARKET_TICK), so
-- that the one hub that holds Alpaca's market-data stream subscribes to
-- what the subscribers of every hub ask for. Each hub refreshes its rows
-- every few seconds; a row not refreshed for longer is a dead hub's and
-- counts no more. Nothing else depends on it: it is not in the change log.
CREATE TABLE watched_symbols (
    hub uuid NOT NULL,
    table_name text NOT NULL,
    symbols text[] NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (hub, table_name)
);
