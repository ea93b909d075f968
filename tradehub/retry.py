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
    retries: int,
    delay: float,
    retryable: Callable[[Exception], bool],
    wait: Callable[[Exception, float], float] | None = None,
    on_retry: Callable[[Exception, float], None] | None = None,
    on_failure: Callable[[Exception], None] | None = None,
) -> T:
    """
    What C{attempt()} returns, calling it again up to C{retries} times while
    it fails with an error that C{retryable} accepts; any other error, or the
    last one, is raised. The first retry waits C{delay} seconds and each next
    one twice as long, unless C{wait(error, delay)} says otherwise (a server
    may ask for a longer pause). C{on_retry(error, seconds)} hears of each
    retry before its wait, to log it; C{on_failure(error)} of the error
    raised in the end, to count it.
    """
    while True:
        try:
            return await attempt()
        except Exception as error:
            if retries <= 0 or not retryable(error):
                if on_failure is not None:
                    on_failure(error)
                raise
            seconds = delay if wait is None else wait(error, delay)
            if on_retry is not None:
                on_retry(error, seconds)
        await deferLater(clock, seconds, lambda: None)
        retries -= 1
        delay *= 2
