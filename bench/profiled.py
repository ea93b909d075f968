"""
twistd, with cProfile around the load only: SIGUSR1 starts profiling the
reactor's thread, SIGUSR2 stops it and writes the stats to the next
TRADEHUB_BENCH_PROFILE/N.prof (N counting from 1). twistd's own --profile
covers the whole run, start and stop included, which the load's figures
must not.

    TRADEHUB_BENCH_PROFILE=DIR python bench/profiled.py -n --pidfile= tradehub
"""

import cProfile
import itertools
import os
import signal
import sys
from pathlib import Path

from twisted.scripts.twistd import run

FOLDER = Path(os.environ["TRADEHUB_BENCH_PROFILE"])
_numbers = itertools.count(1)
_profile = None


def _start(signum, frame):
    global _profile
    _profile = cProfile.Profile()
    _profile.enable()


def _stop(signum, frame):
    global _profile
    if _profile is None:
        return
    _profile.disable()
    path = FOLDER / f"{next(_numbers)}.prof"
    _profile.dump_stats(str(path) + ".part")
    os.replace(str(path) + ".part", path)
    _profile = None


if __name__ == "__main__":
    FOLDER.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
    sys.argv = ["twistd", *sys.argv[1:]]
    run()
