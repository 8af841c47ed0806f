"""Run ownership with flock: one holder at a time, across threads and processes, freed when a holder dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from vidax_core.locks import FileRunLocks

RUN_ID = "20260301T120000Z-0123456789"

# A separate python process that flocks the run's lock file the way another gunicorn worker would.
#   argv: LOCK_PATH MODE   MODE "try": try once, print acquired/busy, exit
#                          MODE "hold": take it (blocking), print acquired, wait until killed
CHILD = textwrap.dedent("""
    import fcntl, os, sys, time
    path, mode = sys.argv[1], sys.argv[2]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if mode == "try":
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("busy", flush=True)
        else:
            print("acquired", flush=True)
        sys.exit(0)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("acquired", flush=True)
    time.sleep(120)
""")


@pytest.fixture
def runs(tmp_path):
    d = tmp_path / "runs"
    (d / RUN_ID).mkdir(parents=True)
    return d


@pytest.fixture
def locks(runs):
    lk = FileRunLocks(runs)
    yield lk
    lk.release_all()


def lock_path(runs):
    return runs / RUN_ID / FileRunLocks.FILENAME


def child_try(runs) -> str:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(lock_path(runs)), "try"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def holder(runs):
    """Start a process holding the run's lock; yields the Popen (killed at teardown if still alive)."""
    procs = []

    def start():
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(lock_path(runs)), "hold"],
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "acquired"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()


def test_acquire_and_release(locks):
    assert locks.acquire(RUN_ID) is True
    assert locks.held_here(RUN_ID) is True
    locks.release(RUN_ID)
    assert locks.held_here(RUN_ID) is False
    assert locks.acquire(RUN_ID) is True


def test_second_acquire_in_the_same_process_fails(locks, runs):
    assert locks.acquire(RUN_ID) is True
    assert locks.acquire(RUN_ID) is False
    # another FileRunLocks of the same process (another Vidax) is excluded too
    other = FileRunLocks(runs)
    assert other.acquire(RUN_ID) is False
    assert other.held_here(RUN_ID) is False
    locks.release(RUN_ID)
    assert other.acquire(RUN_ID) is True
    other.release(RUN_ID)


def test_only_one_of_many_threads_wins(locks):
    barrier = threading.Barrier(16)
    results = []

    def worker():
        barrier.wait()
        results.append(locks.acquire(RUN_ID))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 15 + [True]


def test_release_when_not_held_is_a_no_op(locks, runs):
    locks.release(RUN_ID)
    assert locks.acquire(RUN_ID) is True
    FileRunLocks(runs).release(RUN_ID)  # a different owner cannot release it
    assert child_try(runs) == "busy"


def test_another_process_cannot_take_a_held_lock_until_released(locks, runs):
    assert child_try(runs) == "acquired"  # free: the child takes it and exits, which frees it
    assert locks.acquire(RUN_ID) is True
    assert child_try(runs) == "busy"
    locks.release(RUN_ID)
    assert child_try(runs) == "acquired"


def test_lock_held_by_another_process_cannot_be_acquired(locks, holder):
    proc = holder()
    assert locks.acquire(RUN_ID) is False
    assert locks.held_here(RUN_ID) is False
    assert proc.poll() is None


def test_lock_is_freed_when_its_holder_is_killed(locks, holder):
    proc = holder()
    assert locks.acquire(RUN_ID) is False
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert locks.acquire(RUN_ID) is True
    assert locks.held_here(RUN_ID) is True


def test_lock_file_names_its_holder(locks, runs):
    assert locks.acquire(RUN_ID)
    owner = json.loads(lock_path(runs).read_text())
    assert owner["pid"] == os.getpid()
    locks.release(RUN_ID)
    assert lock_path(runs).read_text() == ""


def test_release_all(locks, runs):
    other_id = "20260301T120001Z-abcdefabcd"
    (runs / other_id).mkdir()
    assert locks.acquire(RUN_ID) and locks.acquire(other_id)
    assert sorted(locks.release_all()) == sorted([RUN_ID, other_id])
    assert not locks.held_here(RUN_ID) and not locks.held_here(other_id)
    assert child_try(runs) == "acquired"
