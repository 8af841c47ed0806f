"""End-to-end: the whole pipeline (prepare → comfyui → stabilize → lipsync → encode) through real gunicorn.

A real ``vidax serve`` (gunicorn, 2 workers) on loopback talks over HTTP to the fake ComfyUI (in a thread of
this process, on its own loopback port); the lip-sync provider is a ``command`` provider running the real
``tests/lipsync_tool.py`` with ``sys.executable``; stabilize and encode run the real ffmpeg. One server (and one
fake ComfyUI) serves the whole module; the stabilize-passthrough test adds a second server whose ``ffmpeg`` is
a wrapper that fails on ``vidstabdetect``.

Media are kept small (128x128, 3 s, preset ultrafast) so the module stays fast on two cores.
"""

from __future__ import annotations

import hashlib
import json
import stat
import sys
from datetime import datetime
from pathlib import Path

import pytest
from conftest import AUDIO_SECONDS
from e2e_server import VidaxServer
from fake_comfyui import FakeComfyUI
from helpers import assert_final_mp4
from helpers import mean_rgb
from helpers import read_events

from vidax_core.media import ffmpeg_exe
from vidax_core.media import probe

pytestmark = pytest.mark.e2e

TOOL = Path(__file__).resolve().parent / "lipsync_tool.py"
PHASES = ["prepare", "comfyui", "stabilize", "lipsync", "encode"]
BOX = "0xff00ff"  # the lip-sync tool's box: magenta, far from every hue of the (blue) face the fake turns
BOX_RGB = (255, 0, 255)
TOOL_FAILURE = "lipsync_tool: model weights do not match (e2e)"
COMFY_FAILURE = "CUDA out of memory (e2e fake)"
NEED = "checkpoints/resume-model.txt"
SEED = 7
VIDEO_FPS = 10  # what ComfyUI makes ...
ENCODE_FPS = 20  # ... and what final.mp4 must have


# --------------------------------------------------------------------------- workflows and providers


WORKFLOW_VIDEO = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "{{inputs.image}}"}},
    "2": {"class_type": "VidaxTestVideo", "inputs": {
        "image": ["1", 0], "frames": int(AUDIO_SECONDS * VIDEO_FPS), "width": 128, "height": 128,
        "fps": float(VIDEO_FPS), "format": "mp4", "filename_prefix": "vidax/e2e_video_{{seed}}", "seed": "{{seed}}"}},
}

FRAMES_COUNT = 45
FRAMES_FPS = 15  # 45 frames at encode.fps 15 = the 3 s of the audio
WORKFLOW_FRAMES = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "{{inputs.image}}"}},
    "2": {"class_type": "VidaxTestFrames", "inputs": {
        "image": ["1", 0], "count": FRAMES_COUNT, "width": 128, "height": 128, "seed": "{{seed}}"}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "vidax/e2e_frames_{{seed}}"}},
}

WORKFLOW_FAIL = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "{{inputs.image}}"}},
    "2": {"class_type": "VidaxTestFail", "inputs": {
        "message": COMFY_FAILURE, "exception_type": "torch.OutOfMemoryError", "anything": ["1", 0]}},
}


def tool_entry(tool_dir: Path, *args: str) -> dict:
    command = [sys.executable, str(TOOL), "--face", "{video}", "--audio", "{audio}", "--outfile", "{output}",
               "--color", BOX, *args]
    return {"type": "command", "command": command, "cwd": str(tool_dir), "timeout_s": 60}


def providers(tool_dir: Path) -> dict:
    return {"providers": {
        "boxsync": tool_entry(tool_dir),
        "broken": tool_entry(tool_dir, "--fail-code", "9", "--message", TOOL_FAILURE),
        "needy": tool_entry(tool_dir, "--need", NEED),
    }}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def fake():
    fc = FakeComfyUI().start_in_thread()
    try:
        yield fc
    finally:
        fc.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """The workflow files (an input root of the servers) and the lip-sync tool's folder (``tool/``)."""
    d = tmp_path_factory.mktemp("pipeline-files")
    for name, wf in (("video", WORKFLOW_VIDEO), ("frames", WORKFLOW_FRAMES), ("fail", WORKFLOW_FAIL)):
        (d / f"{name}.json").write_text(json.dumps(wf, indent=2))
    (d / "tool" / "checkpoints").mkdir(parents=True)
    return d


