"""Verified downloads of assets, the way good download managers do them.

For one asset, holding a lock on its target (threads and processes alike):

1. check the target; ``ok``/``unknown`` is done; ``missing`` and ``hash_mismatch`` follow the asset's policy;
2. check free space against ``size``;
3. stream into ``.<name>.vidax-part`` beside the target, resuming a partial file left by an earlier attempt
   (even by a killed process) with ``Range`` + ``If-Range``; the source starts over when the server answers
   with the whole file;
4. retry transient failures (connection errors, timeouts, 408, 429, 5xx) with exponential backoff, fail fast
   on the others (401, 403, 404, ...);
5. verify size and sha256 over the whole file, fsync, rename onto the target, fsync the folder.

The target never holds a partial or unverified file. The lock is an ``flock`` on ``.<name>.vidax-lock``,
released by the kernel when its holder dies, so a crashed install never blocks the next one; whoever gets
the lock second finds the file in place and fetches nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import queue
import random
import re
import shutil
import threading
import time
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .assets import Asset
from .assets import AssetState
from .assets import HashCache
from .assets import check_asset
from .assets import hash_file
from .errors import FetchError
from .fsutil import atomic_write
from .fsutil import fsync_dir
from .urls import redact_url

log = logging.getLogger("vidax.download")

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
HASH_BUFFER = 1 << 20
FREE_SPACE_MARGIN = 16 << 20  # leave a little room for everything else on the disk
WRITEBACK_STEP = 32 << 20

Progress = Callable[[int, int | None], None]


class InstallFailed(Exception):
    """One asset could not be installed (the reason is the message)."""


class HashingWriter:
    """A file wrapper that hashes what is written sequentially, so the final check needs no second read.

    The hash runs on a thread of its own, fed through a bounded queue: hashlib releases the GIL, so hashing
    overlaps receiving and writing instead of adding to them. Any write that is not at the end of what was hashed
    so far (a source seeking elsewhere) makes the running hash invalid, and the whole file is hashed again at the
    end: the check always covers the whole file. Call :meth:`digest` (or :meth:`close`) to end the thread.
    """

    _RESET = object()
    _END = object()

    def __init__(self, f, hashed_prefix: int, hasher):
        self._f = f
        self._hashed = hashed_prefix
        self._hinted = hashed_prefix
        self.valid = True
        self._hasher = hasher
        self._queue: queue.Queue = queue.Queue(maxsize=32)
        self._thread = threading.Thread(target=self._hash_loop, name="vidax-sha256", daemon=True)
        self._thread.start()
        self._done = False

    def _hash_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if item is self._RESET:
                self._hasher = hashlib.sha256()
            else:
                self._hasher.update(item)

    def write(self, data) -> int:
        if self.valid and self._f.tell() == self._hashed:
            self._queue.put(bytes(data))  # bytes are immutable: safe to hash while the caller goes on
            self._hashed += len(data)
        else:
            self.valid = False
        n = self._f.write(data)
        while n < len(data):  # an unbuffered file may write less than asked
            n += self._f.write(memoryview(data)[n:])
        self._flushed_hint()
        return n

    def _flushed_hint(self) -> None:
        """Every WRITEBACK_STEP bytes, ask the kernel to start writing the finished part to disk (without waiting),
        so the fsync before the rename has little left to do instead of the whole file."""
        pos = self._f.tell()
        if pos - self._hinted >= WRITEBACK_STEP and hasattr(os, "posix_fadvise"):
            try:
                os.posix_fadvise(self._f.fileno(), self._hinted, pos - self._hinted, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass
            self._hinted = pos

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)

    def tell(self) -> int:
        return self._f.tell()

    def truncate(self, size: int | None = None) -> int:
        size = self._f.tell() if size is None else size
        if size == 0:
            self._queue.put(self._RESET)
            self._hashed, self.valid = 0, True
        elif size < self._hashed:
            self.valid = False
        return self._f.truncate(size)

    def flush(self) -> None:
        self._f.flush()

    def fileno(self) -> int:
        return self._f.fileno()

    def close(self) -> None:
        """End the hashing thread (idempotent)."""
        if not self._done:
            self._done = True
            self._queue.put(self._END)
            self._thread.join()

    def digest(self) -> str | None:
        self.close()
        return self._hasher.hexdigest() if self.valid else None

    @property
    def hashed(self) -> int:
        return self._hashed


class TargetLock:
    """Exclusive use of one asset target across threads (a mutex) and processes (flock)."""

    _mutexes: dict[str, threading.Lock] = {}
    _guard = threading.Lock()

    def __init__(self, target: Path):
        self.path = target.with_name(f".{target.name}.vidax-lock")
        with self._guard:
            self._mutex = self._mutexes.setdefault(str(self.path), threading.Lock())
        self._fd: int | None = None

    def __enter__(self) -> TargetLock:
        self._mutex.acquire()
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another install of %s to finish", self.path.name[1:-len(".vidax-lock")])
                fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._mutex.release()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
        finally:
            self._fd = None
            self._mutex.release()


def _with_log(asset: Asset, progress: Progress | None) -> Progress:
    """``progress`` plus a line in the server log every 10 % (or 30 s), so a long install shows there too."""
    state = {"step": -1, "at": time.monotonic()}

    def report(done: int, total: int | None) -> None:
        if progress is not None:
            progress(done, total)
        total = total or asset.size
        step = int(10 * done / total) if total else -1
        now = time.monotonic()
        if step > state["step"] or now - state["at"] >= 30:
            state["step"], state["at"] = max(step, state["step"]), now
            share = f" ({100 * done / total:.0f}%)" if total else ""
            log.info("asset %s: %d bytes%s", asset.name, done, share)

    return report


class Installer:
    """Ensures assets by their policies through the registry's asset sources."""

    def __init__(self, registry: Any, cache: HashCache, *, attempts: int = 5, backoff: float = 0.5,
                 max_backoff: float = 8.0, env: Mapping[str, str] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.registry = registry
        self.cache = cache
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.env = os.environ if env is None else env
        self.sleep = sleep

    def ensure(self, asset: Asset, progress: Progress | None = None) -> AssetState:
        """Make ``asset`` present and verified if its policies allow; never raises for the asset's own failure."""
        try:
            asset.path.parent.mkdir(parents=True, exist_ok=True)
            with TargetLock(asset.path):
                return self._ensure_locked(asset, progress)
        except InstallFailed as exc:
            return self._failed(asset, str(exc))
        except OSError as exc:
            return self._failed(asset, f"{exc.strerror or exc} ({exc.filename or asset.path})")

    def _failed(self, asset: Asset, reason: str, state: AssetState | None = None) -> AssetState:
        log.error("asset %s: %s", asset.name, reason)
        state = state or check_asset(asset, self.cache)
        state.action, state.error = "failed", reason
        if state.status in ("ok", "unknown"):  # a present file that is fine, but the install still failed
            state.status = "failed"
        return state

    def _ensure_locked(self, asset: Asset, progress: Progress | None) -> AssetState:
        state = check_asset(asset, self.cache)
        if state.status in ("ok", "unknown"):
            state.action = "present"
            return state
        if state.status == "missing" and asset.on_missing == "fail":
            return self._failed(asset, "missing, and its on_missing policy is \"fail\"", state)
        if state.status == "hash_mismatch" and asset.on_hash_mismatch == "fail":
            return self._failed(asset, f"sha256 is {state.actual_sha256}, expected {asset.sha256}; the file is "
                                       "left as it is (on_hash_mismatch is \"fail\")", state)
        self._download(asset, progress)
        state = check_asset(asset, self.cache)
        state.action = "downloaded"
        return state

    # ---------------------------------------------------------------- download

    def _download(self, asset: Asset, progress: Progress | None) -> None:
        source = self.registry.source_for(asset.url)
        if source is None:
            raise InstallFailed(f"no asset source handles {redact_url(asset.url)}")
        headers = self._headers(asset)
        part = asset.path.with_name(f".{asset.path.name}.vidax-part")
        meta_path = part.with_name(part.name + ".json")
        meta = self._read_meta(meta_path, asset)
        if meta is None and part.exists():
            part.unlink()  # a partial of another URL or of unknown origin: start clean
        self._check_space(asset, part)

        from_scratch_retry = True
        attempt = 0
        t0 = time.monotonic()
        progress = _with_log(asset, progress)
        while True:
            attempt += 1
            resume_from = part.stat().st_size if part.exists() else 0
            if asset.size is not None and resume_from > asset.size:
                resume_from = 0
            validator = (meta or {}).get("validator") if resume_from else None
            if resume_from:
                log.info("asset %s: resuming at byte %d", asset.name, resume_from)
            try:
                digest = self._fetch_once(asset, source, part, meta_path, resume_from, validator, headers,
                                          progress)
            except FetchError as exc:
                if not exc.transient:
                    if part.exists() and part.stat().st_size == 0:  # nothing worth resuming
                        part.unlink(missing_ok=True)
                        meta_path.unlink(missing_ok=True)
                    raise InstallFailed(exc.message) from None
                if attempt >= self.attempts:
                    raise InstallFailed(f"{exc.message} (gave up after {attempt} attempts)") from None
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
                log.warning("asset %s: %s; retrying in %.1fs (attempt %d of %d)", asset.name, exc.message, delay,
                            attempt + 1, self.attempts)
                self.sleep(delay)
                meta = self._read_meta(meta_path, asset)
                continue
            problem = self._verify(asset, part, digest)
            if problem is None:
                break
            part.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            if resume_from and from_scratch_retry:
                # the bytes before the resume point may be stale (the file changed on the server): once more, whole
                log.warning("asset %s: %s after resuming; downloading it whole once more", asset.name, problem)
                from_scratch_retry, meta = False, None
                continue
            raise InstallFailed(problem)

        with open(part, "rb") as f:
            os.fsync(f.fileno())
        os.replace(part, asset.path)
        fsync_dir(asset.path.parent)
        meta_path.unlink(missing_ok=True)
        if digest is not None or asset.sha256:
            self.cache.put(asset.path, asset.sha256 or digest)
        else:
            self.cache.forget(asset.path)
        size = asset.path.stat().st_size
        secs = max(time.monotonic() - t0, 1e-6)
        log.info("asset %s: installed %s (%d bytes, %.1f MB/s)", asset.name, asset.path, size, size / secs / 1e6)

    def _fetch_once(self, asset, source, part: Path, meta_path: Path, resume_from: int, validator: str | None,
                    headers: dict[str, str], progress: Progress | None) -> str | None:
        hasher = hashlib.sha256()
        # unbuffered: the sources hand over large chunks, and a buffer would only copy them once more
        with open(part, "r+b" if part.exists() else "w+b", buffering=0) as f:
            if resume_from:
                # hash the bytes already there, so the running hash covers the whole file
                f.seek(0)
                remaining = resume_from
                while remaining:
                    chunk = f.read(min(HASH_BUFFER, remaining))
                    if not chunk:
                        break
                    hasher.update(chunk)
                    remaining -= len(chunk)
            f.seek(resume_from)
            writer = HashingWriter(f, resume_from, hasher)

            def on_validator(value: str | None) -> None:
                atomic_write(meta_path, json.dumps({"url": asset.url, "validator": value}).encode())

            try:
                source.fetch(asset.url, writer, resume_from=resume_from, validator=validator, headers=headers,
                             progress=progress, on_validator=on_validator)
            finally:
                writer.close()
            f.flush()
            end = f.seek(0, os.SEEK_END)
            return writer.digest() if writer.valid and writer.hashed == end else None

    def _verify(self, asset: Asset, part: Path, digest: str | None) -> str | None:
        size = part.stat().st_size
        if asset.size is not None and size != asset.size:
            return f"downloaded {size} bytes, the manifest says {asset.size}"
        if asset.sha256:
            actual = digest or hash_file(part)
            if actual != asset.sha256:
                return f"downloaded file's sha256 is {actual}, expected {asset.sha256}; it was not installed"
        return None

    def _check_space(self, asset: Asset, part: Path) -> None:
        if asset.size is None:
            return
        have = part.stat().st_size if part.exists() else 0
        need = max(0, asset.size - have)
        free = shutil.disk_usage(asset.path.parent).free
        if need + FREE_SPACE_MARGIN > free:
            raise InstallFailed(f"not enough disk space in {asset.path.parent}: {need} bytes needed, {free} free")

    def _headers(self, asset: Asset) -> dict[str, str]:
        """The manifest's headers with ``${VAR}`` taken from the environment (values are never logged)."""
        out = {}
        for key, value in asset.headers.items():
            for var in ENV_REF.findall(value):
                if var not in self.env:
                    raise InstallFailed(f"header {key} needs the environment variable {var}, which is not set")
            out[key] = ENV_REF.sub(lambda m: self.env[m.group(1)], value)
        return out

    @staticmethod
    def _read_meta(meta_path: Path, asset: Asset) -> dict[str, Any] | None:
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and meta.get("url") == asset.url else None
