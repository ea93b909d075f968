-- Every stored decimal is one the wire can carry: an i64 count of 10^-9 units,
-- so from -9,223,372,036.854775808 to 9,223,372,036.854775807. numeric(19, 9)
-- alone holds up to 9,999,999,999.999999999, which no answer could encode.
-- Every decimal column is a wire_decimal, so the domain's check covers them
-- all, whatever writes them (the hub, the Alpaca sync, psql). A database that
-- already holds a value outside the range fails this migration, naming the
-- column; such a value must be corrected by hand first.
ALTER DOMAIN wire_decimal ADD CONSTRAINT wire_decimal_range
    CHECK (VALUE BETWEEN -9223372036.854775808 AND 9223372036.854775807);
