"""
Why the hub refuses a request, in the domain's terms: controllers raise
these (translating database and Alpaca failures); the server maps each to
the contract's error code.
"""

from __future__ import annotations

from typing import Any


class Refused(Exception):
    """A request refused for a reason the client can act on; C{row_index} names the row, or -1."""

    def __init__(self, message: str, row_index: int = -1) -> None:
        super().__init__(message)
        self.message = message
        self.row_index = row_index

    def at_row(self, index: int) -> Refused:
        """The same refusal, blamed on row C{index} of the request."""
        return type(self)(f"row {index}: {self.message}", index)


class Invalid(Refused):
    """A value breaks a rule."""


class Missing(Refused):
    """A row the request refers to, or changes, does not exist."""


class Conflict(Refused):
    """The request conflicts with what is stored (a taken key, a live order)."""


class Busy(Refused):
    """Alpaca did not answer in time; the same request may be sent again."""


class Unavailable(Refused):
    """The database stayed unreachable, or a commit's outcome is unknown."""


class Closing(Refused):
    """The hub is shutting down."""


class Expired(Refused):
    """A subscription resumes from, or fell behind to, a position the change log no longer keeps."""


class Internal(Refused):
    """A failure the hub did not expect (a bug), blamed on the row that caused it."""


class ServeAlone(Exception):
    """Coalesced requests that may not share a transaction (a submitted order): serve each on its own."""


def invalid(index: int, field: str, rule: str) -> Invalid:
    """VALIDATION_FAILED naming the row, the field and the rule it breaks."""
    return Invalid(f"row {index}: {field} {rule}", index)


def not_found(index: int, table: str, column: str, value: Any) -> Missing:
    """NOT_FOUND naming the row of the request and the row it refers to."""
    return Missing(f"row {index}: no {table} with {column} {value}", index)
