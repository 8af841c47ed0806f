"""The run store: run ids, workdirs, ``job.json``, the atomically rewritten ``manifest.json`` and the
append-only ``logs/events.jsonl``.

A run is created in a hidden temporary folder and renamed into place once its three files are written, so
``runs/`` never shows a half-created run. ``manifest.json`` is replaced by write-to-temp, fsync, rename;
each event is one ``write(2)`` of a whole line on an ``O_APPEND`` descriptor, so concurrent writers never
interleave within a line.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from datetime import timezone
from pathlib import Path
from typing import Any

from .converters import converter
from .errors import InputNotFound
from .errors import OutputWriteFailed
from .errors import RunNotFound
from .fsutil import atomic_write
from .fsutil import fsync_dir
from .models import Job
from .models import Manifest
from .models import PhaseState

RUN_ID_RE = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{10}")
MANIFEST = "manifest.json"
JOB = "job.json"
EVENTS = Path("logs") / "events.jsonl"
FINAL = "final.mp4"

Clock = Callable[[], datetime]
Listener = Callable[[dict[str, Any]], None]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def new_run_id(now: datetime, token: str | None = None) -> str:
    """``20261130T001502Z-0c3e19f3a1``: the UTC creation second, the microsecond (5 hex digits), 20 random bits.

    Sorts by creation time (to the microsecond); URL-safe; unique with overwhelming probability, and
    :meth:`RunStore.create` retries on the rare collision."""
    stamp = now.astimezone(timezone.utc)
    return stamp.strftime("%Y%m%dT%H%M%SZ") + f"-{stamp.microsecond:05x}" + (token or secrets.token_hex(3)[:5])


def is_run_id(value: str) -> bool:
    return isinstance(value, str) and RUN_ID_RE.fullmatch(value) is not None


def dump_json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


class RunStore:
    """Runs on disk under ``runs_dir``."""

    def __init__(self, runs_dir: Path, clock: Clock = utcnow):
        self.runs_dir = Path(runs_dir).absolute()
        self.clock = clock
        self._listeners: list[Listener] = []
        self._listeners_lock = threading.Lock()

    # ---------------------------------------------------------------- paths

    def workdir(self, run_id: str) -> Path:
        """The run's folder. Refuses anything that is not a run id, before touching the file system."""
        if not is_run_id(run_id):
            raise RunNotFound(f"no run {_shown(run_id)}")
        return self.runs_dir / run_id

    def require(self, run_id: str) -> Path:
        wd = self.workdir(run_id)
        if not wd.is_dir():
            raise RunNotFound(f"no run {run_id}")
        return wd

    def manifest_path(self, run_id: str) -> Path:
        path = self.require(run_id) / MANIFEST
        if not path.is_file():
            raise InputNotFound(f"run {run_id} has no manifest.json")
        return path

    def events_path(self, run_id: str) -> Path:
        path = self.require(run_id) / EVENTS
        if not path.is_file():
            raise InputNotFound(f"run {run_id} has no logs/events.jsonl")
        return path

    def final_path(self, run_id: str) -> Path:
        return self.workdir(run_id) / FINAL

    def now(self) -> str:
        return iso(self.clock())

    # ---------------------------------------------------------------- create

    def create(self, job: Job, phases: list[tuple[str, PhaseState]]) -> Manifest:
        """Write a new run (``job.json``, ``manifest.json``, ``logs/events.jsonl`` with ``run.created``)."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            now = self.clock()
            run_id = new_run_id(now)
            final_dir = self.runs_dir / run_id
            if final_dir.exists():
                continue
            tmp = Path(tempfile.mkdtemp(prefix=f".creating-{run_id}-", dir=self.runs_dir))
            try:
                stamp = iso(now)
                manifest = Manifest(run_id=run_id, created_at=stamp, updated_at=stamp, workdir=str(final_dir),
                                    job=job, phases=dict(phases))
                (tmp / "logs").mkdir()
                atomic_write(tmp / JOB, dump_json(converter.unstructure(job)))
                atomic_write(tmp / MANIFEST, dump_json(converter.unstructure(manifest)))
                event = self._event_record(run_id, "run.created", data={"workdir": str(final_dir)})
                with open(tmp / EVENTS, "ab") as f:
                    f.write(_line(event))
                os.chmod(tmp, 0o755)
                try:
                    os.rename(tmp, final_dir)  # fails if a run of that id appeared meanwhile
                except OSError:
                    shutil.rmtree(tmp, ignore_errors=True)
                    continue
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            fsync_dir(self.runs_dir)
            self._notify(event)
            return manifest
        raise OutputWriteFailed("could not allocate a unique run id; try again")

    # ---------------------------------------------------------------- read / write

    def read_manifest_raw(self, run_id: str) -> dict[str, Any]:
        """``manifest.json`` as a dict, unvalidated (for fast reads)."""
        return json.loads(self.manifest_path(run_id).read_text(encoding="utf-8"))

    def load_manifest(self, run_id: str) -> Manifest:
        return converter.structure(self.read_manifest_raw(run_id), Manifest)

    def load_job(self, run_id: str) -> Job:
        path = self.require(run_id) / JOB
        if not path.is_file():
            raise InputNotFound(f"run {run_id} has no job.json")
        return converter.structure(json.loads(path.read_text(encoding="utf-8")), Job)

    def save_manifest(self, manifest: Manifest) -> None:
        manifest.updated_at = self.now()
        atomic_write(self.workdir(manifest.run_id) / MANIFEST, dump_json(converter.unstructure(manifest)))

    def remove_partials(self, run_id: str) -> list[str]:
        """Delete the temp files (``.*.part``) an interrupted writer left in the run's folder; returns them.

        Only the run's owner calls this (it holds the run lock), so no live writer's file is removed."""
        wd = self.workdir(run_id)
        removed = []
        for path in wd.rglob(".*.part"):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(str(path.relative_to(wd)))
        return removed

    def remove_stale_creations(self, older_than_s: float = 3600.0) -> list[str]:
        """Remove ``.creating-*`` folders a process died in the middle of writing (they never became runs)."""
        removed = []
        if not self.runs_dir.is_dir():
            return removed
        cutoff = time.time() - older_than_s
        for path in self.runs_dir.glob(".creating-*"):
            try:
                if path.is_dir() and path.stat().st_mtime < cutoff:
                    shutil.rmtree(path)
                    removed.append(path.name)
            except OSError:
                continue
        return removed

    def list_runs(self) -> list[str]:
        if not self.runs_dir.is_dir():
            return []
        return sorted(p.name for p in self.runs_dir.iterdir() if is_run_id(p.name) and p.is_dir())

    # ---------------------------------------------------------------- events

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every event appended by this process (e.g. a CLI's progress)."""
        with self._listeners_lock:
            self._listeners.append(listener)

    def emit(self, run_id: str, event: str, *, phase: str | None = None, message: str | None = None,
             data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Append one event line to the run's ``logs/events.jsonl`` (flushed before returning)."""
        record = self._event_record(run_id, event, phase=phase, message=message, data=data)
        path = self.workdir(run_id) / EVENTS
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, _line(record))
        finally:
            os.close(fd)
        self._notify(record)
        return record

    def _event_record(self, run_id: str, event: str, *, phase: str | None = None, message: str | None = None,
                      data: dict[str, Any] | None = None) -> dict[str, Any]:
        record: dict[str, Any] = {"ts": self.now(), "run_id": run_id, "event": event}
        if phase is not None:
            record["phase"] = phase
        if message is not None:
            record["message"] = message
        if data:
            record["data"] = data
        return record

    def _notify(self, record: dict[str, Any]) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(record)
            except Exception:  # a broken listener must not break a run
                pass


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")


def _shown(run_id: str) -> str:
    text = repr(run_id)
    return text if len(text) <= 60 else text[:57] + "..."
