"""The run store: run ids, the files of a new run, the atomic manifest and the append-only event log."""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
import threading
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest

from vidax_core.errors import InputNotFound
from vidax_core.errors import RunNotFound
from vidax_core.models import STANDARD_PHASES
from vidax_core.models import Inputs
from vidax_core.models import Job
from vidax_core.models import PhaseState
from vidax_core.store import RunStore
from vidax_core.store import is_run_id
from vidax_core.store import new_run_id

RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{10}$")
TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
START = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=timezone.utc)


class StepClock:
    """A clock that moves ``step`` forward each time it is read."""

    def __init__(self, start=START, step=timedelta(seconds=1)):
        self.now = start
        self.step = step
        self.reads = 0

    def __call__(self):
        self.reads += 1
        t = self.now
        self.now += self.step
        return t


def a_job() -> Job:
    return Job(inputs=Inputs(audio="/media/voice.wav", image="/media/face.png"))


def phases():
    return [(name, PhaseState()) for name, _ in STANDARD_PHASES]


@pytest.fixture
def clock():
    return StepClock()


@pytest.fixture
def store(tmp_path, clock):
    return RunStore(tmp_path / "runs", clock=clock)


def lines(store, run_id) -> list[str]:
    return (store.workdir(run_id) / "logs" / "events.jsonl").read_text(encoding="utf-8").splitlines()


def hidden(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


# --------------------------------------------------------------------------- run ids


def test_run_id_format_and_uniqueness():
    # the microsecond is part of the id: ids made a microsecond apart are unique and sort in creation order
    # (ids of one and the same microsecond differ by 20 random bits, and RunStore.create retries a collision:
    # test_run_ids_from_the_store_are_unique_within_one_second)
    now = datetime(2026, 11, 30, 0, 15, 2, tzinfo=timezone.utc)
    ids = [new_run_id(now + timedelta(microseconds=i)) for i in range(1000)]
    assert len(set(ids)) == 1000
    assert sorted(ids) == ids
    for run_id in ids:
        assert RUN_ID.match(run_id), run_id
        assert run_id.startswith("20261130T001502Z-")
        assert is_run_id(run_id)


def test_run_ids_from_the_store_are_unique_within_one_second(tmp_path):
    frozen = RunStore(tmp_path / "runs", clock=lambda: START)
    ids = [frozen.create(a_job(), phases()).run_id for _ in range(25)]
    assert len(set(ids)) == 25
    assert all(RUN_ID.match(i) for i in ids)
    assert sorted(frozen.list_runs()) == sorted(ids)


def test_run_ids_sort_by_creation_time(tmp_path):
    # across a minute, an hour, a day and a year boundary
    clock = StepClock(start=datetime(2025, 12, 31, 23, 59, 57, tzinfo=timezone.utc), step=timedelta(seconds=1))
    store = RunStore(tmp_path / "runs", clock=clock)
    created = []
    for _ in range(6):
        created.append(store.create(a_job(), phases()).run_id)
    assert sorted(created) == created
    assert store.list_runs() == created
    assert created[0].startswith("20251231T235957Z-")
    assert created[-1].startswith("20260101T000")


def test_run_ids_sort_by_creation_time_within_one_second(tmp_path):
    clock = StepClock(start=datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc), step=timedelta(milliseconds=5))
    store = RunStore(tmp_path / "runs", clock=clock)
    created = [store.create(a_job(), phases()).run_id for _ in range(30)]
    assert len({i[:16] for i in created}) == 1  # all in the same second
    assert sorted(created) == created


def test_run_id_is_utc_whatever_the_clock_zone(tmp_path):
    berlin = timezone(timedelta(hours=2))
    store = RunStore(tmp_path / "runs", clock=lambda: datetime(2026, 6, 1, 1, 30, 0, tzinfo=berlin))
    manifest = store.create(a_job(), phases())
    assert manifest.run_id.startswith("20260531T233000Z-")
    assert manifest.created_at == "2026-05-31T23:30:00.000Z"


INVALID_IDS = [
    "../x", "", "x" * 300, "..", ".", "/etc/passwd", "20261130T001502Z-9F3A1C2BE4", "20261130T001502Z-9f3a1c2be",
    "20261130T001502Z-9f3a1c2be4/../x", "20261130T001502Z-9f3a1c2be4 ", "\x00", "20261130T001502-9f3a1c2be4",
    "%2e%2e%2f", "20261130T001502Z-9f3a1c2be4x",
]


@contextlib.contextmanager
def no_file_system():
    """Fail on any file-system access made in the block."""
    touched = []

    def spy(name, real):
        def wrapper(*args, **kwargs):
            touched.append((name, args))
            raise AssertionError(f"file system touched: {name}{args!r}")
        return wrapper

    names = ["stat", "lstat", "open", "mkdir", "makedirs", "listdir", "scandir", "access", "rename", "replace"]
    saved = {n: getattr(os, n) for n in names}
    saved_open = builtins.open
    try:
        for n in names:
            setattr(os, n, spy(n, saved[n]))
        builtins.open = spy("builtins.open", saved_open)
        yield touched
    finally:
        for n, f in saved.items():
            setattr(os, n, f)
        builtins.open = saved_open
    assert touched == []


