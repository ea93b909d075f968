"""
Log output. Text lines come from twistd's own observer (each names its
component as C{[namespace#level]}); with TRADEHUB_LOG_FORMAT=json the daemon
writes one JSON object per line instead, to the same place twistd would.
"""

import sys

from twisted.logger import jsonFileLogObserver
from twisted.python.logfile import LogFile


def json_observer(logfile):
    """A JSON-lines observer writing to twistd's --logfile, or stdout for '-' or none."""
    if not logfile or logfile == "-":
        return jsonFileLogObserver(sys.stdout)
    return jsonFileLogObserver(LogFile.fromFullPath(logfile))
