"""Repositories: the only code that writes SQL for each table."""
