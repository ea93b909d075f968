-- Executions (fills). Inserting one updates its order's filled_qty and
-- filled_avg_price in the same transaction.
CREATE TABLE trade (
    id uuid PRIMARY KEY,
    client_order_id text NOT NULL REFERENCES "order" (client_order_id),
    symbol symbol NOT NULL,
    side text NOT NULL CHECK (side IN ('buy', 'sell')),
    qty wire_decimal NOT NULL CHECK (qty > 0),
    price wire_decimal NOT NULL CHECK (price > 0),
    fee wire_decimal NOT NULL CHECK (fee >= 0),
    liquidity text CHECK (liquidity IN ('maker', 'taker')),
    executed_at timestamptz NOT NULL,
    executed_at_ns smallint NOT NULL CHECK (executed_at_ns BETWEEN 0 AND 999)
);
CREATE INDEX trade_symbol_time ON trade (symbol, executed_at, executed_at_ns, id);
CREATE INDEX trade_order ON trade (client_order_id);
