"""The runner and the run lifecycle: phase order, skip, failure, passthrough, resume, locks and interrupted runs.

Most tests register fake phases through a real pluggy plugin (``@hookimpl register_phases``) and run inline;
the last ones take the real ``prepare`` and ``encode`` path with real media.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from helpers import assert_final_mp4
from helpers import read_events
from helpers import simple_job
from helpers import wait_run

from vidax_core import BasePhase
from vidax_core import Vidax
from vidax_core import hookimpl
from vidax_core.errors import OutputWriteFailed
from vidax_core.errors import PhaseFailed
from vidax_core.errors import RunInProgress
from vidax_core.errors import RunNotFound
from vidax_core.locks import FileRunLocks
from vidax_core.media import probe
from vidax_core.plugins import get_plugin_manager


class FakePhase(BasePhase):
    """A phase that records its calls and does what ``behaviour[name]`` says (an exception to raise)."""

    def __init__(self, name, order, log, behaviour=None, enabled=True, passthrough=False, final=False):
        self.name = name
        self.order = order
        self.log = log
        self.behaviour = behaviour if behaviour is not None else {}
        self._enabled = enabled
        self._passthrough = passthrough
        self.final = final

    def enabled(self, job):
        return self._enabled

    def allow_passthrough(self, job):
        return self._passthrough

    def run(self, ctx):
        self.log.append(("run", self.name, dict(ctx.previous)))
        action = self.behaviour.get(self.name)
        if callable(action) and not isinstance(action, BaseException):
            action = action(ctx)
        if isinstance(action, BaseException):
            raise action
        out = ctx.output(f"{self.name}.txt")
        out.write_text(self.name)
        outputs = {"marker": ctx.relative(out)}
        if self.final:
            ctx.path("final.mp4").write_bytes(b"not really a video")
            outputs["final"] = "final.mp4"
        return outputs


class PhasePlugin:
    """A plugin object with a ``register_phases`` hook implementation."""

    __name__ = "fake_phases"

    def __init__(self, phases):
        self.phases = phases

    @hookimpl
    def register_phases(self, register):
        for phase in self.phases:
            register(phase)


class Pipeline:
    """Fake prepare (100), middle (250), late (450) and encode (500, writes final.mp4)."""

    def __init__(self, **middle):
        self.log = []
        self.behaviour = {}
        self.prepare = FakePhase("prepare", 100, self.log, self.behaviour)
        self.middle = FakePhase("middle", 250, self.log, self.behaviour, **middle)
        self.late = FakePhase("late", 450, self.log, self.behaviour)
        self.encode = FakePhase("encode", 500, self.log, self.behaviour, final=True)

    def phases(self):
        # registered out of order on purpose: the order attribute decides
        return [self.encode, self.late, self.prepare, self.middle]

    def ran(self):
        return [name for kind, name, _ in self.log if kind == "run"]


def make_vidax(settings, *plugins, executor="inline"):
    pm = get_plugin_manager(builtins=(), extra=list(plugins))
    return Vidax(settings, plugin_manager=pm, executor=executor)


@pytest.fixture
def pipe():
    return Pipeline()


@pytest.fixture
def vx(settings, pipe):
    v = make_vidax(settings, PhasePlugin(pipe.phases()))
    yield v
    v.close()


def manifest_of(vx, run_id) -> dict:
    return json.loads((vx.store.workdir(run_id) / "manifest.json").read_text())


def events_of(vx, run_id) -> list[dict]:
    return read_events(vx.store.workdir(run_id))


def names(events, kind) -> list:
    return [e.get("phase") for e in events if e["event"] == kind]


# --------------------------------------------------------------------------- order and skipping


def test_phases_run_in_order(vx, pipe):
    run_id = vx.create_run(simple_job())["run_id"]
    assert list(manifest_of(vx, run_id)["phases"]) == [
        "prepare", "comfyui", "middle", "stabilize", "lipsync", "late", "encode"]
    vx.start_run(run_id)
    assert pipe.ran() == ["prepare", "middle", "late", "encode"]
    st = vx.status(run_id)
    assert st["run_status"] == "completed" and st["exit_status"] == "success"
    assert st["final"] == str(vx.store.workdir(run_id) / "final.mp4")
    events = events_of(vx, run_id)
    assert names(events, "phase.started") == ["prepare", "middle", "late", "encode"]
    assert names(events, "phase.completed") == ["prepare", "middle", "late", "encode"]
    assert [e["event"] for e in events][:2] == ["run.created", "run.started"]
    assert events[-1]["event"] == "run.completed"
    assert events[-1]["data"]["exit_status"] == "success"


def test_later_phases_see_earlier_outputs(vx, pipe):
    run_id = vx.create_run(simple_job())["run_id"]
    vx.start_run(run_id)
    previous = {name: prev for kind, name, prev in pipe.log}
    assert previous["prepare"] == {}
    assert previous["encode"] == {"prepare": {"marker": "prepare/prepare.txt"},
                                  "middle": {"marker": "middle/middle.txt"},
                                  "late": {"marker": "late/late.txt"}}
    m = manifest_of(vx, run_id)
    assert m["phases"]["middle"]["outputs"] == {"marker": "middle/middle.txt"}
    assert m["outputs"]["final"] == str(vx.store.workdir(run_id) / "final.mp4")


def test_disabled_phases_are_skipped_with_events(settings):
    pipe = Pipeline(enabled=False)
    vx = make_vidax(settings, PhasePlugin(pipe.phases()))
    try:
        run_id = vx.create_run(simple_job())["run_id"]
        created = manifest_of(vx, run_id)["phases"]
        for name in ("comfyui", "middle", "stabilize", "lipsync"):
            assert created[name]["status"] == "skipped", name  # marked at creation
        assert created["prepare"]["status"] == created["encode"]["status"] == "queued"
        vx.start_run(run_id)
        assert pipe.ran() == ["prepare", "late", "encode"]
        phases = vx.status(run_id)["phases"]
        for name in ("comfyui", "middle", "stabilize", "lipsync"):
            assert phases[name]["status"] == "skipped"
            assert phases[name]["started_at"] is None
            assert phases[name]["finished_at"] is not None
        skipped = names(events_of(vx, run_id), "phase.skipped")
        assert skipped == ["comfyui", "middle", "stabilize", "lipsync"]  # in pipeline order, once each
        assert vx.status(run_id)["exit_status"] == "success"
    finally:
        vx.close()


# --------------------------------------------------------------------------- failure


def test_a_failing_phase_fails_the_run_and_later_phases_stay_queued(vx, pipe):
    pipe.behaviour["middle"] = PhaseFailed("the middle broke", code="COMFYUI_TIMEOUT")
    run_id = vx.create_run(simple_job())["run_id"]
    result = vx.start_run(run_id)
    assert result == {"ok": True, "run_id": run_id, "run_status": "running"}
    assert pipe.ran() == ["prepare", "middle"]
    st = vx.status(run_id)
    assert st["run_status"] == "failed" and st["exit_status"] == "failed"
    assert st["error"] == {"code": "COMFYUI_TIMEOUT", "message": "the middle broke"}
    assert st["final"] is None
    assert st["phases"]["prepare"]["status"] == "completed"
    assert st["phases"]["middle"]["status"] == "failed"
    assert st["phases"]["middle"]["error"] == {"code": "COMFYUI_TIMEOUT", "message": "the middle broke"}
    for name in ("late", "encode"):
        assert st["phases"][name]["status"] == "queued"
        assert st["phases"][name]["started_at"] is None
    m = manifest_of(vx, run_id)
    assert m["error"] == {"code": "COMFYUI_TIMEOUT", "message": "the middle broke"}
    assert m["outputs"]["final"] is None
    events = events_of(vx, run_id)
    assert names(events, "phase.failed") == ["middle"]
    failed = [e for e in events if e["event"] == "phase.failed"][0]
    assert failed["data"]["code"] == "COMFYUI_TIMEOUT"
    assert events[-1]["event"] == "run.failed"
    assert events[-1]["data"]["code"] == "COMFYUI_TIMEOUT"
    assert not (vx.store.workdir(run_id) / "final.mp4").exists()
    assert not vx.locks.held_here(run_id)


def test_passthrough_phase_fails_but_the_run_goes_on(settings):
    pipe = Pipeline(passthrough=True)
    pipe.behaviour["middle"] = PhaseFailed("no provider available", code="PHASE_FAILED")
    vx = make_vidax(settings, PhasePlugin(pipe.phases()))
    try:
        run_id = vx.create_run(simple_job())["run_id"]
        vx.start_run(run_id)
        assert pipe.ran() == ["prepare", "middle", "late", "encode"]
        st = vx.status(run_id)
        assert st["run_status"] == "completed" and st["exit_status"] == "success"
        assert st["error"] is None
        assert st["phases"]["middle"]["status"] == "failed"
        assert st["phases"]["middle"]["error"]["message"] == "no provider available"
        assert st["phases"]["encode"]["status"] == "completed"
        # the phase after a passthrough does not see the failed phase's outputs
        late_prev = [prev for kind, name, prev in pipe.log if name == "late"][0]
        assert "middle" not in late_prev
        events = [e["event"] for e in events_of(vx, run_id)]
        assert "phase.passthrough" in events
        assert events[-1] == "run.completed"
    finally:
        vx.close()


def test_unexpected_exception_is_internal_error_without_traceback(vx, pipe, caplog):
    pipe.behaviour["late"] = KeyError("sekrit-field")
    run_id = vx.create_run(simple_job())["run_id"]
    vx.start_run(run_id)
    st = vx.status(run_id)
    assert st["run_status"] == "failed"
    assert st["error"]["code"] == "INTERNAL_ERROR"
    assert st["phases"]["late"]["error"]["code"] == "INTERNAL_ERROR"
    assert st["phases"]["encode"]["status"] == "queued"
    wd = vx.store.workdir(run_id)
    for text in ((wd / "manifest.json").read_text(), (wd / "logs" / "events.jsonl").read_text()):
        assert "Traceback" not in text
        assert 'File "' not in text
        assert __file__ not in text
    # the traceback goes to the log
    assert any(r.exc_info for r in caplog.records)


def test_error_in_the_runner_itself_fails_the_run_and_frees_the_lock(vx, pipe, monkeypatch):
    real_emit = vx.store.emit

    def emit(run_id, event, **kw):
        if event == "phase.completed":
            raise OSError(28, "No space left on device")
        return real_emit(run_id, event, **kw)

    run_id = vx.create_run(simple_job())["run_id"]
    monkeypatch.setattr(vx.store, "emit", emit)
    vx.start_run(run_id)
    monkeypatch.undo()
    st = vx.status(run_id)
    assert st["run_status"] == "failed" and st["exit_status"] == "failed"
    assert st["error"]["code"] == "INTERNAL_ERROR"
    assert pipe.ran() == ["prepare"]
    assert "Traceback" not in (vx.store.workdir(run_id) / "manifest.json").read_text()
    assert events_of(vx, run_id)[-1]["event"] == "run.failed"
    assert not vx.locks.held_here(run_id)
    other = FileRunLocks(vx.store.runs_dir)
    assert other.acquire(run_id)
    other.release(run_id)


# --------------------------------------------------------------------------- resume


def test_resume_reruns_only_phases_not_completed(vx, pipe):
    pipe.behaviour["late"] = PhaseFailed("transient", code="PHASE_FAILED")
    run_id = vx.create_run(simple_job())["run_id"]
    vx.start_run(run_id)
    first = manifest_of(vx, run_id)
    assert first["run_status"] == "failed"
    assert first["attempt"] == 1 and first["resumed"] is False

    del pipe.behaviour["late"]
    pipe.log.clear()
    vx.start_run(run_id)
    assert pipe.ran() == ["late", "encode"]
    # the completed phases' outputs are handed on as they were
    late_prev = [prev for kind, name, prev in pipe.log if name == "late"][0]
    assert late_prev == {"prepare": {"marker": "prepare/prepare.txt"}, "middle": {"marker": "middle/middle.txt"}}

    m = manifest_of(vx, run_id)
    assert m["attempt"] == 2
    assert m["resumed"] is True
    assert m["run_status"] == "completed"
    assert m["exit_status"] == "partial"
    assert m["error"] is None
    for name in ("prepare", "middle"):
        assert m["phases"][name] == first["phases"][name]  # untouched, outputs kept
    assert m["phases"]["late"]["status"] == "completed" and m["phases"]["late"]["error"] is None

    events = events_of(vx, run_id)
    started = [e for e in events if e["event"] == "run.started"]
    assert [e["data"]["attempt"] for e in started] == [1, 2]
    resumed = [e for e in events if e["event"] == "run.resumed"]
    assert len(resumed) == 1
    assert resumed[0]["data"]["kept"] == ["prepare", "middle"]
    assert events[-1]["event"] == "run.completed" and events[-1]["data"]["exit_status"] == "partial"


def test_start_when_final_exists_is_refused_and_the_file_untouched(vx, pipe):
    run_id = vx.create_run(simple_job())["run_id"]
    vx.start_run(run_id)
    final = vx.store.workdir(run_id) / "final.mp4"
    before = (final.read_bytes(), final.stat().st_mtime_ns)
    manifest_before = manifest_of(vx, run_id)
    pipe.log.clear()
    with pytest.raises(OutputWriteFailed) as ei:
        vx.start_run(run_id)
    assert ei.value.code == "OUTPUT_WRITE_FAILED"
    assert (final.read_bytes(), final.stat().st_mtime_ns) == before
    assert pipe.ran() == []
    assert manifest_of(vx, run_id) == manifest_before
    assert not vx.locks.held_here(run_id)


def test_start_of_a_new_run_with_a_final_placed_by_hand_is_refused(vx, pipe):
    run_id = vx.create_run(simple_job())["run_id"]
    final = vx.store.workdir(run_id) / "final.mp4"
    final.write_bytes(b"precious")
    with pytest.raises(OutputWriteFailed):
        vx.start_run(run_id)
    assert final.read_bytes() == b"precious"
    assert manifest_of(vx, run_id)["run_status"] == "queued"


def test_start_while_another_owner_holds_the_lock(vx, pipe):
    run_id = vx.create_run(simple_job())["run_id"]
    other = FileRunLocks(vx.store.runs_dir)  # another worker process, as far as flock is concerned
    assert other.acquire(run_id)
    try:
        with pytest.raises(RunInProgress) as ei:
            vx.start_run(run_id)
        assert ei.value.code == "RUN_IN_PROGRESS"
        assert pipe.ran() == []
        m = manifest_of(vx, run_id)
        assert m["run_status"] == "queued" and m["attempt"] == 0
    finally:
        other.release(run_id)
    vx.start_run(run_id)
    assert vx.status(run_id)["exit_status"] == "success"


def test_start_while_running_in_the_thread_pool(settings):
    pipe = Pipeline()
    entered, release = threading.Event(), threading.Event()

    def block(ctx):
        entered.set()
        assert release.wait(30)

    pipe.behaviour["middle"] = block
    vx = make_vidax(settings, PhasePlugin(pipe.phases()), executor=None)
    try:
        run_id = vx.create_run(simple_job())["run_id"]
        assert vx.start_run(run_id)["run_status"] == "running"
        assert entered.wait(30)
        with pytest.raises(RunInProgress):
            vx.start_run(run_id)
        st = vx.status(run_id)  # a live run of this process is not taken for an interrupted one
        assert st["run_status"] == "running"
        assert st["phases"]["middle"]["status"] == "running"
        assert vx.recover_interrupted() == []
        release.set()
        st = wait_run(vx, run_id, timeout=30)
        assert st["exit_status"] == "success"
        assert pipe.ran() == ["prepare", "middle", "late", "encode"]
    finally:
        release.set()
        vx.close()


def test_start_unknown_run(vx):
    with pytest.raises(RunNotFound):
        vx.start_run("20260101T000000Z-0000000000")
    with pytest.raises(RunNotFound):
        vx.start_run("../../etc")


# --------------------------------------------------------------------------- interrupted runs


def leave_running(vx, run_id):
    """Make the manifest look like a process died while running ``middle``."""
    m = vx.store.load_manifest(run_id)
    m.run_status = "running"
    m.attempt = 1
    m.phases["prepare"].status = "completed"
    m.phases["prepare"].started_at = m.phases["prepare"].finished_at = vx.store.now()
    m.phases["prepare"].outputs = {"marker": "prepare/prepare.txt"}
    m.phases["middle"].status = "running"
    m.phases["middle"].started_at = vx.store.now()
    vx.store.save_manifest(m)


def test_ownerless_running_run_is_marked_interrupted_when_read(vx, pipe):
    run_id = vx.create_run(simple_job())["run_id"]
    leave_running(vx, run_id)
    st = vx.status(run_id)
    assert st["run_status"] == "failed"
    assert st["exit_status"] == "failed"
    assert st["error"]["code"] == "RUN_INTERRUPTED"
    assert st["phases"]["middle"]["status"] == "failed"
    assert st["phases"]["middle"]["error"]["code"] == "RUN_INTERRUPTED"
    assert st["phases"]["prepare"]["status"] == "completed"
    assert manifest_of(vx, run_id)["error"]["code"] == "RUN_INTERRUPTED"  # recorded, not only shown
    last = events_of(vx, run_id)[-1]
    assert last["event"] == "run.failed" and last["data"]["code"] == "RUN_INTERRUPTED"
    assert not vx.locks.held_here(run_id)

    vx.start_run(run_id)
    assert pipe.ran() == ["middle", "late", "encode"]
    st = vx.status(run_id)
    assert st["run_status"] == "completed" and st["exit_status"] == "partial"
    assert st["attempt"] == 2 and st["resumed"] is True


def test_recover_interrupted_marks_only_runs_without_an_owner(vx, pipe):
    orphan = vx.create_run(simple_job())["run_id"]
    owned = vx.create_run(simple_job())["run_id"]
    queued = vx.create_run(simple_job())["run_id"]
    leave_running(vx, orphan)
    leave_running(vx, owned)
    other = FileRunLocks(vx.store.runs_dir)
    assert other.acquire(owned)
    try:
        assert vx.recover_interrupted() == [orphan]
        assert manifest_of(vx, orphan)["run_status"] == "failed"
        assert manifest_of(vx, orphan)["error"]["code"] == "RUN_INTERRUPTED"
        assert manifest_of(vx, owned)["run_status"] == "running"
        assert vx.status(owned)["run_status"] == "running"  # its owner is alive
        assert manifest_of(vx, queued)["run_status"] == "queued"
        assert vx.recover_interrupted() == []  # nothing left to recover
    finally:
        other.release(owned)
    vx.start_run(orphan)
    assert vx.status(orphan)["exit_status"] == "partial"


def test_start_of_an_ownerless_running_run_resumes_it(vx, pipe):
    run_id = vx.create_run(simple_job())["run_id"]
    leave_running(vx, run_id)
    vx.start_run(run_id)  # no status() call first: start itself notices the dead owner
    assert pipe.ran() == ["middle", "late", "encode"]
    events = [e["event"] for e in events_of(vx, run_id)]
    assert "run.resumed" in events
    assert vx.status(run_id)["exit_status"] == "partial"


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from vidax_core import BasePhase, Vidax, hookimpl
    from vidax_core.config import load_settings
    from vidax_core.plugins import get_plugin_manager

    run_id, marker = sys.argv[1], Path(sys.argv[2])

    class Phase(BasePhase):
        def __init__(self, name, order, block=False):
            self.name, self.order, self.block = name, order, block
        def enabled(self, job):
            return True
        def run(self, ctx):
            if self.block:
                marker.write_text("running")
                time.sleep(120)
            return {}

    class Plugin:
        __name__ = "child_phases"
        @hookimpl
        def register_phases(self, register):
            for p in (Phase("prepare", 100), Phase("middle", 250, block=True), Phase("late", 450),
                      Phase("encode", 500)):
                register(p)

    pm = get_plugin_manager(builtins=(), entry_points=False, extra=[Plugin()])
    Vidax(load_settings(), plugin_manager=pm, executor="inline").start_run(run_id)
""")


