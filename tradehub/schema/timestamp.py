"""
The one instant type of the hub: a UTC count of nanoseconds. datetime keeps
only microseconds, so every conversion (datetime, RFC 3339, PostgreSQL's
timestamptz plus a nanosecond column) lives here and keeps the nanoseconds
wherever the other side can carry them.
"""

from __future__ import annotations

import datetime
import re
import time

import attrs

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
# Whole seconds since the epoch -> their text, as to_pg_text writes them (ticks come many to a second).
_SECONDS: dict[int, str] = {}
_RFC3339 = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|z|[+-]\d\d:\d\d)$")


def _micros(moment: datetime.datetime) -> int:
    delta = moment - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


@attrs.frozen(order=True)
class Timestamp:
    """A UTC instant with nanosecond precision."""

    ns: int

    @classmethod
    def now(cls) -> Timestamp:
        return cls(time.time_ns())

    @classmethod
    def from_datetime(cls, moment: datetime.datetime) -> Timestamp:
        if moment.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return cls(_micros(moment) * 1000)

    def to_datetime(self) -> datetime.datetime:
        """The instant as an aware UTC datetime, truncated to microseconds."""
        return EPOCH + datetime.timedelta(microseconds=self.ns // 1000)

    @classmethod
    def from_rfc3339(cls, text: str) -> Timestamp:
        """'2024-04-24T18:26:49.434425542Z' (Alpaca's form): every digit kept."""
        match = _RFC3339.match(text)
        if match is None:
            raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
        year, month, day, hour, minute, second, fraction, zone = match.groups()
        moment = datetime.datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=datetime.UTC
        )
        if zone not in ("Z", "z"):
            sign = 1 if zone[0] == "+" else -1
            moment -= sign * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        return cls(_micros(moment) * 1000 + int((fraction or "0").ljust(9, "0")))

    def to_rfc3339(self) -> str:
        seconds, fraction = divmod(self.ns, 10**9)
        whole = EPOCH + datetime.timedelta(seconds=seconds)
        return f"{whole:%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"

    @classmethod
    def from_pg(cls, moment: datetime.datetime, nanos: int) -> Timestamp:
        """A stored (timestamptz, nanoseconds within its microsecond) pair."""
        return cls(_micros(moment) * 1000 + nanos)

    def to_pg(self) -> tuple[datetime.datetime, int]:
        """(timestamptz at microsecond precision, the nanoseconds within it): how a column stores it."""
        micros, nanos = divmod(self.ns, 1000)
        return EPOCH + datetime.timedelta(microseconds=micros), nanos

    def to_pg_text(self) -> tuple[str, int]:
        """
        L{to_pg} with the timestamptz as the text PostgreSQL reads (UTC), for
        a batch INSERT's array literals: a fifth of the CPU of making the
        datetime and its text, since the whole seconds' text is kept.
        """
        micros, nanos = divmod(self.ns, 1000)
        seconds, fraction = divmod(micros, 1_000_000)
        whole = _SECONDS.get(seconds)
        if whole is None:
            if len(_SECONDS) >= 4096:
                _SECONDS.clear()
            whole = _SECONDS[seconds] = f"{EPOCH + datetime.timedelta(seconds=seconds):%Y-%m-%d %H:%M:%S}"
        return f"{whole}.{fraction:06d}+00", nanos

    def __str__(self) -> str:
        return self.to_rfc3339()
