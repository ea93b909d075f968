"""The hub's ERROR frames as typed Python exceptions."""

from ..protocol.enums import ErrorCode


class HubError(Exception):
    """An ERROR from the hub: its code, message and offending row index (-1 for none)."""

    def __init__(self, code, message, row_index=-1):
        super().__init__(f"{_name(code)}: {message}" + (f" (row {row_index})" if row_index >= 0 else ""))
        self.code = code
        self.message = message
        self.row_index = row_index


class ValidationFailed(HubError):
    pass


class Conflict(HubError):
    pass


class NotFound(HubError):
    pass


class PermissionDenied(HubError):
    pass


class ShuttingDown(HubError):
    pass


class PositionExpired(HubError):
    """The change log no longer keeps the position a subscription resumes from: start again from a fresh state."""


class Unavailable(HubError):
    """BUSY or DB_UNAVAILABLE: worth retrying later."""


_BY_CODE = {
    ErrorCode.VALIDATION_FAILED: ValidationFailed,
    ErrorCode.CONFLICT: Conflict,
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.PERMISSION_DENIED: PermissionDenied,
    ErrorCode.SHUTTING_DOWN: ShuttingDown,
    ErrorCode.POSITION_EXPIRED: PositionExpired,
    ErrorCode.BUSY: Unavailable,
    ErrorCode.DB_UNAVAILABLE: Unavailable,
}


def _name(code):
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"error {code}"


def shutting_down(shutdown):
    """
    The error of a call the hub will not answer because it sent SHUTDOWN:
    one made after it, or one still unanswered when the hub closed.
    """
    return ShuttingDown(ErrorCode.SHUTTING_DOWN, f"the hub is shutting down: {shutdown.message}")


def raise_for_error(error):
    """Raise the exception class for a decoded ERROR payload."""
    raise _BY_CODE.get(error.code, HubError)(error.code, error.message, error.row_index)
