"""The one exception type that becomes an ERROR frame."""


class ProtocolError(Exception):
    """
    A request answered with ERROR: raised by the wire code (framing,
    decoding, admission) and made by the server's routes from domain refusals.
    C{row_index} names the offending row of a multi-row request, or -1.
    """

    def __init__(self, code, message, row_index=-1, cause=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.row_index = row_index
        # For INTERNAL errors: the Failure behind it, logged by the session with its context.
        self.cause = cause

    def __repr__(self):
        return f"ProtocolError({self.code.name}, {self.message!r}, row_index={self.row_index})"
