"""
Length-prefixed framing, independent of any transport.

The length is checked before any of the body is kept, and the header's magic
and version as soon as its 16 bytes are in, so a bad or huge frame costs no
memory beyond what one read already delivered.
"""

from typing import NamedTuple

from .enums import ENVELOPE_VERSION, HEADER_SIZE, MAGIC, ErrorCode
from .errors import ProtocolError
from .messages import HEADER, LENGTH, Header

_PREFIX = LENGTH.size


class Frame(NamedTuple):
    """One whole frame; a tuple, made for every frame at a third of an attrs instance's cost."""

    header: Header
    payload: bytes


class FrameDecoder:
    """
    Feed it bytes as they arrive; it returns the whole frames they complete.
    A framing error raises L{ProtocolError} with BAD_FRAME or FRAME_TOO_LARGE
    and leaves the decoder unusable: the connection must close.
    """

    def __init__(self, max_frame):
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._checked_header = False

    @property
    def buffered(self):
        return len(self._buffer)

    def feed(self, data):
        buffer = self._buffer
        buffer += data
        frames = []
        offset = 0
        end = len(buffer)
        while end - offset >= _PREFIX:
            (length,) = LENGTH.unpack_from(buffer, offset)
            if length < HEADER_SIZE:
                raise ProtocolError(ErrorCode.BAD_FRAME, f"frame length {length} is below the 16-byte header")
            if length > self.max_frame:
                raise ProtocolError(
                    ErrorCode.FRAME_TOO_LARGE, f"frame length {length} is above the maximum {self.max_frame}"
                )
            start = offset + _PREFIX
            if end - start < HEADER_SIZE:
                break
            if not self._checked_header:
                _check_header_start(buffer, start)
                self._checked_header = True
            if end - start < length:
                break
            # The header read where it is, the payload copied out once.
            frames.append(Frame(HEADER.unpack_from(buffer, start), bytes(buffer[start + HEADER_SIZE : start + length])))
            self._checked_header = False
            offset = start + length
        if offset:
            del buffer[:offset]
        return frames


def _check_header_start(buffer, start):
    magic = buffer[start] | buffer[start + 1] << 8
    if magic != MAGIC:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"bad magic 0x{magic:04x}, expected 0x{MAGIC:04x}")
    version = buffer[start + 2]
    if version != ENVELOPE_VERSION:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"bad version byte {version}, expected {ENVELOPE_VERSION}")