def make_server(base: Path, media, files: Path, fake: FakeComfyUI, **config) -> VidaxServer:
    """A VidaxServer whose config names the fake ComfyUI and whose providers file holds :func:`providers`."""
    srv = VidaxServer(base, [media.dir, files], workers=2, threads=4,
                      config={"comfyui": {"url": fake.url, "auto_start": False}, **config})
    (srv.config_path.parent / "lipsync.providers.json").write_text(json.dumps(providers(files / "tool"), indent=2))
    try:
        return srv.start()
    except BaseException:
        srv.close()
        raise


@pytest.fixture(scope="module")
def api(tmp_path_factory, media, files, fake):
    srv = make_server(tmp_path_factory.mktemp("pipeline-api"), media, files, fake)
    try:
        yield srv
    finally:
        srv.close()


# --------------------------------------------------------------------------- helpers


def job(files: Path, workflow: str = "video", *, stabilize=None, lipsync=None, fps: int = ENCODE_FPS) -> dict:
    return {
        "inputs": {"audio": "voice.wav", "image": "face.png"},
        "comfyui": {"workflow": str(files / f"{workflow}.json"), "params": {"seed": SEED}, "timeout_s": 60},
        "stabilize": stabilize if stabilize is not None else {"method": "vidstab", "smoothing": 5},
        "lipsync": lipsync if lipsync is not None else {"provider": "boxsync", "allow_passthrough": False},
        "encode": {"fps": fps, "crf": 23, "preset": "ultrafast", "audio_bitrate": "96k"},
        "metadata": {"test": "pipeline-e2e"},
    }


def create(srv: VidaxServer, body: dict) -> dict:
    r = srv.post("/jobs", body)
    assert r.status_code == 202, f"{r.status_code} {r.text}\n{srv.log_tail()}"
    return r.json()


def start(srv: VidaxServer, run_id: str) -> dict:
    r = srv.post(f"/jobs/{run_id}/start")
    assert r.status_code == 202, f"{r.status_code} {r.text}\n{srv.log_tail()}"
    body = r.json()
    assert body["ok"] is True and body["run_id"] == run_id and body["run_status"] == "running", body
    return body


def run(srv: VidaxServer, body: dict) -> dict:
    run_id = create(srv, body)["run_id"]
    start(srv, run_id)
    return srv.wait_run(run_id, timeout=60)


def manifest(srv: VidaxServer, run_id: str) -> dict:
    r = srv.get(f"/jobs/{run_id}/manifest")
    assert r.status_code == 200, r.text
    return r.json()


def events(srv: VidaxServer, run_id: str) -> list[dict]:
    r = srv.get(f"/jobs/{run_id}/logs")
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines() if line]


def of_kind(evs: list[dict], kind: str) -> list[str]:
    return [e.get("phase") for e in evs if e["event"] == kind]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def close_to(rgb, expected, tol: float = 40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(rgb, expected, strict=True))


def assert_shows_box(path) -> None:
    rgb = mean_rgb(path)
    assert close_to(rgb, BOX_RGB), f"{path}: {rgb} is not the lip-sync tool's box {BOX_RGB}"


def assert_no_box(path) -> None:
    rgb = mean_rgb(path)
    assert not close_to(rgb, BOX_RGB, tol=80), f"{path}: {rgb} shows the lip-sync tool's box"


def where(srv: VidaxServer, st: dict) -> str:
    return f"{json.dumps(st, indent=1)}\n{srv.log_tail()}"


def lipsync_input(evs: list[dict]) -> str:
    """The video the lip-sync provider was given (workdir-relative), from its ``lipsync.running`` event."""
    (running,) = [e for e in evs if e["event"] == "lipsync.running"]
    return running["data"]["video"]


def assert_timestamps(st: dict) -> None:
    """Phases that ran carry start and end times in order; queued ones carry none."""
    for name, p in st["phases"].items():
        if p["status"] in ("completed", "failed"):
            started, finished = (datetime.fromisoformat(p[k].replace("Z", "+00:00"))
                                 for k in ("started_at", "finished_at"))
            assert started <= finished, (name, p)
        elif p["status"] == "queued":
            assert p["started_at"] is None and p["finished_at"] is None, (name, p)
    assert st["created_at"] <= st["updated_at"]


