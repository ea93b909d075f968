"""
The per-table wire layouts, declared once per table. The data-model work
fills TABLE_SPECS; until a table is declared here its requests answer
INTERNAL "not implemented".
"""

TABLE_SPECS = {}
