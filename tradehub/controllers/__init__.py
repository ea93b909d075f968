"""Controllers: each table's validation and domain rules, orchestrating its repositories."""
