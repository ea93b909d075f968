"""
Who may do what: each role reads every table and writes only its own side's
tables. Declared as data so the protocol document can print the matrix.
"""

from .enums import Role, SQLCommand, SQLTable

WRITABLE = {
    Role.FRONTEND: frozenset(
        {
            SQLTable.ACCOUNT,
            SQLTable.ASSET,
            SQLTable.ORDER,
            SQLTable.POSITION,
            SQLTable.TRADE,
            SQLTable.MARKET_TICK,
        }
    ),
    Role.ML: frozenset(
        {
            SQLTable.ML_MODEL,
            SQLTable.ML_PREDICTION,
            SQLTable.LABELED_DATA,
            SQLTable.FEATURE_SET,
            SQLTable.TECHNICAL_INDICATOR,
        }
    ),
}


def allowed(role, command, table):
    return not command.writes or table in WRITABLE[role]


def matrix():
    """(table, {role: commands allowed}) for every table, for the document."""
    return [(table, {role: [c for c in SQLCommand if allowed(role, c, table)] for role in Role}) for table in SQLTable]
