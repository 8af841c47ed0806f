"""The ``comfyui`` lip-sync provider type against the fake ComfyUI: the video and the audio are uploaded, the
provider's workflow is bound and run, and its video becomes ``lipsync/output.mp4``."""

from __future__ import annotations

import json

import pytest
from fake_comfyui import FakeComfyUI
from helpers import assert_final_mp4
from helpers import simple_job

from vidax_core import Vidax
from vidax_core.comfyui.process import ComfyUIUnavailable
from vidax_core.config import load_settings
from vidax_core.errors import ValidationError
from vidax_core.media import probe

# a stand-in for a lip-sync workflow on the fake: the face video's first frame and the voice make a clip
WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "{{inputs.video}}"}},
    "2": {"class_type": "LoadAudio", "inputs": {"audio": "{{inputs.audio}}"}},
    "3": {"class_type": "VidaxTestVideo", "inputs": {"image": ["1", 0], "audio": ["2", 0], "frames": "{{frames}}",
                                                     "width": 160, "height": 128, "fps": 25.0,
                                                     "format": "mp4", "seed": 1, "filename_prefix": "vidax/lipsync"}},
}


@pytest.fixture
def fake():
    f = FakeComfyUI().start_in_thread()
    yield f
    f.stop()


def make_vidax(tmp_path, media, url, provider=None, auto_start=False):
    (tmp_path / "wf").mkdir(exist_ok=True)
    (tmp_path / "wf" / "sync.json").write_text(json.dumps(WORKFLOW))
    providers = {"providers": {"comfy-sync": provider or {"type": "comfyui", "workflow": "wf/sync.json",
                                                          "params": {"frames": 20}, "timeout_s": 60}}}
    (tmp_path / "lipsync.providers.json").write_text(json.dumps(providers))
    settings = load_settings(env={
        "VIDAX_RUNS_DIR": str(tmp_path / "runs"), "VIDAX_INPUT_ROOTS": str(media.dir),
        "VIDAX_LIPSYNC_PROVIDERS": str(tmp_path / "lipsync.providers.json"),
        "VIDAX_ASSETS_CONFIG": str(tmp_path / "assets.json"), "VIDAX_COMFYUI_URL": url,
        "VIDAX_COMFYUI_AUTO_START": "1" if auto_start else "0"}, cwd=tmp_path)
    return Vidax(settings, executor="inline")


def lipsync_job(**lipsync):
    return simple_job(lipsync={"provider": "comfy-sync", **lipsync})


def test_the_workflow_runs_and_its_video_is_the_lipsync_output(tmp_path, media, fake):
    with make_vidax(tmp_path, media, fake.url) as vx:
        created = vx.create_run(lipsync_job(options={"frames": 30}))
        vx.start_run(created["run_id"])
        st = vx.status(created["run_id"])
    assert st["run_status"] == "completed" and st["exit_status"] == "success", st
    assert st["phases"]["lipsync"]["status"] == "completed" and st["phases"]["lipsync"]["provider"] == "comfy-sync"
    out = probe(tmp_path / "runs" / created["run_id"] / "lipsync" / "output.mp4")
    assert (out.width, out.height) == (160, 128) and out.vcodec == "h264"
    assert len(fake.accepted) == 1
    sent = fake.accepted[0]["prompt"]
    assert sent["3"]["inputs"]["frames"] == 30, "the job's option did not override the provider's param"
    uploaded = {f"{u.subfolder}/{u.name}" for u in fake.uploads}
    assert sent["1"]["inputs"]["image"] in uploaded and sent["1"]["inputs"]["image"].endswith(".mp4")
    assert sent["2"]["inputs"]["audio"] in uploaded and sent["2"]["inputs"]["audio"].endswith(".wav")
    assert all(u.subfolder == f"vidax/{created['run_id']}" for u in fake.uploads)
    assert_final_mp4(st["final"], 3.0)


def test_entry_problems_name_the_provider_and_field(tmp_path, media, fake):
    bad = {"type": "comfyui", "workflow": "wf/sync.json", "params": {}, "colour": "red"}
    with make_vidax(tmp_path, media, fake.url, provider=bad) as vx:
        with pytest.raises(ValidationError) as ei:
            vx.create_run(lipsync_job())
    fields = {d["field"] for d in ei.value.details}
    assert "providers.comfy-sync.colour" in fields, fields
    with make_vidax(tmp_path, media, fake.url, provider={"type": "comfyui", "workflow": "wf/sync.json"}) as vx:
        with pytest.raises(ValidationError) as ei:
            vx.create_run(lipsync_job())
    assert any(d["field"] == "providers.comfy-sync.params" and "frames" in d["problem"] for d in ei.value.details)


def test_unknown_option_is_refused_at_post_jobs(tmp_path, media, fake):
    with make_vidax(tmp_path, media, fake.url) as vx:
        with pytest.raises(ValidationError) as ei:
            vx.create_run(lipsync_job(options={"strength": 2}))
    assert [d["field"] for d in ei.value.details] == ["lipsync.options.strength"]


def test_comfyui_down_refuses_the_start_without_passthrough(tmp_path, media):
    with make_vidax(tmp_path, media, "http://127.0.0.1:9") as vx:
        created = vx.create_run(lipsync_job(allow_passthrough=False))
        with pytest.raises(ComfyUIUnavailable):
            vx.start_run(created["run_id"])
        assert vx.status(created["run_id"])["run_status"] == "queued"


def test_comfyui_down_with_passthrough_makes_the_provider_unavailable(tmp_path, media):
    with make_vidax(tmp_path, media, "http://127.0.0.1:9") as vx:
        created = vx.create_run(lipsync_job(allow_passthrough=True))
        vx.start_run(created["run_id"])
        st = vx.status(created["run_id"])
    lip = st["phases"]["lipsync"]
    assert st["run_status"] == "completed" and st["exit_status"] == "success", st
    assert lip["status"] == "failed" and lip["error"]["code"] == "LIPSYNC_UNAVAILABLE", lip
    assert "not reachable" in lip["reason"], lip
