"""Where runs execute.

An executor is handed run ids, never live objects: everything a run needs is in its folder, so an executor
may run it in this process (the default :class:`ThreadPoolExecutor`), inline (:class:`InlineExecutor`, for
``vidax run``), or on another machine that sees the same runs folder.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("vidax.executor")

RunFn = Callable[[str], None]


class Executor(Protocol):
    """Takes run ids and sees that each is executed once."""

    def submit(self, run_id: str) -> None:
        """Queue ``run_id`` for execution; returns at once (or after it ran, for an inline executor)."""

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking runs; with ``wait``, return when the runs under way have ended."""


class ThreadPoolExecutor:
    """The embedded default: a bounded pool of threads in this process."""

    def __init__(self, run: RunFn, threads: int = 2):
        self._run = run
        self._pool = cf.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vidax-run")
        self._active: set[str] = set()
        self._lock = threading.Lock()
        self.threads = threads

    def submit(self, run_id: str) -> None:
        with self._lock:
            self._active.add(run_id)
        try:
            self._pool.submit(self._execute, run_id)
        except RuntimeError:
            with self._lock:
                self._active.discard(run_id)
            raise

    def _execute(self, run_id: str) -> None:
        try:
            self._run(run_id)
        except Exception:  # the run function records failures itself; this is the last line of defence
            log.exception("run %s: the executor caught an unexpected error", run_id)
        finally:
            with self._lock:
                self._active.discard(run_id)

    @property
    def active(self) -> set[str]:
        with self._lock:
            return set(self._active)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)


class InlineExecutor:
    """Runs each run in the calling thread, before ``submit`` returns."""

    def __init__(self, run: RunFn):
        self._run = run

    def submit(self, run_id: str) -> None:
        self._run(run_id)

    def shutdown(self, wait: bool = True) -> None:
        return None