class Sent:
    """What the (module-shared) fake ComfyUI receives from now on."""

    def __init__(self, fake: FakeComfyUI):
        self.fake, self.posted, self.uploads = fake, len(fake.posted), len(fake.uploads)

    def prompts(self) -> list:
        return self.fake.posted[self.posted:]

    def uploaded(self) -> list:
        return self.fake.uploads[self.uploads:]


# --------------------------------------------------------------------------- 1. the whole pipeline


def test_whole_pipeline_comfyui_stabilize_lipsync_encode(api, fake, media, files):
    sent = Sent(fake)
    created = create(api, job(files))
    run_id, workdir = created["run_id"], Path(created["workdir"])
    assert created["status"] == "queued" and Path(created["manifest"]) == workdir / "manifest.json"
    start(api, run_id)
    st = api.wait_run(run_id, timeout=60)

    assert (st["run_status"], st["exit_status"]) == ("completed", "success"), where(api, st)
    assert {name: p["status"] for name, p in st["phases"].items()} == dict.fromkeys(PHASES, "completed")
    assert st["error"] is None
    for rel in ("comfyui/output.mp4", "stabilize/output.mp4", "lipsync/output.mp4", "final.mp4"):
        assert (workdir / rel).is_file(), rel
    assert st["final"] == str(workdir / "final.mp4")
    assert_timestamps(st)

    # final.mp4: H.264 yuv420p + AAC, faststart, the audio's 3.0 s, encode.fps; made from the lip-synced video
    assert probe(workdir / "comfyui" / "output.mp4").fps == pytest.approx(VIDEO_FPS, abs=0.01)
    assert_final_mp4(workdir / "final.mp4", AUDIO_SECONDS, fps=ENCODE_FPS, tol=0.1)
    assert_shows_box(workdir / "lipsync" / "output.mp4")
    assert_shows_box(workdir / "final.mp4")
    assert_no_box(workdir / "stabilize" / "output.mp4")  # the box is the tool's doing, not the source's

    m = manifest(api, run_id)
    assert list(m["phases"]) == PHASES
    assert m["phases"]["lipsync"]["provider"] == "boxsync"
    assert m["phases"]["lipsync"]["outputs"]["video"] == "lipsync/output.mp4"
    assert m["phases"]["stabilize"]["outputs"]["video"] == "stabilize/output.mp4"
    assert m["phases"]["encode"]["outputs"]["source"] == "lipsync/output.mp4"
    assert m["outputs"]["final"] == str(workdir / "final.mp4")
    assert (m["exit_status"], m["attempt"], m["resumed"]) == ("success", 1, False)

    evs = events(api, run_id)
    assert evs == read_events(workdir)  # GET /logs is the file
    assert of_kind(evs, "phase.started") == PHASES
    assert of_kind(evs, "phase.completed") == PHASES
    assert [e["event"] for e in evs if e["event"].startswith("run.")] == ["run.created", "run.started",
                                                                           "run.completed"]
    assert not of_kind(evs, "phase.failed")
    assert all(e["run_id"] == run_id and e["ts"].endswith("Z") and datetime.fromisoformat(e["ts"][:-1] + "+00:00")
               for e in evs)
    assert lipsync_input(evs) == "stabilize/output.mp4"  # the chain: comfyui -> stabilize -> lipsync -> encode

    # the fake ComfyUI: one prompt, the uploaded image bound into it, the seed param with its JSON type
    (prompt,) = sent.prompts()
    (upload,) = sent.uploaded()
    assert prompt["extra_data"].get("vidax_run_id") == run_id
    assert upload.data == media.png.read_bytes()
    assert prompt["prompt"]["1"]["inputs"]["image"] == f"{upload.subfolder}/{upload.name}"
    assert prompt["prompt"]["2"]["inputs"]["seed"] == SEED and type(prompt["prompt"]["2"]["inputs"]["seed"]) is int
    assert prompt["prompt"]["2"]["inputs"]["filename_prefix"] == f"vidax/e2e_video_{SEED}"
    assert [a["extra_data"].get("vidax_run_id") for a in fake.accepted].count(run_id) == 1

    # a run with a final.mp4 is never run again
    r = api.post(f"/jobs/{run_id}/start")
    assert r.status_code == 409 and r.json()["error"]["code"] == "OUTPUT_WRITE_FAILED", r.text


