"""
Retrying a failed call with exponential backoff, on an injected clock.

The database pool and the Alpaca client retry transient failures the same
way; this loop is shared so that both back off, give up and log alike. The
clock is injected so that tests drive the waits with a task.Clock.
"""

from collections.abc import Awaitable, Callable
from typing import TypeVar

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

T = TypeVar("T")


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    *,
    clock: IReactorTime,
    delay: float,
    retryable: Callable[[Exception], bool],
    retries: int | None = None,
    budget: float | None = None,
    max_delay: float | None = None,
    wait: Callable[[Exception, float], float] | None = None,
    on_retry: Callable[[Exception, float], None] | None = None,
    on_failure: Callable[[Exception], None] | None = None,
) -> T:
    """
    What C{attempt()} returns, calling it again while it fails with an error
    that C{retryable} accepts, at most C{retries} more times and only while
    the next try would start within C{budget} seconds of the first; any other
    error, or the last one, is raised. The first retry waits C{delay} seconds
    and each next one twice as long, up to C{max_delay}, unless C{wait(error,
    delay)} says otherwise (a server may ask for a longer pause).
    C{on_retry(error, seconds)} hears of each retry before its wait, to log
    it; C{on_failure(error)} of the error raised in the end, to count it.
    """
    deadline = None if budget is None else clock.seconds() + budget
    while True:
        try:
            return await attempt()
        except Exception as error:
            seconds = delay if wait is None else wait(error, delay)
            exhausted = (retries is not None and retries <= 0) or (
                deadline is not None and clock.seconds() + seconds > deadline
            )
            if exhausted or not retryable(error):
                if on_failure is not None:
                    on_failure(error)
                raise
            if on_retry is not None:
                on_retry(error, seconds)
        await deferLater(clock, seconds, lambda: None)
        if retries is not None:
            retries -= 1
        delay = delay * 2 if max_delay is None else min(delay * 2, max_delay)
