"""
One daemon per data folder. A second daemon on the same TRADEHUB_DATA_DIR
would take the first one's embedded cluster for its own, and stop it on its
way out; so each daemon holds an exclusive flock on a file in the folder.
The kernel drops a flock when its holder dies, however it dies: a daemon
killed with SIGKILL leaves no stale lock behind.
"""

import fcntl
import os
from pathlib import Path

LOCK_FILE = "tradehub.lock"


class DataFolderInUse(Exception):
    """Another live process holds the folder; str() is the one line to show."""


class DataFolderLock:
    """The lock on C{folder}, holding the pid of the process that took it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOCK_FILE
        self._descriptor: int | None = None

    def acquire(self) -> None:
        """
        Take the lock and write this process's pid into its file, or raise
        L{DataFolderInUse} naming the pid of the process that holds it. The
        descriptor is not inherited (PEP 446), so the PostgreSQL server the
        daemon starts never holds the lock after the daemon is gone.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # The holder writes its pid just after locking: this read may come first.
            holder = os.read(descriptor, 32).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise DataFolderInUse(
                f"data folder {self.folder} is in use by another tradehub daemon (pid {holder})"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._descriptor = descriptor

    def release(self) -> None:
        """Let another daemon have the folder. The file stays: removing it would race a daemon opening it."""
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None