# --------------------------------------------------------------------------- 2. PNG frames


def test_png_frames_without_stabilize_are_lipsynced_and_encoded_at_encode_fps(api, fake, files):
    sent = Sent(fake)
    st = run(api, job(files, "frames", stabilize={"enable": False}, fps=FRAMES_FPS))
    run_id, workdir = st["run_id"], Path(st["workdir"])
    assert (st["run_status"], st["exit_status"]) == ("completed", "success"), where(api, st)
    assert {n: p["status"] for n, p in st["phases"].items()} == {
        "prepare": "completed", "comfyui": "completed", "stabilize": "skipped", "lipsync": "completed",
        "encode": "completed"}

    outputs = st["phases"]["comfyui"]["outputs"]
    assert outputs["frames"] == "frames/%06d.png" and outputs["count"] == FRAMES_COUNT
    assert sorted(p.name for p in (workdir / "frames").iterdir()) == [
        f"{n:06d}.png" for n in range(1, FRAMES_COUNT + 1)]
    assert not (workdir / "comfyui" / "output.mp4").exists()
    assert not (workdir / "stabilize" / "output.mp4").exists()
    lip_out = probe(workdir / "lipsync" / "output.mp4")  # the frames, as a video at encode.fps, lip-synced
    assert lip_out.fps == pytest.approx(FRAMES_FPS, abs=0.01) and lip_out.duration == pytest.approx(3.0, abs=0.1)

    assert_final_mp4(workdir / "final.mp4", AUDIO_SECONDS, fps=FRAMES_FPS)
    assert_shows_box(workdir / "final.mp4")
    assert st["phases"]["encode"]["outputs"]["source"] == "lipsync/output.mp4"
    evs = events(api, run_id)
    assert of_kind(evs, "phase.skipped") == ["stabilize"]
    assert of_kind(evs, "phase.started") == ["prepare", "comfyui", "lipsync", "encode"]
    assert of_kind(evs, "phase.completed") == ["prepare", "comfyui", "lipsync", "encode"]
    assert [p["prompt"]["2"]["class_type"] for p in sent.prompts()] == ["VidaxTestFrames"]
    assert len(sent.uploaded()) == 1


# --------------------------------------------------------------------------- 3. lip-sync passthrough


def test_failing_lipsync_with_passthrough_encodes_the_stabilized_video(api, files):
    st = run(api, job(files, lipsync={"provider": "broken", "allow_passthrough": True}))
    run_id, workdir = st["run_id"], Path(st["workdir"])
    assert (st["run_status"], st["exit_status"]) == ("completed", "success"), where(api, st)
    lip = st["phases"]["lipsync"]
    assert lip["status"] == "failed"
    assert lip["error"]["code"] == "LIPSYNC_FAILED", lip
    assert TOOL_FAILURE in lip["error"]["message"] and "9" in lip["error"]["message"], lip
    for name in ("prepare", "comfyui", "stabilize", "encode"):
        assert st["phases"][name]["status"] == "completed", name
    assert st["error"] is None
    assert_timestamps(st)

    assert not (workdir / "lipsync" / "output.mp4").exists()
    assert st["phases"]["encode"]["outputs"]["source"] == "stabilize/output.mp4"
    assert_final_mp4(workdir / "final.mp4", AUDIO_SECONDS, fps=ENCODE_FPS)
    assert_no_box(workdir / "final.mp4")
    assert close_to(mean_rgb(workdir / "final.mp4"), mean_rgb(workdir / "stabilize" / "output.mp4"), tol=30)

    m = manifest(api, run_id)
    assert m["phases"]["lipsync"]["provider"] == "broken"
    evs = events(api, run_id)
    assert of_kind(evs, "phase.failed") == ["lipsync"]
    assert "lipsync" in of_kind(evs, "phase.passthrough")
    assert of_kind(evs, "phase.completed") == ["prepare", "comfyui", "stabilize", "encode"]
    assert "run.completed" in [e["event"] for e in evs] and "run.failed" not in [e["event"] for e in evs]


