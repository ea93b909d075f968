"""Faults a test inflicts on a PostgreSQL server of its own: kill, stop, continue."""

import signal
import time

import psutil


def signal_server(cluster, number):
    """Send C{number} to the server's postmaster and every backend; returns the processes."""
    processes = cluster.server_processes()
    for process in processes:
        try:
            process.send_signal(number)
        except psutil.NoSuchProcess:
            pass
    return processes


def crash(cluster):
    """Kill the whole server at once, as a power cut would; returns once none of it is running."""
    processes = signal_server(cluster, signal.SIGKILL)
    until_gone(processes)


def kill_postmaster(cluster):
    """Kill the postmaster only: its backends notice and end by themselves. Returns once all are gone."""
    postmaster = psutil.Process(int((cluster.pgdata / "postmaster.pid").read_text().split()[0]))
    backends = [p for p in cluster.server_processes() if p.pid != postmaster.pid]
    postmaster.send_signal(signal.SIGKILL)
    until_gone([postmaster, *backends])


def until_gone(processes, timeout=30):
    deadline = time.monotonic() + timeout
    for process in processes:
        while _alive(process):
            if time.monotonic() > deadline:
                raise AssertionError(f"process {process.pid} did not end")
            time.sleep(0.01)


def _alive(process):
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
