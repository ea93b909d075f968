"""
What the hub stores, declared once and importing nothing else of tradehub:
the tables and their columns, the column kinds, and the Timestamp type. The
wire layouts, the SQL, the documents and the C++ header derive from it.
"""

from .model import DEFAULT_LIMIT, MAX_LIMIT, Column, SQLTable, Table
from .tables import FINAL_STATUSES, ORDER_PROGRESS, TABLES, status_may_move
from .timestamp import Timestamp

__all__ = [
    "DEFAULT_LIMIT",
    "FINAL_STATUSES",
    "MAX_LIMIT",
    "ORDER_PROGRESS",
    "TABLES",
    "Column",
    "SQLTable",
    "Table",
    "Timestamp",
    "status_may_move",
]
