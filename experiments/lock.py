"""One writer per run directory, and sweep jobs that die with the process that launched them.

``RunLock`` is an advisory ``flock`` on ``<run dir>/.lock``: the kernel drops it when its
holder exits for any reason (SIGKILL included), so a dead holder never keeps a run directory.
The lock file names the live holder (pid, host, start time, command) for the message a second
writer gets. ``watch_parent`` makes a sweep job stop when the multirun process that launched it
is gone (a closed terminal, a scheduler's preemption): an orphaned job would otherwise keep
appending while a rerun of the same command writes the same batches.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

from experiments.config import ConfigError

log = logging.getLogger(__name__)
PARENT_ENV = "DUET_SWEEP_PARENT"  # pid of the multirun process, inherited by its job workers


class RunLock:
    """Exclusive lock on a run directory, waiting up to ``wait`` seconds for a live holder."""

    def __init__(self, run_dir: str | Path, wait: float = 60.0):
        self.path = Path(run_dir) / ".lock"
        self.wait = float(wait)
        self._file = None

    def holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            return "an unknown process"
        if not info:
            return "an unknown process"
        return (f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')} "
                f"({info.get('command')})")

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")
        deadline, told = time.monotonic() + self.wait, False
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.close()
                    raise ConfigError(
                        f"{self.path.parent} is being written by {self.holder()}; wait for it "
                        "to finish or stop it (one writer per run directory)") from None
                if not told:
                    log.warning("%s is being written by %s: waiting up to %.0f s",
                                self.path.parent, self.holder(), self.wait)
                    told = True
                time.sleep(0.2)
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                            "command": " ".join(sys.argv)[:300]}))
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()
            self._file.flush()
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def mark_sweep_parent() -> None:
    """Called in the multirun process before it launches jobs: its workers inherit the pid."""
    os.environ[PARENT_ENV] = str(os.getpid())


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (dead, not yet reaped by its own parent) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: the signal test is all there is
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


_watching = False


def watch_parent(interval: float = 0.2) -> bool:
    """In a sweep job running in a worker process, end this process as soon as the multirun
    process is gone. Returns whether a watch was started (False in the multirun process
    itself, and outside sweeps)."""
    global _watching
    pid = int(os.environ.get(PARENT_ENV, "0") or 0)
    if pid <= 0 or pid == os.getpid():
        return False
    if _watching:  # a worker runs several jobs; one watch serves them all
        return True
    _watching = True
    direct = os.getppid() == pid

    def watch() -> None:
        while (os.getppid() == pid) if direct else _alive(pid):
            time.sleep(interval)
        # The run directory's files tolerate a torn last line and an unfinished batch, and the
        # kernel releases the lock with the process: exiting at once is safe.
        os.write(2, f"sweep process {pid} is gone: job {os.getpid()} stops\n".encode())
        os._exit(1)

    threading.Thread(target=watch, name="duet-parent-watch", daemon=True).start()
    return True