@pytest.mark.parametrize("run_id", INVALID_IDS)
def test_invalid_run_ids_are_not_found_without_touching_the_file_system(store, run_id):
    assert not is_run_id(run_id)
    calls = [
        lambda: store.workdir(run_id),
        lambda: store.require(run_id),
        lambda: store.manifest_path(run_id),
        lambda: store.events_path(run_id),
        lambda: store.load_manifest(run_id),
        lambda: store.load_job(run_id),
        lambda: store.final_path(run_id),
        lambda: store.emit(run_id, "phase.progress"),
    ]
    for call in calls:
        with no_file_system(), pytest.raises(RunNotFound) as ei:
            call()
        assert ei.value.code == "RUN_NOT_FOUND"
        assert len(ei.value.message) < 120  # a 300-character id is not echoed whole
    assert not store.runs_dir.exists()


def test_run_id_with_a_trailing_newline_is_invalid(store):
    run_id = new_run_id(START) + "\n"
    assert not is_run_id(run_id)
    with pytest.raises(RunNotFound):
        store.workdir(run_id)


def test_valid_but_unknown_run_id(store):
    with pytest.raises(RunNotFound):
        store.require(new_run_id(START))
    with pytest.raises(RunNotFound):
        store.load_manifest(new_run_id(START))


# --------------------------------------------------------------------------- creating a run


def test_create_writes_job_manifest_and_events(store):
    seen = []
    store.subscribe(seen.append)
    manifest = store.create(a_job(), phases())
    wd = store.workdir(manifest.run_id)
    assert sorted(p for p in os.listdir(wd)) == ["job.json", "logs", "manifest.json"]
    assert wd == store.runs_dir / manifest.run_id and wd.is_absolute()

    job = json.loads((wd / "job.json").read_text())
    assert job["inputs"]["audio"] == "/media/voice.wav"

    m = json.loads((wd / "manifest.json").read_text())
    assert m["run_id"] == manifest.run_id
    assert m["run_status"] == "queued" and m["exit_status"] is None
    assert m["attempt"] == 0 and m["resumed"] is False
    assert m["workdir"] == str(wd)
    assert m["job"] == job
    assert list(m["phases"]) == [name for name, _ in STANDARD_PHASES]
    assert m["outputs"] == {"final": None}
    assert m["error"] is None
    assert m["schema_version"] == 1
    assert m["created_at"] == m["updated_at"] == "2026-03-01T12:00:00.250Z"

    events = [json.loads(line) for line in lines(store, manifest.run_id)]
    assert [e["event"] for e in events] == ["run.created"]
    assert events[0]["run_id"] == manifest.run_id
    assert seen == events
    # no temporary folder or file is left beside the run
    assert hidden(store.runs_dir) == []
    assert hidden(wd) == []


def test_create_failure_leaves_no_run_folder(store, monkeypatch):
    real = os.replace

    def fail_on_manifest(src, dst, *a, **kw):
        if str(dst).endswith("manifest.json"):
            raise OSError(28, "No space left on device")
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", fail_on_manifest)
    with pytest.raises(OSError):
        store.create(a_job(), phases())
    assert os.listdir(store.runs_dir) == []


def test_load_manifest_and_job_round_trip(store):
    manifest = store.create(a_job(), phases())
    loaded = store.load_manifest(manifest.run_id)
    assert loaded == manifest
    assert store.load_job(manifest.run_id) == a_job()


def test_missing_manifest_is_input_not_found(store):
    manifest = store.create(a_job(), phases())
    (store.workdir(manifest.run_id) / "manifest.json").unlink()
    with pytest.raises(InputNotFound):
        store.load_manifest(manifest.run_id)


# --------------------------------------------------------------------------- the manifest


def test_save_manifest_replaces_the_file_and_leaves_no_temp_files(store):
    manifest = store.create(a_job(), phases())
    wd = store.workdir(manifest.run_id)
    for i in range(20):
        manifest.attempt = i
        store.save_manifest(manifest)
    on_disk = json.loads((wd / "manifest.json").read_text())
    assert on_disk["attempt"] == 19
    assert on_disk["updated_at"] != on_disk["created_at"]
    assert hidden(wd) == []