def test_failing_lipsync_without_passthrough_fails_the_run(api, files):
    st = run(api, job(files, lipsync={"provider": "broken", "allow_passthrough": False}))
    run_id, workdir = st["run_id"], Path(st["workdir"])
    assert (st["run_status"], st["exit_status"]) == ("failed", "failed"), where(api, st)
    assert {n: p["status"] for n, p in st["phases"].items()} == {
        "prepare": "completed", "comfyui": "completed", "stabilize": "completed", "lipsync": "failed",
        "encode": "queued"}
    assert st["phases"]["lipsync"]["error"]["code"] == "LIPSYNC_FAILED"
    assert TOOL_FAILURE in st["phases"]["lipsync"]["error"]["message"]
    assert st["error"]["code"] == "LIPSYNC_FAILED"
    assert st["final"] is None and not (workdir / "final.mp4").exists()
    assert not list(workdir.glob("*.mp4"))
    assert_timestamps(st)

    evs = events(api, run_id)
    assert of_kind(evs, "phase.failed") == ["lipsync"]
    assert "encode" not in of_kind(evs, "phase.started")
    run_events = [e for e in evs if e["event"] in ("run.completed", "run.failed")]
    assert [e["event"] for e in run_events] == ["run.failed"]
    assert manifest(api, run_id)["outputs"]["final"] is None


# --------------------------------------------------------------------------- 4. ComfyUI node error


def test_comfyui_node_error_fails_the_run_with_comfyuis_message(api, fake, files):
    sent = Sent(fake)
    st = run(api, job(files, "fail"))
    run_id, workdir = st["run_id"], Path(st["workdir"])
    assert (st["run_status"], st["exit_status"]) == ("failed", "failed"), where(api, st)
    comfy = st["phases"]["comfyui"]
    assert comfy["status"] == "failed"
    assert comfy["error"]["code"] == "COMFYUI_EXECUTION_ERROR", comfy
    assert "VidaxTestFail" in comfy["error"]["message"]
    assert f"torch.OutOfMemoryError: {COMFY_FAILURE}" in comfy["error"]["message"], comfy
    assert st["error"]["code"] == "COMFYUI_EXECUTION_ERROR"
    assert st["phases"]["prepare"]["status"] == "completed"
    for name in ("stabilize", "lipsync", "encode"):
        assert st["phases"][name]["status"] == "queued", name
    assert st["final"] is None and not (workdir / "final.mp4").exists()
    assert not (workdir / "comfyui" / "output.mp4").exists()

    evs = events(api, run_id)
    assert of_kind(evs, "phase.started") == ["prepare", "comfyui"]
    assert of_kind(evs, "phase.failed") == ["comfyui"]
    assert "run.failed" in [e["event"] for e in evs]
    assert [p["extra_data"].get("vidax_run_id") for p in sent.prompts()] == [run_id]
    assert_timestamps(st)


# --------------------------------------------------------------------------- 5. resume


