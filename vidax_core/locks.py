"""Run ownership: one start at a time per run, and detecting runs whose owner died.

:class:`RunLocks` is the small interface the rest of VIDAX uses; :class:`FileRunLocks` implements it with
``flock(2)`` on ``runs/<id>/.lock``. An flock belongs to an open file description, so it excludes other
threads of this process as well as other processes (every gunicorn worker), and the kernel drops it when its
owner dies, however it dies: a run whose manifest says ``running`` while its lock is free has lost its
owner. A distributed executor brings its own implementation (e.g. the task queue's leases).

flock works on local file systems; on NFS, Linux emulates it with POSIX locks, which do not exclude threads
of one process, so :class:`FileRunLocks` also keeps an in-process table of the runs it holds.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Protocol


class RunLocks(Protocol):
    """Who owns a run right now."""

    def acquire(self, run_id: str) -> bool:
        """Take the run if nobody holds it; ``False`` when somebody (here or elsewhere) does."""

    def release(self, run_id: str) -> None:
        """Give the run up (a no-op when this process does not hold it)."""

    def held_here(self, run_id: str) -> bool:
        """Whether this process holds the run."""


class FileRunLocks:
    """:class:`RunLocks` by ``flock`` on a file in each run's folder."""

    FILENAME = ".lock"

    def __init__(self, runs_dir: Path):
        self.runs_dir = Path(runs_dir)
        self._held: dict[str, int] = {}
        self._mutex = threading.Lock()

    def _path(self, run_id: str) -> Path:
        return self.runs_dir / run_id / self.FILENAME

    def acquire(self, run_id: str) -> bool:
        with self._mutex:
            if run_id in self._held:
                return False
            fd = os.open(self._path(run_id), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                raise
            # who holds it, for a person looking at a stuck run (the lock itself is the flock)
            owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
            os.ftruncate(fd, 0)
            os.pwrite(fd, owner.encode() + b"\n", 0)
            self._held[run_id] = fd
            return True

    def release(self, run_id: str) -> None:
        with self._mutex:
            fd = self._held.pop(run_id, None)
            if fd is None:
                return
            try:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def held_here(self, run_id: str) -> bool:
        with self._mutex:
            return run_id in self._held

    def release_all(self) -> list[str]:
        """Release every run this process holds (shutdown); returns their ids."""
        with self._mutex:
            ids = list(self._held)
        for run_id in ids:
            self.release(run_id)
        return ids
