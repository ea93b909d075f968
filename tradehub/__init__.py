"""tradehub: the hub between the C++ trading frontend, the Python ML modules and PostgreSQL."""
