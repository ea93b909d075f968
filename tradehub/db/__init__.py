"""PostgreSQL: the connection pool, retry policy, embedded cluster and migrations."""
