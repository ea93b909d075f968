"""A real `twistd -n tradehub` subprocess for end-to-end tests."""

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

from .support import TWISTD, free_port

TOKENS = {"TRADEHUB_FRONTEND_TOKEN": "frontend-secret-token", "TRADEHUB_ML_TOKEN": "ml-secret-token"}


class Daemon:
    """
    One daemon in its own folder (its cwd and TRADEHUB_DATA_DIR), on free
    ports, with output captured to files.
    """

    def __init__(self, folder, env=None, args=()):
        self.folder = Path(folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.frontend_port = free_port()
        self.ml_port = free_port()
        self.ops_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADEHUB_", "DATABASE_URL"))}
        self.env.update(TOKENS)
        self.env.update(
            TRADEHUB_DATA_DIR=str(self.folder / "data"),
            TRADEHUB_FRONTEND_ENDPOINT=f"tcp:{self.frontend_port}:interface=127.0.0.1",
            TRADEHUB_ML_ENDPOINT=f"tcp:{self.ml_port}:interface=127.0.0.1",
            TRADEHUB_OPS_ENDPOINT=f"tcp:{self.ops_port}:interface=127.0.0.1",
        )
        self.env.update(env or {})
        self.args = list(args)
        self.process = None

    @property
    def pgdata(self):
        return self.folder / "data" / "pgdata"

    def start(self):
        self.stdout = open(self.folder / "stdout", "wb")
        self.stderr = open(self.folder / "stderr", "wb")
        self.process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "tradehub", *self.args],
            cwd=self.folder,
            env=self.env,
            stdout=self.stdout,
            stderr=self.stderr,
            stdin=subprocess.DEVNULL,
        )
        return self

    def output(self):
        return (self.folder / "stdout").read_text()

    def errors(self):
        return (self.folder / "stderr").read_text()

    def wait_for(self, text, timeout=60):
        """Wait until C{text} appears in stdout; fail if the daemon exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.process.poll() is not None:
                raise AssertionError(
                    f"daemon exited {self.process.returncode} before {text!r}:\n{self.output()}{self.errors()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} within {timeout}s:\n{self.output()}")

    def signal(self, number=signal.SIGTERM):
        self.process.send_signal(number)

    def wait(self, timeout=60):
        try:
            return self.process.wait(timeout)
        finally:
            self.stdout.close()
            self.stderr.close()

    def kill(self):
        """Clean-up for a test that failed half-way: the daemon and its workers (TRADEHUB_WORKERS)."""
        if self.process is not None and self.process.poll() is None:
            workers = psutil.Process(self.process.pid).children(recursive=True)
            self.process.kill()
            self.wait()
            for worker in workers:
                try:
                    worker.kill()
                except psutil.NoSuchProcess:
                    pass


def postgres_pid(pgdata):
    """The postmaster's pid while the cluster in pgdata runs, else None."""
    pid_file = Path(pgdata) / "postmaster.pid"
    if not pid_file.exists():
        return None
    return int(pid_file.read_text().split()[0])


def process_alive(pid, grace=5.0):
    """
    True while pid runs. A process that is exiting (postgres removes its pid
    file a moment before it ends) gets C{grace} seconds; a zombie is dead.
    """
    deadline = time.monotonic() + grace
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.05)
