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


# The tables each role may follow with a push subscription: what it needs from the other side.
FOLLOWABLE = {
    Role.FRONTEND: frozenset(
        {
            SQLTable.ML_PREDICTION,
            SQLTable.TECHNICAL_INDICATOR,
            SQLTable.ORDER,
            SQLTable.TRADE,
            SQLTable.POSITION,
            SQLTable.ACCOUNT,
        }
    ),
    Role.ML: frozenset(
        {
            SQLTable.MARKET_TICK,
            SQLTable.TRADE,
            SQLTable.ORDER,
            SQLTable.POSITION,
            SQLTable.FEATURE_SET,
            SQLTable.LABELED_DATA,
        }
    ),
}


def may_follow(role, table):
    return table in FOLLOWABLE[role]


def allowed(role, command, table):
    return not command.writes or table in WRITABLE[role]


def matrix():
    """(table, {role: commands allowed}) for every table, for the document."""
    return [(table, {role: [c for c in SQLCommand if allowed(role, c, table)] for role in Role}) for table in SQLTable]
