"""The ``lipsync`` phase and the ``command`` provider type, with a real program (``tests/lipsync_tool.py``).

The tool draws a solid colour box over the middle of the face video and muxes the audio in, so a test can see
in ``final.mp4`` whether the lip-synced video was used. It records what it saw (argv, cwd, its inputs as PyAV
reads them, the config it read) as JSON lines, and can fail, hang, write a fixed ``./temp/`` or name its own
output file, like the real tools VIDAX drives.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import falcon.testing
import pytest
from helpers import assert_final_mp4
from helpers import mean_rgb
from helpers import read_events
from helpers import simple_job
from helpers import wait_run

from vidax_core.errors import InputNotFound
from vidax_core.errors import ValidationError
from vidax_core.lipsync import Providers
from vidax_core.media import probe
from vidax_http import create_app

TOOL = Path(__file__).with_name("lipsync_tool.py")
KEY = "test-key-0123456789"  # the settings fixture's API key
FACE_RGB = (0x33, 0x66, 0xCC)  # media.png
GREEN, RED = (0, 255, 0), (255, 0, 0)


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def tool_dir(tmp_path) -> Path:
    """A tool folder like /opt/Wav2Lip: the program, a checkpoint, and a ``temp/`` left over by another run."""
    d = tmp_path / "tool"
    (d / "checkpoints").mkdir(parents=True)
    shutil.copy(TOOL, d / "lipsync_tool.py")
    (d / "checkpoints" / "model.txt").write_text("weights v1")
    (d / "temp").mkdir()
    (d / "temp" / "stale-from-another-run").write_text("x")
    return d


@pytest.fixture
def record(tmp_path) -> Path:
    return tmp_path / "record.jsonl"


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def write_providers(settings, providers: dict) -> None:
    Path(settings.lipsync_providers).write_text(json.dumps({"providers": providers}))


def tool_entry(tool_dir: Path, *args: str, face="{video}", audio="{audio}", **entry) -> dict:
    """A command provider running the tool with sys.executable from ``tool_dir``."""
    command = [sys.executable, "lipsync_tool.py", "--face", face, "--audio", audio, "--outfile", "{output}", *args]
    return {"type": "command", "command": command, "cwd": str(tool_dir), "timeout_s": 60, **entry}


def lip_job(provider="sync", passthrough=False, options=None, **sections) -> dict:
    lipsync = {"provider": provider, "allow_passthrough": passthrough}
    if options is not None:
        lipsync["options"] = options
    return simple_job(lipsync=lipsync, **sections)


def run_job(vx, job) -> dict:
    run_id = vx.create_run(job)["run_id"]
    vx.start_run(run_id)
    return vx.status(run_id)


def manifest(st) -> dict:
    return json.loads(Path(st["manifest"]).read_text())


def assert_colour(rgb, expected, tol=40):
    assert all(abs(a - b) <= tol for a, b in zip(rgb, expected, strict=True)), f"{rgb} is not {expected}"


def client(vx):
    return falcon.testing.TestClient(create_app(vx), headers={"X-API-Key": KEY})


def providers_of(vx) -> Providers:
    return Providers(vx.settings.lipsync_providers, settings=vx.settings, registry=vx.registry, assets=vx.assets,
                     comfyui=None)


def pid_gone(pid: int, timeout: float = 5.0) -> bool:
    """Whether ``pid`` is dead (gone or a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


# --------------------------------------------------------------------------- the providers file


GOOD = {"type": "command", "command": ["tool", "--face", "{video}"]}


@pytest.mark.parametrize("entry, field", [
    ({"type": "nosuch"}, "providers.sync.type"),
    ({**GOOD, "comand": ["tool"]}, "providers.sync.comand"),
    ({"type": "command"}, "providers.sync.command"),
    ({**GOOD, "command": ["tool", "--face", "{vidoe}"]}, "providers.sync.command[2]"),
    ({**GOOD, "error_patterns": [{"pattern": "(unclosed", "code": "MY_CODE"}]},
     "providers.sync.error_patterns[0].pattern"),
    ({**GOOD, "error_patterns": [{"pattern": "x", "code": "lower"}]}, "providers.sync.error_patterns[0].code"),
    ({**GOOD, "timeout_s": 0}, "providers.sync.timeout_s"),
    ({**GOOD, "options": {"pads": [0, 10]}}, "providers.sync.options.pads"),
    ({**GOOD, "config_template": "no-such-template.yaml"}, "providers.sync.config_template"),
])
def test_invalid_provider_entry_names_provider_and_field(inline_vidax, settings, entry, field):
    write_providers(settings, {"sync": entry, "other": GOOD})
    with pytest.raises(ValidationError) as ei:
        providers_of(inline_vidax).get("sync")
    assert field in [d["field"] for d in ei.value.details], ei.value.details
    assert field in ei.value.message
    # the other provider of the file is fine
    assert providers_of(inline_vidax).get("other").name == "other"
    # and a job naming the bad provider is a 400 naming the same field
    with pytest.raises(ValidationError) as ei:
        inline_vidax.create_run(lip_job())
    assert field in [d["field"] for d in ei.value.details], ei.value.details


def test_unknown_placeholder_problem_lists_the_known_ones(inline_vidax, settings):
    write_providers(settings, {"sync": {**GOOD, "command": ["tool", "{pad_top}", "{video}"],
                                        "options": {"pad_bottom": 10}}})
    with pytest.raises(ValidationError) as ei:
        providers_of(inline_vidax).get("sync")
    (problem,) = ei.value.details
    assert problem["field"] == "providers.sync.command[1]"
    assert "{pad_top}" in problem["problem"]
    for known in ("video", "audio_16k", "output_dir", "config", "pad_bottom"):
        assert known in problem["problem"]


def test_providers_file_that_is_not_json_or_lacks_providers(inline_vidax, settings):
    Path(settings.lipsync_providers).write_text("{not json")
    with pytest.raises(ValidationError) as ei:
        providers_of(inline_vidax).entries()
    assert ei.value.details[0]["field"] == "(file)"
    Path(settings.lipsync_providers).write_text(json.dumps({"provider": {}}))
    with pytest.raises(ValidationError) as ei:
        providers_of(inline_vidax).entries()
    fields = [d["field"] for d in ei.value.details]
    assert "providers" in fields and "provider" in fields


def test_missing_providers_file_is_a_400_on_lipsync_provider(inline_vidax, settings):
    assert not Path(settings.lipsync_providers).exists()
    with pytest.raises(InputNotFound):
        providers_of(inline_vidax).entries()
    r = client(inline_vidax).simulate_post("/jobs", json=lip_job())
    assert r.status_code == 400, r.text
    (detail,) = r.json["error"]["details"]
    assert detail["field"] == "lipsync.provider"
    assert str(settings.lipsync_providers) in detail["problem"]


def test_unknown_provider_in_a_job_is_a_400_naming_lipsync_provider(inline_vidax, settings, tool_dir):
    write_providers(settings, {"sync": tool_entry(tool_dir), "wav2lip": tool_entry(tool_dir)})
    r = client(inline_vidax).simulate_post("/jobs", json=lip_job(provider="latentsync"))
    assert r.status_code == 400, r.text
    assert r.json["error"]["code"] == "VALIDATION_ERROR"
    (detail,) = r.json["error"]["details"]
    assert detail["field"] == "lipsync.provider"
    assert "latentsync" in detail["problem"] and "sync" in detail["problem"] and "wav2lip" in detail["problem"]
    assert inline_vidax.store.list_runs() == []


def test_job_options_must_be_options_of_the_provider(inline_vidax, settings, tool_dir):
    write_providers(settings, {"sync": tool_entry(tool_dir, "--color", "{box_color}",
                                                  options={"box_color": "red", "pads": 0})})
    r = client(inline_vidax).simulate_post("/jobs", json=lip_job(options={"box_colour": "blue", "pads": 5,
                                                                          "resize": 2}))
    assert r.status_code == 400, r.text
    fields = sorted(d["field"] for d in r.json["error"]["details"])
    assert fields == ["lipsync.options.box_colour", "lipsync.options.resize"]
    assert "box_color" in r.text and "pads" in r.text  # the options it does have
    assert inline_vidax.create_run(lip_job(options={"box_color": "blue", "pads": 5}))["status"] == "queued"


@pytest.mark.parametrize("value", [None, ["x", "y"], {"r": 255}])
def test_job_option_values_must_be_scalars_like_the_providers_own(inline_vidax, settings, tool_dir, value):
    write_providers(settings, {"sync": tool_entry(tool_dir, "--color", "{box_color}", options={"box_color": "red"})})
    with pytest.raises(ValidationError) as ei:
        inline_vidax.create_run(lip_job(options={"box_color": value}))
    assert [d["field"] for d in ei.value.details] == ["lipsync.options.box_color"]


def test_lipsync_disabled_needs_no_provider(inline_vidax):
    st = run_job(inline_vidax, simple_job(lipsync={"enable": False}))
    assert st["exit_status"] == "success"
    assert st["phases"]["lipsync"]["status"] == "skipped"


# --------------------------------------------------------------------------- availability


def test_program_not_found_fails_the_phase_with_the_reason(inline_vidax, settings):
    write_providers(settings, {"sync": {"type": "command", "command": ["no-such-lipsync-tool-4711", "{video}"]}})
    st = run_job(inline_vidax, lip_job(passthrough=True))
    assert st["run_status"] == "completed" and st["exit_status"] == "success", st
    lip = manifest(st)["phases"]["lipsync"]
    assert lip["status"] == "failed"
    assert lip["error"]["code"] == "LIPSYNC_UNAVAILABLE"
    assert lip["provider"] == "sync"
    assert "no-such-lipsync-tool-4711" in lip["reason"] and "not found" in lip["reason"]
    # GET /jobs/{id} shows the provider and why it could not run
    r = client(inline_vidax).simulate_get(f"/jobs/{st['run_id']}")
    assert r.status_code == 200
    shown = r.json["phases"]["lipsync"]
    assert shown["provider"] == "sync" and shown["reason"] == lip["reason"]
    assert shown["error"]["code"] == "LIPSYNC_UNAVAILABLE"
    # and so do the events
    unavailable = [e for e in read_events(st["workdir"]) if e["event"] == "lipsync.unavailable"]
    assert unavailable and unavailable[0]["message"] == lip["reason"]
    assert unavailable[0]["data"]["provider"] == "sync"
    # final.mp4 from the video as it was
    assert st["phases"]["encode"]["outputs"]["source"] == "prepare/source.mp4"


def test_missing_cwd_makes_the_provider_unavailable(inline_vidax, settings, tmp_path, tool_dir):
    write_providers(settings, {"sync": tool_entry(tool_dir, cwd=str(tmp_path / "gone"))})
    st = run_job(inline_vidax, lip_job(passthrough=False))
    assert st["run_status"] == "failed", st
    lip = manifest(st)["phases"]["lipsync"]
    assert lip["error"]["code"] == "LIPSYNC_UNAVAILABLE"
    assert str(tmp_path / "gone") in lip["reason"]
    assert st["error"]["code"] == "LIPSYNC_UNAVAILABLE"


@pytest.fixture
def missing_asset(settings, tmp_path):
    Path(settings.assets_config).write_text(json.dumps({"assets": [
        {"name": "lipmodel", "url": "https://example.invalid/lipmodel.pth", "path": "models/lipmodel.pth"}]}))
    return tmp_path / "models" / "lipmodel.pth"


def test_missing_required_asset_with_passthrough_makes_the_provider_unavailable(inline_vidax, settings, tool_dir,
                                                                                 missing_asset, record):
    write_providers(settings, {"sync": tool_entry(tool_dir, "--record", str(record), requires_assets=["lipmodel"])})
    st = run_job(inline_vidax, lip_job(passthrough=True))
    assert st["exit_status"] == "success", st
    lip = st["phases"]["lipsync"]
    assert lip["status"] == "failed" and lip["error"]["code"] == "LIPSYNC_UNAVAILABLE"
    assert lip["provider"] == "sync"
    assert "lipmodel" in lip["reason"]
    assert records(record) == []  # the tool never ran
    assert_final_mp4(st["final"], 3.0)


def test_missing_required_asset_without_passthrough_refuses_the_start(inline_vidax, settings, tool_dir,
                                                                      missing_asset, record):
    write_providers(settings, {"sync": tool_entry(tool_dir, requires_assets=["lipmodel"])})
    run_id = inline_vidax.create_run(lip_job(passthrough=False))["run_id"]
    with pytest.raises(InputNotFound) as ei:
        inline_vidax.start_run(run_id)
    assert "lipmodel" in ei.value.message
    r = client(inline_vidax).simulate_post(f"/jobs/{run_id}/start")
    assert r.status_code == 404, r.text
    assert r.json["error"]["code"] == "INPUT_NOT_FOUND"
    assert "lipmodel" in r.json["error"]["message"]
    st = inline_vidax.status(run_id)
    assert st["run_status"] == "queued" and all(p["status"] in ("queued", "skipped") for p in st["phases"].values())
    # once the asset is there, the run starts and the tool runs
    missing_asset.parent.mkdir(parents=True)
    missing_asset.write_bytes(b"model")
    inline_vidax.start_run(run_id)
    assert inline_vidax.status(run_id)["exit_status"] == "success"


# --------------------------------------------------------------------------- the command provider, for real


def test_command_provider_runs_the_tool_and_final_mp4_is_made_from_its_output(inline_vidax, settings, tool_dir,
                                                                               record):
    write_providers(settings, {"sync": tool_entry(
        tool_dir, "--color", "{box_color}", "--need", "checkpoints/model.txt", "--record", str(record),
        audio="{audio_16k}", video_fps=20, options={"box_color": "red"})})
    st = run_job(inline_vidax, lip_job(options={"box_color": "0x00ff00"}))
    assert st["run_status"] == "completed" and st["exit_status"] == "success", st
    wd = Path(st["workdir"])
    lip = manifest(st)["phases"]["lipsync"]
    assert lip["status"] == "completed", lip
    assert lip["provider"] == "sync" and lip.get("reason") is None
    assert lip["outputs"]["video"] == "lipsync/output.mp4"

    (rec,) = records(record)
    assert rec["exit"] == 0
    argv = rec["argv"]
    # the inputs existed when it ran: the face re-timed to video_fps, the audio at 16 kHz mono
    assert rec["face"]["exists"] and rec["audio"]["exists"]
    assert abs(rec["face"]["fps"] - 20) < 0.01, rec["face"]
    assert abs(probe(wd / "prepare" / "source.mp4").fps - 25) < 0.01
    assert abs(rec["face"]["frames"] - 60) <= 1, rec["face"]
    assert rec["audio"]["sample_rate"] == 16000 and rec["audio"]["channels"] == 1, rec["audio"]
    assert argv[argv.index("--outfile") + 1] == str(wd / "lipsync" / "output.mp4")
    assert argv[argv.index("--color") + 1] == "0x00ff00"  # the job's option over the provider's default
    # it ran in the run's scratch folder, which mirrors the tool folder (the checkpoint is visible)
    assert Path(rec["cwd"]) == wd / "lipsync" / "scratch" / "work"
    assert rec["need"] == "weights v1"
    assert not (wd / "lipsync" / "scratch").exists()  # removed afterwards (keep_scratch is off)

    out = probe(wd / "lipsync" / "output.mp4")
    assert out.vcodec == "h264" and out.has_audio
    assert st["phases"]["encode"]["outputs"]["source"] == "lipsync/output.mp4"
    assert_final_mp4(st["final"], 3.0, fps=25)
    assert_colour(mean_rgb(st["final"]), GREEN)  # the box the tool drew
    assert_colour(mean_rgb(st["final"], 0.02, 0.12), FACE_RGB)  # the face around it

    events = read_events(wd)
    cmd = [e for e in events if e["event"] == "lipsync.command"]
    assert cmd and cmd[0]["data"]["argv"] == [sys.executable, *argv]
    assert cmd[0]["data"]["cwd"] == rec["cwd"]
    exited = [e for e in events if e["event"] == "lipsync.exited"]
    assert exited and exited[0]["data"]["returncode"] == 0


def test_scratch_is_kept_when_asked(inline_vidax, settings, tool_dir, record):
    write_providers(settings, {"sync": tool_entry(tool_dir, "--record", str(record), keep_scratch=True)})
    st = run_job(inline_vidax, lip_job())
    assert st["exit_status"] == "success", st
    scratch = Path(st["workdir"]) / "lipsync" / "scratch"
    assert (scratch / "tool.log").read_text().startswith("lipsync_tool: wrote")
    work = scratch / "work"
    assert (work / "lipsync_tool.py").is_symlink()
    assert (work / "lipsync_tool.py").resolve() == (tool_dir / "lipsync_tool.py").resolve()
    assert (work / "checkpoints").is_symlink()
    assert (work / "temp").is_dir() and not (work / "temp").is_symlink()


def test_two_runs_at_once_never_share_the_tools_temp_folder(vidax, settings, tool_dir, record, tmp_path):
    rendezvous = tmp_path / "rendezvous"
    write_providers(settings, {"sync": tool_entry(
        tool_dir, "--write-temp", "--rendezvous", str(rendezvous), "--count", "2",
        "--need", "checkpoints/model.txt", "--record", str(record))})
    ids = [vidax.create_run(lip_job())["run_id"] for _ in range(2)]
    for run_id in ids:
        vidax.start_run(run_id)
    sts = [wait_run(vidax, run_id, timeout=60) for run_id in ids]
    for st in sts:
        assert st["exit_status"] == "success", st["phases"]["lipsync"]
    recs = records(record)
    assert len(recs) == 2 and all(r["exit"] == 0 for r in recs)
    assert len(recs[0]["met"]) == 2  # both tools were running at the same time
    # each wrote its ./temp/ inside its own run's scratch folder, with the checkpoint visible
    temps = sorted(r["temp"] for r in recs)
    workdirs = sorted(str(Path(st["workdir"]).resolve()) for st in sts)
    for temp, wd in zip(temps, workdirs, strict=True):
        assert temp == str(Path(wd) / "lipsync" / "scratch" / "work" / "temp")
    assert all(r["need"] == "weights v1" for r in recs)
    # the tool folder's own temp/ was never touched
    assert os.listdir(tool_dir / "temp") == ["stale-from-another-run"]


def test_without_isolate_the_tool_sees_the_shared_temp_folder(inline_vidax, settings, tool_dir):
    """The control experiment: the tool really does fail on a temp/ of another run."""
    write_providers(settings, {"sync": tool_entry(tool_dir, "--write-temp", isolate=False)})
    st = run_job(inline_vidax, lip_job())
    assert st["run_status"] == "failed"
    err = st["phases"]["lipsync"]["error"]
    assert err["code"] == "LIPSYNC_FAILED"
    assert "exited with code 5" in err["message"]
    assert "holds files of another run" in err["message"]


def test_timeout_kills_the_whole_process_group(inline_vidax, settings, tool_dir, tmp_path):
    pid_file = tmp_path / "pids.json"
    write_providers(settings, {"sync": tool_entry(tool_dir, "--sleep", "30", "--pid-file", str(pid_file),
                                                  timeout_s=1.5)})
    t0 = time.monotonic()
    st = run_job(inline_vidax, lip_job())
    assert time.monotonic() - t0 < 20
    assert st["run_status"] == "failed", st
    err = st["phases"]["lipsync"]["error"]
    assert err["code"] == "LIPSYNC_TIMEOUT", err
    assert "1.5" in err["message"]
    assert st["phases"]["encode"]["status"] == "queued"
    pids = json.loads(pid_file.read_text())
    assert pid_gone(pids["tool"]), "the tool still runs"
    assert pid_gone(pids["child"]), "the tool's child process survived the timeout"


@pytest.mark.parametrize("message, patterns, code, said", [
    ("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", None, "LIPSYNC_OUT_OF_MEMORY", "out of memory"),
    ("Face not detected! Ensure the video contains a face in all the frames.", None, "LIPSYNC_NO_FACE",
     "no face"),
    ("Face not detected! Ensure the video contains a face in all the frames.",
     [{"pattern": "(?i)face not detected", "code": "MY_FACE_CODE", "message": "custom: no face here"}],
     "MY_FACE_CODE", "custom: no face here"),
    ("KeyError: 'mel'", [{"pattern": "KeyError", "code": "MEL_BROKEN"}], "MEL_BROKEN", "exited with code 7"),
    ("something else went wrong", None, "LIPSYNC_FAILED", "exited with code 7"),
])
def test_stderr_patterns_map_to_error_codes(inline_vidax, settings, tool_dir, message, patterns, code, said):
    extra = {"error_patterns": patterns} if patterns else {}
    write_providers(settings, {"sync": tool_entry(tool_dir, "--fail-code", "7", "--message", message, **extra)})
    st = run_job(inline_vidax, lip_job())
    assert st["run_status"] == "failed"
    err = st["phases"]["lipsync"]["error"]
    assert err["code"] == code, err
    assert said in err["message"]
    assert message in err["message"]  # the tool's stderr tail
    ev = [e for e in read_events(st["workdir"]) if e["event"] == "phase.failed"][-1]
    assert ev["phase"] == "lipsync" and ev["data"]["code"] == code
    assert ev["data"]["details"]["returncode"] == 7
    assert message in ev["data"]["details"]["output_tail"]


@pytest.mark.parametrize("ext", ["avi", "mkv"])
def test_output_glob_finds_the_file_the_tool_named_and_makes_it_h264_mp4(inline_vidax, settings, tool_dir,
                                                                          record, ext):
    entry = tool_entry(tool_dir, "--record", str(record), output_glob=f"result_*.{ext}")
    entry["command"] = [sys.executable, "lipsync_tool.py", "--face", "{video}", "--audio", "{audio}",
                        "--out-dir", "{output_dir}", "--ext", ext, "--record", str(record), "--color", "red"]
    write_providers(settings, {"sync": entry})
    st = run_job(inline_vidax, lip_job())
    assert st["exit_status"] == "success", st["phases"]["lipsync"]
    (rec,) = records(record)
    assert rec["wrote"].endswith(f".{ext}") and Path(rec["wrote"]).name.startswith("result_")
    out = Path(st["workdir"]) / "lipsync" / "output.mp4"
    info = probe(out)
    assert info.vcodec == "h264" and info.pix_fmt == "yuv420p" and "mp4" in info.format
    assert info.acodec == "aac"  # the tool wrote video only; the audio was muxed in
    assert abs(info.duration - 3.0) < 0.15
    assert st["phases"]["encode"]["outputs"]["source"] == "lipsync/output.mp4"
    assert_colour(mean_rgb(st["final"]), RED)


def test_output_glob_matching_nothing_fails_the_phase(inline_vidax, settings, tool_dir):
    entry = tool_entry(tool_dir, output_glob="result_*.mov")
    entry["command"] = [sys.executable, "lipsync_tool.py", "--face", "{video}", "--audio", "{audio}",
                        "--out-dir", "{output_dir}", "--ext", "avi"]
    write_providers(settings, {"sync": entry})
    st = run_job(inline_vidax, lip_job())
    err = st["phases"]["lipsync"]["error"]
    assert err["code"] == "LIPSYNC_FAILED" and "result_*.mov" in err["message"]


def test_tool_that_exits_0_without_output_fails_the_phase(inline_vidax, settings, tool_dir):
    write_providers(settings, {"sync": {"type": "command", "cwd": str(tool_dir),
                                        "command": [sys.executable, "-c", "print('done, honest')"]}})
    st = run_job(inline_vidax, lip_job())
    assert st["run_status"] == "failed"
    err = st["phases"]["lipsync"]["error"]
    assert err["code"] == "LIPSYNC_FAILED" and "lipsync/output.mp4" in err["message"]


WRITE_GARBAGE = "open({output!r}, 'wb').write(b'not a video ' * 200)"
WRITE_AUDIO_ONLY = ("import subprocess, imageio_ffmpeg; subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-v', "
                    "'error', '-f', 'lavfi', '-i', 'sine=d=1', '-y', {output!r}], check=True)")


@pytest.mark.parametrize("code, said", [(WRITE_GARBAGE, "unreadable video"), (WRITE_AUDIO_ONLY, "without video")],
                         ids=["garbage", "audio-only"])
def test_tool_output_that_is_not_a_video_fails_as_lipsync_failed(inline_vidax, settings, code, said):
    write_providers(settings, {"sync": {"type": "command",
                                        "command": [sys.executable, "-c", code.format(output="{output}")]}})
    st = run_job(inline_vidax, lip_job())
    assert st["run_status"] == "failed"
    err = st["phases"]["lipsync"]["error"]
    assert err["code"] == "LIPSYNC_FAILED", err
    assert "'sync'" in err["message"] and said in err["message"]


def test_config_template_is_rendered_with_the_placeholders(inline_vidax, settings, tool_dir, record, tmp_path):
    (tmp_path / "sync.yaml.tmpl").write_text(
        "# lip-sync settings, rendered by VIDAX\n"
        "[paths]\n"
        "face: {video}\n"
        "audio: {audio_16k}\n"
        "outfile: {output}\n"
        "workdir: {workdir}\n"
        "[style]\n"
        "color: {box_color}\n"
        "fps: {fps}\n"
        "literal: {not_a_placeholder}\n")
    write_providers(settings, {"sync": {
        "type": "command", "cwd": str(tool_dir), "config_template": "sync.yaml.tmpl",
        "command": [sys.executable, "lipsync_tool.py", "--config", "{config}", "--record", str(record)],
        "options": {"box_color": "0x00ff00"}}})
    st = run_job(inline_vidax, lip_job())
    assert st["exit_status"] == "success", st["phases"]["lipsync"]
    wd = Path(st["workdir"])
    (rec,) = records(record)
    config_path = Path(rec["argv"][rec["argv"].index("--config") + 1])
    assert config_path == wd / "lipsync" / "scratch" / "config.yaml"
    cfg = rec["config"]
    assert cfg["outfile"] == str(wd / "lipsync" / "output.mp4")
    assert cfg["workdir"] == str(wd)
    assert cfg["color"] == "0x00ff00"
    assert cfg["fps"] == "25"
    assert cfg["literal"] == "{not_a_placeholder}"  # not VIDAX's: left alone
    assert rec["face"]["exists"] and rec["face"]["path"] == cfg["face"]
    assert rec["audio"]["sample_rate"] == 16000 and rec["audio"]["channels"] == 1
    assert_colour(mean_rgb(st["final"]), GREEN)


# --------------------------------------------------------------------------- passthrough and resume


def test_failing_tool_with_passthrough_encodes_the_unsynced_video(inline_vidax, settings, tool_dir):
    write_providers(settings, {"sync": tool_entry(tool_dir, "--fail-code", "1", "--message", "boom")})
    st = run_job(inline_vidax, lip_job(passthrough=True))
    assert st["run_status"] == "completed" and st["exit_status"] == "success", st
    assert st["phases"]["lipsync"]["status"] == "failed"
    assert st["phases"]["lipsync"]["error"]["code"] == "LIPSYNC_FAILED"
    assert st["phases"]["encode"]["status"] == "completed"
    assert st["phases"]["encode"]["outputs"]["source"] == "prepare/source.mp4"
    assert_final_mp4(st["final"], 3.0)
    assert_colour(mean_rgb(st["final"]), FACE_RGB)  # no box: the unsynced video
    assert "phase.passthrough" in [e["event"] for e in read_events(st["workdir"])]


def test_failing_tool_without_passthrough_fails_the_run(inline_vidax, settings, tool_dir):
    write_providers(settings, {"sync": tool_entry(tool_dir, "--fail-code", "1", "--message", "boom")})
    st = run_job(inline_vidax, lip_job(passthrough=False))
    assert st["run_status"] == "failed" and st["exit_status"] == "failed", st
    assert st["phases"]["lipsync"]["status"] == "failed"
    assert st["phases"]["encode"]["status"] == "queued"
    assert st["error"]["code"] == "LIPSYNC_FAILED"
    assert st["final"] is None
    assert not (Path(st["workdir"]) / "final.mp4").exists()


def resume_after_fixing(vx, tool_dir, record, job) -> tuple[dict, dict, list[str]]:
    """Run ``job`` with the tool's checkpoint missing (lipsync fails), put it back, start the run again.

    Returns the status after the first and the second attempt and the phases started by the second."""
    (tool_dir / "checkpoints" / "model.txt").unlink()
    run_id = vx.create_run(job)["run_id"]
    vx.start_run(run_id)
    first = vx.status(run_id)
    assert first["run_status"] == "failed"
    assert first["phases"]["lipsync"]["error"]["code"] == "LIPSYNC_FAILED"
    assert "checkpoints/model.txt" in first["phases"]["lipsync"]["error"]["message"]
    n_events = len(read_events(first["workdir"]))

    (tool_dir / "checkpoints" / "model.txt").write_text("weights v2")  # fix the cause
    vx.start_run(run_id)
    second = vx.status(run_id)
    assert second["run_status"] == "completed" and second["exit_status"] == "partial", second
    assert second["resumed"] is True
    started = [e["phase"] for e in read_events(second["workdir"])[n_events:] if e["event"] == "phase.started"]
    assert [r["exit"] for r in records(record)][-2:] == [3, 0]
    assert records(record)[-1]["need"] == "weights v2"
    assert second["phases"]["encode"]["outputs"]["source"] == "lipsync/output.mp4"
    assert_final_mp4(second["final"], 3.0)
    assert_colour(mean_rgb(second["final"]), GREEN)
    return first, second, started


def test_resume_after_a_failed_lipsync_reruns_only_lipsync_and_encode(inline_vidax, settings, tool_dir, record):
    write_providers(settings, {"sync": tool_entry(tool_dir, "--need", "checkpoints/model.txt",
                                                  "--record", str(record))})
    first, second, started = resume_after_fixing(inline_vidax, tool_dir, record, lip_job())
    assert started == ["lipsync", "encode"]
    assert second["phases"]["prepare"]["started_at"] == first["phases"]["prepare"]["started_at"]


def test_resume_keeps_a_completed_stabilize(inline_vidax, settings, tool_dir, record):
    """Stabilize's outputs include a non-file value (``method``): it must not count as a lost output."""
    write_providers(settings, {"sync": tool_entry(tool_dir, "--need", "checkpoints/model.txt",
                                                  "--record", str(record))})
    first, second, started = resume_after_fixing(inline_vidax, tool_dir, record,
                                                 lip_job(stabilize={"method": "deshake"}))
    assert "phase.outputs_lost" not in [e["event"] for e in read_events(second["workdir"])]
    assert started == ["lipsync", "encode"]
    for name in ("prepare", "stabilize"):
        assert second["phases"][name]["started_at"] == first["phases"][name]["started_at"]
