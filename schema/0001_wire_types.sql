-- Domains shared by every table, matching the wire contract's field types.
--
-- decimal: an i64 count of 10^-9 units on the wire, so at most 19 digits of
-- which 9 are fractional. Money, prices and quantities use it so that a value
-- written and read back is exactly the value stored.
CREATE DOMAIN wire_decimal AS numeric(19, 9);

-- symbol: an upper-case ticker such as AAPL, BTC/USD or an OCC option symbol.
CREATE DOMAIN symbol AS text
    CHECK (VALUE = upper(VALUE) AND length(VALUE) BETWEEN 1 AND 64);
