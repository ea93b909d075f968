import os
import signal
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tradehub.data_folder import DataFolderInUse, DataFolderLock


def _held(test):
    lock = DataFolderLock(Path(test.mktemp()).resolve())
    lock.acquire()
    test.addCleanup(lock.release)
    return lock


class DataFolderLockTests(SynchronousTestCase):
    def test_a_second_lock_names_the_folder_and_the_holders_pid(self):
        first = _held(self)
        with self.assertRaises(DataFolderInUse) as caught:
            DataFolderLock(first.folder).acquire()
        self.assertEqual(
            str(caught.exception),
            f"data folder {first.folder} is in use by another tradehub daemon (pid {os.getpid()})",
        )

    def test_a_released_folder_can_be_locked_again(self):
        first = _held(self)
        first.release()
        second = DataFolderLock(first.folder)
        second.acquire()
        second.release()

    def test_a_killed_holder_leaves_no_stale_lock(self):
        folder = Path(self.mktemp()).resolve()
        code = (
            "import sys; from pathlib import Path; from tradehub.data_folder import DataFolderLock\n"
            f"DataFolderLock(Path({str(folder)!r})).acquire(); print('locked', flush=True); sys.stdin.read()\n"
        )
        holder = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.addCleanup(holder.stdout.close)
        self.addCleanup(holder.stdin.close)
        self.addCleanup(holder.wait)
        self.addCleanup(holder.kill)
        self.assertEqual(holder.stdout.readline(), "locked\n")
        with self.assertRaises(DataFolderInUse) as caught:
            DataFolderLock(folder).acquire()
        self.assertIn(f"(pid {holder.pid})", str(caught.exception))
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        lock = DataFolderLock(folder)
        lock.acquire()
        lock.release()