def test_run_of_a_killed_process_is_interrupted_and_resumable(vx, pipe, settings, tmp_path):
    run_id = vx.create_run(simple_job())["run_id"]
    marker = tmp_path / "child-running"
    env = {**os.environ, "VIDAX_RUNS_DIR": str(settings.runs_dir),
           "VIDAX_INPUT_ROOTS": ":".join(str(r) for r in settings.input_roots),
           "VIDAX_CONFIG": "", "VIDAX_DISABLED_PLUGINS": ""}
    child = subprocess.Popen([sys.executable, "-c", CHILD, run_id, str(marker)], env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never reached its phase"
            time.sleep(0.02)
        st = vx.status(run_id)
        assert st["run_status"] == "running"  # the owner is alive: not interrupted
        assert st["phases"]["middle"]["status"] == "running"
        with pytest.raises(RunInProgress):
            vx.start_run(run_id)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        child.stderr.close()

    st = vx.status(run_id)
    assert st["run_status"] == "failed"
    assert st["error"]["code"] == "RUN_INTERRUPTED"
    assert st["phases"]["prepare"]["status"] == "completed"
    vx.start_run(run_id)
    assert pipe.ran() == ["middle", "late", "encode"]
    st = vx.status(run_id)
    assert st["run_status"] == "completed" and st["exit_status"] == "partial"
    assert st["attempt"] == 2


# --------------------------------------------------------------------------- before_phase / after_phase


class HookRecorder:
    __name__ = "hook_recorder"

    def __init__(self, store_dir):
        self.calls = []
        self.store_dir = store_dir

    @hookimpl
    def before_phase(self, ctx, phase):
        status = json.loads((ctx.workdir / "manifest.json").read_text())["phases"][phase.name]["status"]
        self.calls.append(("before", phase.name, ctx.phase, status))

    @hookimpl
    def after_phase(self, ctx, phase, state):
        on_disk = json.loads((ctx.workdir / "manifest.json").read_text())["phases"][phase.name]["status"]
        self.calls.append(("after", phase.name, state.status, on_disk))


def test_before_and_after_phase_hooks_fire_once_per_phase_in_order(settings):
    pipe = Pipeline()
    pipe.behaviour["late"] = PhaseFailed("nope")
    recorder = HookRecorder(settings.runs_dir)
    vx = make_vidax(settings, PhasePlugin(pipe.phases()), recorder)
    try:
        run_id = vx.create_run(simple_job())["run_id"]
        vx.start_run(run_id)
    finally:
        vx.close()
    assert recorder.calls == [
        ("before", "prepare", "prepare", "running"), ("after", "prepare", "completed", "completed"),
        ("before", "middle", "middle", "running"), ("after", "middle", "completed", "completed"),
        ("before", "late", "late", "running"), ("after", "late", "failed", "failed"),
    ]


def test_a_raising_after_phase_hook_does_not_change_the_outcome(settings):
    pipe = Pipeline()

    class Broken:
        __name__ = "broken_after"

        @hookimpl
        def after_phase(self, ctx, phase, state):
            raise RuntimeError("metrics backend down")

    vx = make_vidax(settings, PhasePlugin(pipe.phases()), Broken())
    try:
        run_id = vx.create_run(simple_job())["run_id"]
        vx.start_run(run_id)
        assert vx.status(run_id)["exit_status"] == "success"
    finally:
        vx.close()


def test_a_raising_before_phase_hook_fails_that_phase(settings):
    pipe = Pipeline()

    class Veto:
        __name__ = "veto"

        @hookimpl
        def before_phase(self, ctx, phase):
            if phase.name == "middle":
                raise PhaseFailed("vetoed", code="VALIDATION_ERROR")

    vx = make_vidax(settings, PhasePlugin(pipe.phases()), Veto())
    try:
        run_id = vx.create_run(simple_job())["run_id"]
        vx.start_run(run_id)
        st = vx.status(run_id)
        assert pipe.ran() == ["prepare"]
        assert st["phases"]["middle"]["status"] == "failed"
        assert st["error"] == {"code": "VALIDATION_ERROR", "message": "vetoed"}
    finally:
        vx.close()


# --------------------------------------------------------------------------- the real prepare / encode path


def finished(vx, job) -> dict:
    run_id = vx.create_run(job)["run_id"]
    vx.start_run(run_id)
    st = vx.status(run_id)
    assert st["run_status"] == "completed" and st["exit_status"] == "success", st
    return st


def test_real_image_and_audio(inline_vidax):
    st = finished(inline_vidax, simple_job(fps=20))
    assert_final_mp4(st["final"], 3.0, fps=20)
    assert [st["phases"][n]["status"] for n in ("prepare", "comfyui", "stabilize", "lipsync", "encode")] == [
        "completed", "skipped", "skipped", "skipped", "completed"]
    wd = Path(st["workdir"])
    assert (wd / "inputs" / "image.png").is_file()
    assert st["phases"]["encode"]["outputs"]["source"] == "prepare/source.mp4"
    assert not [n for n in os.listdir(wd) if n.startswith(".final")]  # no temp file beside final.mp4


def test_real_odd_sized_image_and_stereo_audio(inline_vidax, media):
    st = finished(inline_vidax, simple_job(audio=media.stereo_wav.name, image=media.odd_png.name))
    info = assert_final_mp4(st["final"], 3.0, fps=25)
    assert info.width % 2 == 0 and info.height % 2 == 0
    assert abs(info.width - 255) <= 1 and abs(info.height - 251) <= 1


def test_real_video_and_audio(inline_vidax, media):
    st = finished(inline_vidax, simple_job(image=None, video=media.mp4.name, fps=25))
    assert_final_mp4(st["final"], 3.0, fps=25)
    assert st["phases"]["prepare"]["outputs"]["input_video"] == "inputs/video.mp4"


def test_real_short_video_is_held_to_the_audio_length(inline_vidax, media):
    assert probe(media.short_mp4).duration < 2.0
    st = finished(inline_vidax, simple_job(image=None, video=media.short_mp4.name))
    assert_final_mp4(st["final"], 3.0, fps=25)


def test_real_non_mp4_video_is_transcoded(inline_vidax, media):
    st = finished(inline_vidax, simple_job(image=None, video=media.webm.name, fps=24))
    assert_final_mp4(st["final"], 3.0, fps=24)
    src = probe(Path(st["workdir"]) / "prepare" / "source.mp4")
    assert src.vcodec == "h264"


def test_real_mp3_is_normalized_to_wav_under_inputs(inline_vidax, media):
    st = finished(inline_vidax, simple_job(audio=media.mp3.name))
    wd = Path(st["workdir"])
    assert st["phases"]["prepare"]["outputs"]["audio"] == "inputs/audio.wav"
    info = probe(wd / "inputs" / "audio.wav")
    assert info.format == "wav" and info.acodec == "pcm_s16le" and not info.has_video
    assert abs(info.duration - 3.0) < 0.1
    assert not list((wd / "inputs").glob("*.mp3"))
    assert_final_mp4(st["final"], st["phases"]["prepare"]["outputs"]["audio_duration"])


def test_real_run_with_a_third_party_phase_between_builtins(settings, media):
    """A plugin phase placed by ``order`` between the builtins gets the best video and hands its own on."""
    seen = {}

    class Tint(BasePhase):
        name = "tint"
        order = 450

        def enabled(self, job):
            return True

        def run(self, ctx):
            src = ctx.input_video()
            seen["input"] = ctx.relative(src)
            out = ctx.output()
            out.write_bytes(src.read_bytes())
            return {"video": ctx.relative(out)}

    pm = get_plugin_manager(extra=[PhasePlugin([Tint()])])
    vx = Vidax(settings, plugin_manager=pm, executor="inline")
    try:
        st = finished(vx, simple_job())
    finally:
        vx.close()
    assert seen["input"] == "prepare/source.mp4"
    assert st["phases"]["encode"]["outputs"]["source"] == "tint/output.mp4"
    assert_final_mp4(st["final"], 3.0)


def test_deleted_outputs_are_made_again_on_the_next_start(inline_vidax, media):
    """A completed run whose final.mp4 was deleted (to re-encode it) runs encode again; a phase whose output
    was deleted runs again with every phase after it, the phases before keep theirs."""
    created = inline_vidax.create_run(simple_job(fps=20))
    rid = created["run_id"]
    inline_vidax.start_run(rid)
    wd = Path(created["workdir"])
    wav = wd / "inputs" / "audio.wav"
    kept = (wav.stat().st_mtime_ns, wav.stat().st_size)

    (wd / "final.mp4").unlink()
    inline_vidax.start_run(rid)
    st = inline_vidax.status(rid)
    assert st["run_status"] == "completed" and st["exit_status"] == "partial", st
    assert_final_mp4(wd / "final.mp4", 3.0, fps=20)
    assert (wav.stat().st_mtime_ns, wav.stat().st_size) == kept, "prepare ran again although its files were there"
    lost = [e for e in read_events(wd) if e["event"] == "phase.outputs_lost"]
    assert [e["data"]["rerun"] for e in lost] == [["encode"]], lost

    (wd / "final.mp4").unlink()
    (wd / "prepare" / "source.mp4").unlink()
    inline_vidax.start_run(rid)
    st = inline_vidax.status(rid)
    assert st["run_status"] == "completed", st
    assert (wd / "prepare" / "source.mp4").is_file() and (wd / "final.mp4").is_file()
    lost = [e for e in read_events(wd) if e["event"] == "phase.outputs_lost"]
    assert lost[-1]["data"]["rerun"] == ["prepare", "encode"], lost