def test_resume_after_a_failed_lipsync_reruns_only_lipsync_and_encode(api, fake, files):
    needed = files / "tool" / NEED
    assert not needed.exists()
    sent = Sent(fake)
    run_id = create(api, job(files, lipsync={"provider": "needy", "allow_passthrough": False}))["run_id"]
    start(api, run_id)
    first = api.wait_run(run_id)
    workdir = Path(first["workdir"])
    assert (first["run_status"], first["exit_status"]) == ("failed", "failed"), where(api, first)
    assert first["phases"]["lipsync"]["status"] == "failed"
    assert first["phases"]["lipsync"]["error"]["code"] == "LIPSYNC_FAILED"
    assert NEED in first["phases"]["lipsync"]["error"]["message"]
    assert first["phases"]["encode"]["status"] == "queued" and not (workdir / "final.mp4").exists()

    comfy_out = workdir / "comfyui" / "output.mp4"
    stab_out = workdir / "stabilize" / "output.mp4"
    before = {p: (sha256(p), p.stat().st_mtime_ns) for p in (comfy_out, stab_out)}
    n_events = len(events(api, run_id))

    needed.write_text("weights for the resumed run\n")  # fix the cause
    try:
        r = api.post(f"/jobs/{run_id}/start")
        assert r.status_code == 202, f"{r.status_code} {r.text}"
        assert r.json()["run_status"] == "running"
        second = api.wait_run(run_id)
    finally:
        needed.unlink()

    assert (second["run_status"], second["exit_status"]) == ("completed", "partial"), where(api, second)
    assert second["resumed"] is True and second["attempt"] == 2
    assert {n: p["status"] for n, p in second["phases"].items()} == dict.fromkeys(PHASES, "completed")
    for name in ("prepare", "comfyui", "stabilize"):
        assert second["phases"][name]["started_at"] == first["phases"][name]["started_at"], name

    after = {p: (sha256(p), p.stat().st_mtime_ns) for p in (comfy_out, stab_out)}
    assert after == before, "the completed phases' outputs were rewritten"
    assert len(sent.prompts()) == 1 and len(sent.uploaded()) == 1  # in total, over both attempts

    m = manifest(api, run_id)
    assert (m["attempt"], m["resumed"], m["exit_status"]) == (2, True, "partial")
    assert m["phases"]["encode"]["outputs"]["source"] == "lipsync/output.mp4"
    assert_final_mp4(workdir / "final.mp4", AUDIO_SECONDS, fps=ENCODE_FPS)
    assert_shows_box(workdir / "final.mp4")

    later = events(api, run_id)[n_events:]
    assert of_kind(later, "phase.started") == ["lipsync", "encode"]
    assert of_kind(later, "phase.completed") == ["lipsync", "encode"]
    kinds = [e["event"] for e in later]
    assert "run.resumed" in kinds and kinds[-1] == "run.completed"
    assert_timestamps(second)


# --------------------------------------------------------------------------- 6. stabilize passthrough


@pytest.fixture(scope="module")
def failing_vidstab_api(tmp_path_factory, media, files, fake):
    """A second server whose ffmpeg fails on ``vidstabdetect`` and is the real one for everything else."""
    base = tmp_path_factory.mktemp("pipeline-vidstab")
    wrapper = base / "ffmpeg-wrapper.sh"
    wrapper.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        '  *vidstabdetect*) echo "vidstabdetect: simulated failure (e2e)" >&2; exit 1;;\n'
        "esac\n"
        f'exec "{ffmpeg_exe()}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    srv = make_server(base / "server", media, files, fake, ffmpeg=str(wrapper))
    try:
        yield srv
    finally:
        srv.close()


def test_failing_stabilize_with_passthrough_goes_on_with_the_comfyui_video(failing_vidstab_api, files):
    srv = failing_vidstab_api
    st = run(srv, job(files, stabilize={"method": "vidstab", "smoothing": 5, "allow_passthrough": True}))
    run_id, workdir = st["run_id"], Path(st["workdir"])
    assert (st["run_status"], st["exit_status"]) == ("completed", "success"), where(srv, st)
    stab = st["phases"]["stabilize"]
    assert stab["status"] == "failed", stab
    assert stab["error"]["code"] == "FFMPEG_FAILED", stab
    assert "vidstabdetect" in stab["error"]["message"]
    assert "simulated failure (e2e)" in stab["error"]["message"], stab
    for name in ("prepare", "comfyui", "lipsync", "encode"):
        assert st["phases"][name]["status"] == "completed", name
    assert not (workdir / "stabilize" / "output.mp4").exists()
    assert st["phases"]["encode"]["outputs"]["source"] == "lipsync/output.mp4"
    assert_final_mp4(workdir / "final.mp4", AUDIO_SECONDS, fps=ENCODE_FPS)
    assert_shows_box(workdir / "final.mp4")
    evs = events(srv, run_id)
    assert of_kind(evs, "phase.failed") == ["stabilize"]
    assert "stabilize" in of_kind(evs, "phase.passthrough")
    assert of_kind(evs, "phase.started") == PHASES
    assert lipsync_input(evs) == "comfyui/output.mp4"  # the unstabilized video went on