def test_failed_manifest_write_leaves_the_old_manifest_intact(store, monkeypatch):
    manifest = store.create(a_job(), phases())
    wd = store.workdir(manifest.run_id)
    before = (wd / "manifest.json").read_bytes()

    def boom(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", boom)
    manifest.run_status = "running"
    manifest.attempt = 1
    with pytest.raises(OSError):
        store.save_manifest(manifest)
    monkeypatch.undo()
    assert (wd / "manifest.json").read_bytes() == before
    assert json.loads(before)["run_status"] == "queued"
    assert hidden(wd) == []
    # and the next write goes through
    store.save_manifest(manifest)
    assert json.loads((wd / "manifest.json").read_text())["run_status"] == "running"


def test_manifest_is_never_seen_half_written(store):
    manifest = store.create(a_job(), phases())
    path = store.workdir(manifest.run_id) / "manifest.json"
    manifest.job.metadata = {"blob": "x" * 200_000}
    stop = threading.Event()
    bad = []

    def reader():
        while not stop.is_set():
            try:
                json.loads(path.read_bytes())
            except ValueError as exc:
                bad.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(30):
            manifest.attempt = i
            store.save_manifest(manifest)
    finally:
        stop.set()
        t.join()
    assert bad == []


# --------------------------------------------------------------------------- events


def test_events_are_one_json_object_a_line_with_utc_timestamps(store):
    manifest = store.create(a_job(), phases())
    run_id = manifest.run_id
    store.emit(run_id, "run.started", data={"attempt": 1})
    store.emit(run_id, "phase.progress", phase="prepare", message="half way", data={"progress": 0.5})
    store.emit(run_id, "phase.completed", phase="prepare")
    raw = lines(store, run_id)
    assert len(raw) == 4
    events = [json.loads(line) for line in raw]
    assert [e["event"] for e in events] == ["run.created", "run.started", "phase.progress", "phase.completed"]
    for e in events:
        assert e["run_id"] == run_id
        assert TS.match(e["ts"]), e["ts"]
        parsed = datetime.fromisoformat(e["ts"].replace("Z", "+00:00"))
        assert parsed.utcoffset() == timedelta(0)
    assert events[2] == {"ts": events[2]["ts"], "run_id": run_id, "event": "phase.progress", "phase": "prepare",
                         "message": "half way", "data": {"progress": 0.5}}
    assert set(events[3]) == {"ts", "run_id", "event", "phase"}  # absent parts are left out, not null
    timestamps = [e["ts"] for e in events]
    assert timestamps == sorted(timestamps)


def test_events_are_appended_and_flushed_before_emit_returns(store):
    run_id = store.create(a_job(), phases()).run_id
    path = store.workdir(run_id) / "logs" / "events.jsonl"
    for i in range(5):
        record = store.emit(run_id, "phase.progress", data={"i": i})
        last = json.loads(path.read_text().splitlines()[-1])
        assert last == record
    assert len(path.read_text().splitlines()) == 6


def test_unicode_and_newlines_in_messages_stay_on_one_line(store):
    run_id = store.create(a_job(), phases()).run_id
    store.emit(run_id, "phase.failed", message="ffmpeg said:\nline two\r\nÜnïcødé ✓")
    raw = lines(store, run_id)
    assert len(raw) == 2
    assert json.loads(raw[1])["message"] == "ffmpeg said:\nline two\r\nÜnïcødé ✓"


def test_concurrent_emit_from_20_threads_yields_whole_lines(store):
    run_id = store.create(a_job(), phases()).run_id
    barrier = threading.Barrier(20)
    per_thread = 40
    payload = "y" * 6000  # longer than PIPE_BUF and a typical buffer

    def worker(n):
        barrier.wait()
        for i in range(per_thread):
            store.emit(run_id, "phase.progress", phase="encode", data={"thread": n, "i": i, "pad": payload})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    raw = lines(store, run_id)
    assert len(raw) == 1 + 20 * per_thread
    seen = {}
    for line in raw[1:]:
        e = json.loads(line)
        assert e["data"]["pad"] == payload
        seen.setdefault(e["data"]["thread"], []).append(e["data"]["i"])
    assert sorted(seen) == list(range(20))
    for n, got in seen.items():
        assert got == list(range(per_thread)), n  # each writer's lines in its own order


def test_subscribers_receive_every_event(store):
    got = []
    store.subscribe(got.append)
    run_id = store.create(a_job(), phases()).run_id
    record = store.emit(run_id, "phase.started", phase="prepare")
    assert [e["event"] for e in got] == ["run.created", "phase.started"]
    assert got[-1] == record == json.loads(lines(store, run_id)[-1])


def test_a_raising_listener_does_not_break_emit_or_other_listeners(store):
    calls = []

    def broken(event):
        calls.append("broken")
        raise RuntimeError("listener bug")

    store.subscribe(broken)
    got = []
    store.subscribe(got.append)
    run_id = store.create(a_job(), phases()).run_id
    store.emit(run_id, "phase.started", phase="prepare")
    store.emit(run_id, "phase.completed", phase="prepare")
    assert calls == ["broken"] * 3
    assert [e["event"] for e in got] == ["run.created", "phase.started", "phase.completed"]
    assert len(lines(store, run_id)) == 3


def test_list_runs_ignores_other_entries(store):
    run_id = store.create(a_job(), phases()).run_id
    (store.runs_dir / "notes.txt").write_text("x")
    (store.runs_dir / ".creating-20260101T000000Z-0000000000-abc").mkdir()
    (store.runs_dir / "not-a-run").mkdir()
    assert store.list_runs() == [run_id]
