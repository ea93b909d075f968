"""
Keeping the embedded PostgreSQL up under a running daemon.

If the postmaster dies (killed, or stopped by someone), the daemon starts it
again and the pool reconnects by itself; only when restarting keeps failing
does the daemon give up. The clock is injected so that tests drive the
checks and the pauses between attempts with a task.Clock.
"""

import itertools
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..retry import retrying

# Seconds between checks: a death is noticed well within the pool's retries of the work it broke.
CHECK_INTERVAL = 1.0
# Attempts 0.5, 1, 2 and 4 s apart: time for the dead server's backends to exit and release its memory.
RESTART_ATTEMPTS = 5
RESTART_BACKOFF = 0.5


class Supervisor:
    """
    Every L{CHECK_INTERVAL} seconds ask C{alive()}, which must be cheap (it
    runs on the reactor). When it says no, call C{restart()} (a Deferred) up
    to L{RESTART_ATTEMPTS} times with a doubling pause, each attempt logged;
    if every one fails, C{give_up(error)} hears of the last error (and says
    it: nothing here logs it).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        alive: Callable[[], bool],
        restart: Callable[[], Deferred[Any]],
        give_up: Callable[[Exception], None],
    ) -> None:
        self._clock = clock
        self._alive = alive
        self._restart = restart
        self._give_up = give_up
        self._checks = LoopingCall(self._check)
        self._checks.clock = clock
        self._restarting: Deferred[None] = succeed(None)

    def start(self) -> None:
        self._checks.start(CHECK_INTERVAL, now=False)

    def stop(self) -> None:
        """Stop checking, and a restart under way (at once if between attempts)."""
        if self._checks.running:
            self._checks.stop()
        self._restarting.cancel()

    def _check(self) -> None:
        if not self._restarting.called or self._alive():
            return
        self._restarting = ensureDeferred(self._restart_until_up())

    async def _restart_until_up(self) -> None:
        numbers = itertools.count(1)

        def attempt() -> Deferred[Any]:
            self.log.warn(
                "embedded PostgreSQL is down; restarting it (attempt {number} of {attempts})",
                number=next(numbers),
                attempts=RESTART_ATTEMPTS,
            )
            return self._restart()

        try:
            await retrying(
                attempt,
                clock=self._clock,
                retries=RESTART_ATTEMPTS - 1,
                delay=RESTART_BACKOFF,
                retryable=lambda error: not isinstance(error, CancelledError),
                on_retry=self._failed,
            )
        except CancelledError:
            return
        except Exception as error:
            self._checks.stop()
            self._give_up(error)
            return
        self.log.info("embedded PostgreSQL is back")

    def _failed(self, error: Exception, seconds: float) -> None:
        self.log.warn(
            "restarting embedded PostgreSQL failed: {error}; next attempt in {seconds}s", error=error, seconds=seconds
        )
