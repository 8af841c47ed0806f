"""ComfyUI in VIDAX against the fake ComfyUI (tests/fake_comfyui.py, checked against the recordings by
tests/test_fake_comfyui.py): the process manager with real subprocesses, the client, the ``comfyui`` phase end to
end with the real prepare/encode, the HTTP endpoints and ``vidax comfyui``."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import attrs
import falcon.testing
import pytest
import requests
from conftest import AUDIO_SECONDS
from fake_comfyui import FakeComfyUI
from fake_comfyui import free_port
from helpers import assert_final_mp4
from helpers import read_events
from helpers import simple_job

from vidax_core import Vidax
from vidax_core.comfyui import ComfyUIClient
from vidax_core.comfyui import ComfyUIProcess
from vidax_core.comfyui.client import ComfyUIExecutionError
from vidax_core.comfyui.client import ComfyUIPromptRejected
from vidax_core.comfyui.client import OutputItem
from vidax_core.comfyui.process import ComfyUIStartFailed
from vidax_core.comfyui.process import ComfyUITimeout
from vidax_core.comfyui.process import ComfyUIUnavailable
from vidax_core.config import ComfyUISettings
from vidax_core.config import load_settings
from vidax_core.errors import PhaseFailed
from vidax_core.errors import ValidationError
from vidax_core.media import probe
from vidax_http import create_app

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FAKE = str(TESTS / "fake_comfyui.py")
WORKFLOWS = REPO / "config" / "workflows"
KEY = "test-key-0123456789"


# --------------------------------------------------------------------------- helpers


def proc_start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def gone(pid: int, within: float = 3.0) -> bool:
    """The process has ended (a zombie counts as ended) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while proc_start_time(pid) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def fake_command(port: int, *flags: str) -> tuple[str, ...]:
    return (sys.executable, FAKE, "--port", str(port), *flags)


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def fake():
    f = FakeComfyUI().start_in_thread()
    yield f
    f.stop()


@pytest.fixture
def state_dir(tmp_path):
    return tmp_path / "runs" / ".comfyui"


@pytest.fixture
def started(tmp_path):
    """A start log the fakes append their pid to; at teardown every fake a test started is gone for sure."""
    log = tmp_path / "starts.log"
    yield log
    for pid in map(int, lines(log)):
        try:
            ours = "fake_comfyui.py" in Path(f"/proc/{pid}/cmdline").read_text()
        except OSError:
            ours = False
        if ours and proc_start_time(pid) is not None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def manager(url: str, state_dir: Path, **kw) -> ComfyUIProcess:
    return ComfyUIProcess(ComfyUISettings(url=url, **kw), state_dir)


# --------------------------------------------------------------------------- process: health


def test_health_of_a_running_comfyui(fake, state_dir):
    h = manager(fake.url, state_dir).health()
    assert h["ok"] is True and h["url"] == fake.url
    assert h["version"] == "0.3.64"
    assert h["devices"] and h["devices"][0]["type"] == "cpu"
    assert h["queue"] == {"running": 0, "pending": 0} and h["queue_length"] == 0
    assert h["started_by_vidax"] is False and h["pid"] is None


def test_health_when_unreachable_gives_a_reason(state_dir):
    url = dead_url()
    assert manager(url, state_dir).health() == {"ok": False, "url": url, "reason": "connection refused or host "
                                                "unreachable", "started_by_vidax": False, "pid": None}


def test_health_when_system_stats_fails(state_dir):
    with FakeComfyUI(never_healthy=True) as sick:
        h = manager(sick.url, state_dir).health()
    assert h["ok"] is False and h["reason"] == "GET /system_stats answered HTTP 500"


# --------------------------------------------------------------------------- process: ensure


def test_ensure_when_healthy_spawns_nothing(fake, state_dir, tmp_path):
    marker = tmp_path / "spawned"
    proc = manager(fake.url, state_dir, auto_start=True,
                   command=(sys.executable, "-c", f"open({str(marker)!r}, 'w')"))
    assert proc.ensure() == {"status": "ready", "url": fake.url, "started": False}
    assert not marker.exists() and not proc.pid_file.exists()


def test_auto_start_spawns_one_process_with_pid_file_and_log_and_waits_for_it(tmp_path, state_dir, started):
    port = free_port()
    proc = manager(f"http://127.0.0.1:{port}", state_dir, auto_start=True, start_timeout_s=30,
                   command=fake_command(port, "--delay-start", "1.0", "--start-log", str(started)))
    t0 = time.monotonic()
    result = proc.ensure()
    assert time.monotonic() - t0 >= 1.0
    pid = result["pid"]
    assert result == {"status": "ready", "url": proc.url, "started": True, "pid": pid}
    assert lines(started) == [str(pid)]
    record = json.loads(proc.pid_file.read_text())
    assert record["pid"] == pid and record["port"] == port and record["log"] == str(proc.log_file)
    assert record["start_time"] == proc_start_time(pid)
    assert os.getpgid(pid) == pid  # a process group of its own
    log = proc.log_file.read_text()
    assert "Starting in 1s" in log and f"To see the GUI go to: http://127.0.0.1:{port}" in log
    h = proc.health()
    assert h["ok"] and h["started_by_vidax"] is True and h["pid"] == pid
    assert proc.ensure()["started"] is False  # healthy now: nothing more is started
    assert lines(started) == [str(pid)]

    assert proc.stop() == {"stopped": True, "pid": pid}
    assert gone(pid)
    assert not proc.pid_file.exists()
    assert proc.health()["ok"] is False
    assert proc.stop()["stopped"] is False


@pytest.mark.parametrize("flags", [["--never-healthy"], ["--delay-start", "60"]],
                         ids=["listens-but-system-stats-fails", "never-listens"])
def test_never_healthy_times_out_and_the_whole_process_group_is_gone(tmp_path, state_dir, started, flags):
    port = free_port()
    pids = tmp_path / "fake.pid.json"
    proc = manager(f"http://127.0.0.1:{port}", state_dir, auto_start=True, start_timeout_s=1.0,
                   command=fake_command(port, *flags, "--child", "--pid-file", str(pids), "--start-log", str(started)))
    t0 = time.monotonic()
    with pytest.raises(ComfyUITimeout) as ei:
        proc.ensure()
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 8
    assert ei.value.code == "COMFYUI_TIMEOUT" and "start_timeout_s" in ei.value.message
    record = json.loads(pids.read_text())
    assert record["child_pid"] is not None
    assert gone(record["pid"]) and gone(record["child_pid"])
    assert not proc.pid_file.exists()


@pytest.mark.parametrize("flags", [["--exit-code", "3"],
                                   ["--delay-start", "30", "--exit-after-start", "0.5", "--exit-code", "3"]],
                         ids=["at-once", "while-starting"])
def test_early_exit_fails_quickly_with_the_log_tail(state_dir, started, flags):
    port = free_port()
    proc = manager(f"http://127.0.0.1:{port}", state_dir, auto_start=True, start_timeout_s=60,
                   command=fake_command(port, *flags, "--start-log", str(started)))
    t0 = time.monotonic()
    with pytest.raises(ComfyUIStartFailed) as ei:
        proc.ensure()
    assert time.monotonic() - t0 < 6
    message = ei.value.message
    assert ei.value.code == "COMFYUI_START_FAILED"
    assert "exit code 3" in message
    assert "No module named 'torchvision' (fake ComfyUI exits with code 3)" in message  # its stderr, in the log
    assert "torchvision" in ei.value.details["log_tail"]
    assert not proc.pid_file.exists()
    assert all(gone(int(pid)) for pid in lines(started))


def test_command_not_found(state_dir):
    proc = manager(dead_url(), state_dir, auto_start=True, command=("/nonexistent/comfyui/main.py", "--cpu"))
    with pytest.raises(ComfyUIStartFailed) as ei:
        proc.ensure()
    assert "/nonexistent/comfyui/main.py" in ei.value.message
    assert not proc.pid_file.exists()


def test_command_exiting_at_once_fails_fast(state_dir):
    proc = manager(dead_url(), state_dir, auto_start=True, start_timeout_s=2.0,
                   command=("sh", "-c", "echo 'cannot cd to /opt/ComfyUI' >&2; exit 3"))
    t0 = time.monotonic()
    with pytest.raises(ComfyUIStartFailed) as ei:
        proc.ensure()
    assert time.monotonic() - t0 < 1.5
    assert "cannot cd to /opt/ComfyUI" in ei.value.message
    assert not proc.pid_file.exists()


def test_auto_start_off_or_no_command(state_dir, started):
    url = dead_url()
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(ComfyUIStartFailed) as ei:
        manager(url, state_dir, auto_start=False, command=fake_command(port, "--start-log", str(started))).ensure()
    assert "auto_start is off" in ei.value.message and "connection refused" in ei.value.message
    with pytest.raises(ComfyUIStartFailed) as ei:
        manager(url, state_dir, auto_start=True, command=None).ensure()
    assert "no comfyui.command" in ei.value.message
    assert lines(started) == []


@pytest.mark.parametrize("shared", [True, False], ids=["one-manager", "a-manager-per-thread"])
def test_five_threads_calling_ensure_at_once_start_one_process(state_dir, started, shared):
    port = free_port()

    def make():
        return manager(f"http://127.0.0.1:{port}", state_dir, auto_start=True, start_timeout_s=30,
                       command=fake_command(port, "--delay-start", "0.5", "--start-log", str(started)))

    one = make()
    barrier = threading.Barrier(5)
    results, errors = [], []

    def call():
        proc = one if shared else make()
        barrier.wait()
        try:
            results.append(proc.ensure())
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert [r["status"] for r in results] == ["ready"] * 5
    assert sum(r["started"] for r in results) == 1
    assert len(lines(started)) == 1
    assert one.stop()["stopped"] is True


ENSURE_SCRIPT = """
import json, sys, time
from pathlib import Path
from vidax_core.comfyui import ComfyUIProcess
from vidax_core.config import ComfyUISettings
url, state, at, *command = sys.argv[1:]
proc = ComfyUIProcess(ComfyUISettings(url=url, auto_start=True, command=tuple(command), start_timeout_s=30),
                      Path(state))
time.sleep(max(0.0, float(at) - time.time()))
print(json.dumps(proc.ensure()))
"""


def test_two_processes_calling_ensure_at_once_start_one_and_a_third_stops_it(state_dir, started):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = fake_command(port, "--delay-start", "0.5", "--start-log", str(started))
    at = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", ENSURE_SCRIPT, url, str(state_dir), str(at), *command],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert sorted(r["started"] for r in results) == [False, True]
    assert len(lines(started)) == 1
    pid = next(r["pid"] for r in results if r["started"])

    third = manager(url, state_dir)  # neither of the two: it knows the process from the pid file only
    assert third.health()["started_by_vidax"] is True
    assert third.stop() == {"stopped": True, "pid": pid}
    assert gone(pid)


def test_stop_never_kills_what_vidax_did_not_start(fake, state_dir):
    proc = manager(fake.url, state_dir)
    assert proc.stop() == {"stopped": False, "reason": "no ComfyUI started by VIDAX is running"}
    assert proc.is_healthy()

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = proc_start_time(other.pid)
        assert start is not None
        state_dir.mkdir(parents=True, exist_ok=True)
        # the pid of the process VIDAX started was recycled: same pid, another start time
        proc.pid_file.write_text(json.dumps({"pid": other.pid, "start_time": start - 1, "port": 1,
                                             "log": str(proc.log_file)}))
        assert proc.stop()["stopped"] is False
        assert proc.health()["started_by_vidax"] is False
        time.sleep(0.1)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


# --------------------------------------------------------------------------- client


def frames_node(count=4, width=64, height=48, **inputs):
    return {"class_type": "VidaxTestFrames", "inputs": {"count": count, "width": width, "height": height, "seed": 1,
                                                        **inputs}}


def video_node(frames=12, fmt="mp4", prefix="vidax/clip", **inputs):
    return {"class_type": "VidaxTestVideo", "inputs": {"frames": frames, "width": 64, "height": 48, "fps": 12.0,
                                                       "format": fmt, "filename_prefix": prefix, "seed": 1, **inputs}}


def slow_node(seconds, steps=10, **inputs):
    return {"class_type": "VidaxTestSlow", "inputs": {"seconds": seconds, "steps": steps, **inputs}}


def run_prompt(client: ComfyUIClient, workflow: dict, timeout_s: float = 60, on_progress=None):
    with client.session_socket() as sock:
        prompt_id = client.submit(workflow, sock.client_id)
        entry = client.wait(prompt_id, sock, timeout_s=timeout_s, on_progress=on_progress,
                            total_nodes=len(workflow))
    return prompt_id, entry, sock


@pytest.fixture
def client(fake):
    return ComfyUIClient(fake.url)


def test_upload_returns_subfolder_and_name(client, fake, media, tmp_path):
    assert client.upload(media.png, subfolder="vidax/run1") == "vidax/run1/face.png"
    up = fake.uploads[-1]
    assert (up.name, up.subfolder, up.type, up.data, up.overwrite) == (
        "face.png", "vidax/run1", "input", media.png.read_bytes(), True)
    other = tmp_path / "face.png"
    other.write_bytes(media.odd_png.read_bytes())
    assert client.upload(other, subfolder="vidax/run1", overwrite=False) == "vidax/run1/face (1).png"
    assert client.upload(media.png, subfolder="vidax/run1", overwrite=False) == "vidax/run1/face.png"
    assert fake.uploads[-1].duplicate is True
    assert client.upload(other, subfolder="vidax/run1") == "vidax/run1/face.png"  # overwritten in place
    assert (fake.input_dir / "vidax" / "run1" / "face.png").read_bytes() == media.odd_png.read_bytes()
    assert client.upload(media.wav) == "voice.wav"  # any file, no subfolder


@pytest.mark.parametrize("workflow, expected", [
    ({"1": frames_node(), "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}},
     ["comfyui.workflow.2.inputs.images", "SaveImage", "Required input is missing"]),
    ({"1": frames_node(count=0), "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                                             "filename_prefix": "x"}}},
     ["comfyui.workflow.1.inputs.count", "VidaxTestFrames", "Value 0 smaller than min of 1"]),
    ({"1": video_node(fmt="mkv")}, ["comfyui.workflow.1.inputs.format", "VidaxTestVideo", "Value not in list"]),
    ({"1": {"class_type": "NoSuchNode", "inputs": {}}}, ["NoSuchNode does not exist", "Node ID '#1'"]),
], ids=["missing-input", "below-min", "not-in-list", "unknown-class"])
def test_submit_rejected_names_node_class_and_input(client, fake, workflow, expected):
    with pytest.raises(ComfyUIPromptRejected) as ei:
        client.submit(workflow, "client-1")
    assert ei.value.code == "VALIDATION_ERROR"
    for text in expected:
        assert text in ei.value.message
    assert fake.accepted == []


def test_submit_answered_500_is_a_phase_failure(client):
    with pytest.raises(PhaseFailed) as ei:
        client.submit("not a graph", "client-1")  # type: ignore[arg-type]
    assert ei.value.code == "COMFYUI_PROMPT_FAILED" and "HTTP 500" in ei.value.message


def test_wait_via_websocket_reports_progress(client, fake):
    events = []
    wf = {"1": frames_node(), "2": slow_node(0.3, steps=3, images=["1", 0]), "3": video_node(image=["2", 0])}
    prompt_id, entry, sock = run_prompt(client, wf, on_progress=lambda f, info: events.append((f, info)))
    assert entry["status"]["status_str"] == "success"
    assert fake.ws_clients == [sock.client_id]
    assert fake.accepted[-1]["extra_data"] == {"client_id": sock.client_id}
    bars = [info for _, info in events if "value" in info]
    assert {"node": "2", "value": 3, "max": 3} in bars
    assert {"node": "3", "value": 12, "max": 12} in bars
    assert [info["node"] for _, info in events if "value" not in info] == ["1", "2", "3"]  # executing, in order
    fractions = [f for f, _ in events]
    assert fractions == sorted(fractions) and 0 < fractions[-1] <= 0.99
    assert [i.filename for i in client.outputs(entry)] == ["clip_00001_.mp4"]


@pytest.mark.parametrize("websocket", [True, False], ids=["websocket", "polling"])
def test_execution_error_carries_exception_type_and_message(client, fake, websocket):
    fake.websocket_enabled = websocket
    wf = {"1": frames_node(), "2": {"class_type": "VidaxTestFail", "inputs": {
        "message": "CUDA out of memory. Tried to allocate 20.00 GiB", "exception_type": "torch.OutOfMemoryError",
        "anything": ["1", 0]}}}
    with pytest.raises(ComfyUIExecutionError) as ei:
        run_prompt(client, wf)
    exc = ei.value
    assert exc.code == "COMFYUI_EXECUTION_ERROR"
    assert exc.details == {"node_id": "2", "node_type": "VidaxTestFail", "exception_type": "torch.OutOfMemoryError",
                           "exception_message": "CUDA out of memory. Tried to allocate 20.00 GiB"}
    assert "node 2 (VidaxTestFail) failed: torch.OutOfMemoryError: CUDA out of memory" in exc.message


def test_websocket_unavailable_falls_back_to_polling(client, fake):
    fake.websocket_enabled = False
    with client.session_socket() as sock:
        assert sock.ws is None and sock.error
        prompt_id = client.submit({"1": video_node()}, sock.client_id)
        entry = client.wait(prompt_id, sock, timeout_s=60)
    assert entry["status"]["status_str"] == "success"
    assert fake.ws_clients == []
    assert ("GET", f"/history/{prompt_id}") in fake.requests


def test_websocket_dropping_mid_run_polls_to_completion(client, fake):
    fake.drop_websockets_before("executed")
    prompt_id, entry, _ = run_prompt(client, {"1": frames_node(), "2": slow_node(0.2, images=["1", 0]),
                                              "3": video_node(image=["2", 0])})
    assert fake.ws_drops == 1
    assert entry["status"]["status_str"] == "success"
    assert [i.filename for i in client.outputs(entry)] == ["clip_00001_.mp4"]
    assert ("GET", f"/history/{prompt_id}") in fake.requests


def test_timeout_interrupts_the_prompt(client, fake):
    t0 = time.monotonic()
    with pytest.raises(ComfyUITimeout) as ei:
        run_prompt(client, {"1": slow_node(30, steps=300)}, timeout_s=0.5)
    assert time.monotonic() - t0 < 4
    assert ei.value.code == "COMFYUI_TIMEOUT"
    prompt_id = fake.accepted[-1]["prompt_id"]
    assert fake.interrupts == 1 and fake.interrupt_bodies == [{"prompt_id": prompt_id}]
    deadline = time.monotonic() + 5
    while prompt_id not in fake.history:  # the fake really stopped it
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert fake.history[prompt_id]["status"]["messages"][-1][0] == "execution_interrupted"


def test_silent_websocket_still_sees_the_prompt_finish(client, fake):
    with client.session_socket() as sock:
        fake.mute_websockets()
        prompt_id = client.submit({"1": video_node(frames=4)}, sock.client_id)
        entry = client.wait(prompt_id, sock, timeout_s=2.5)
    assert entry["status"]["status_str"] == "success"


def test_prompt_removed_from_the_queue_is_not_waited_for_until_the_timeout(client, fake):
    blocker = requests.post(fake.url + "/prompt", json={"prompt": {"1": slow_node(5, steps=50)}}, timeout=5)
    assert blocker.status_code == 200
    with client.session_socket() as sock:
        prompt_id = client.submit({"1": video_node(frames=4)}, sock.client_id)
        threading.Timer(0.3, lambda: requests.post(fake.url + "/queue", json={"delete": [prompt_id]},
                                                   timeout=5)).start()
        t0 = time.monotonic()
        with pytest.raises(Exception) as ei:
            client.wait(prompt_id, sock, timeout_s=3.0)
    requests.post(fake.url + "/interrupt", timeout=5)
    assert not isinstance(ei.value, ComfyUITimeout), "waited until timeout_s for a prompt that no longer exists"
    assert time.monotonic() - t0 < 2.5


@pytest.mark.parametrize("websocket", [True, False], ids=["websocket", "polling"])
def test_server_killed_mid_run_is_unavailable_within_seconds(client, fake, websocket):
    fake.websocket_enabled = websocket
    wf = {"1": slow_node(0.3, steps=3), "2": {"class_type": "VidaxTestKillServer",
                                              "inputs": {"exit_code": 1, "anything": ["1", 0]}}}
    t0 = time.monotonic()
    with pytest.raises(ComfyUIUnavailable):
        run_prompt(client, wf, timeout_s=120)
    assert time.monotonic() - t0 < 6
    with pytest.raises(requests.ConnectionError):  # it is gone: connections refused
        requests.get(fake.url + "/system_stats", timeout=2)


def test_server_process_dying_mid_run_is_unavailable_within_seconds(tmp_path, started):
    port = free_port()
    server = subprocess.Popen(fake_command(port, "--start-log", str(started)), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        client = ComfyUIClient(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 20
        while not client.ping():
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.05)
        wf = {"1": slow_node(0.3, steps=3), "2": {"class_type": "VidaxTestKillServer",
                                                  "inputs": {"exit_code": 9, "anything": ["1", 0]}}}
        t0 = time.monotonic()
        with pytest.raises(ComfyUIUnavailable):
            run_prompt(client, wf, timeout_s=120)
        assert time.monotonic() - t0 < 6
        assert server.wait(5) == 9
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


@pytest.fixture
def all_outputs(client, fake):
    wf = {
        "1": frames_node(count=3),
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "vidax/still"}},
        "3": video_node(frames=6, image=["1", 0]),
        "4": {"class_type": "EmptyAudio", "inputs": {"duration": 0.5, "sample_rate": 44100, "channels": 2}},
        "5": {"class_type": "VidaxTestVideoCombine", "inputs": {
            "images": ["1", 0], "frame_rate": 8.0, "loop_count": 0, "filename_prefix": "vidax/combine",
            "format": "video/h264-mp4", "pingpong": False, "save_output": True, "audio": ["4", 0]}},
        "6": {"class_type": "SaveAudio", "inputs": {"audio": ["4", 0], "filename_prefix": "vidax/audio"}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    return run_prompt(client, wf)[1]


def test_outputs_of_every_kind(all_outputs):
    items = ComfyUIClient.outputs(all_outputs)
    by_node: dict[str, list[OutputItem]] = {}
    for item in items:
        by_node.setdefault(item.node_id, []).append(item)
    stills = by_node["2"]
    assert [(i.kind, i.filename, i.subfolder, i.type) for i in stills] == [
        ("images", f"still_0000{n}_.png", "vidax", "output") for n in (1, 2, 3)]
    assert all(i.is_image and not i.is_video and not i.animated for i in stills)
    (clip,) = by_node["3"]
    assert (clip.kind, clip.filename, clip.animated, clip.is_video, clip.is_image) == (
        "images", "clip_00001_.mp4", True, True, False)
    (gif,) = by_node["5"]
    assert (gif.kind, gif.filename, gif.format, gif.is_video) == (
        "gifs", "combine_00001-audio.mp4", "video/h264-mp4", True)
    (audio,) = by_node["6"]
    assert (audio.kind, audio.filename, audio.is_video, audio.is_image) == ("audio", "audio_00001_.flac", False, False)
    temps = by_node["7"]
    assert {i.type for i in temps} == {"temp"} and all(i.subfolder == "" and i.is_image for i in temps)
    # "videos" is another custom-node key (not produced by the recorded server): read the same way as "gifs"
    entry = copy.deepcopy(all_outputs)
    entry["outputs"]["5"]["videos"] = entry["outputs"]["5"].pop("gifs")
    (video,) = [i for i in ComfyUIClient.outputs(entry) if i.node_id == "5"]
    assert (video.kind, video.filename, video.is_video) == ("videos", "combine_00001-audio.mp4", True)


def test_download_via_view_honours_subfolder_and_type(client, fake, all_outputs, media, tmp_path):
    items = ComfyUIClient.outputs(all_outputs)
    picked = [next(i for i in items if i.kind == k and i.type == t)
              for k, t in (("images", "output"), ("images", "temp"), ("gifs", "output"), ("audio", "output"))]
    for n, item in enumerate(picked):
        dest = client.download(item, tmp_path / f"{n}{item.extension}")
        assert dest.read_bytes() == (fake.dirs[item.type] / item.subfolder / item.filename).read_bytes()
        assert ("GET", f"/view?filename={item.filename}&subfolder={item.subfolder}&type={item.type}") in [
            (m, requests.utils.unquote(p)) for m, p in fake.requests]
    client.upload(media.png, subfolder="vidax/in")
    dest = client.download(OutputItem("0", "images", "face.png", "vidax/in", "input"), tmp_path / "in.png")
    assert dest.read_bytes() == media.png.read_bytes()
    with pytest.raises(PhaseFailed) as ei:  # same name, wrong subfolder: 404
        client.download(OutputItem("0", "images", "face.png", "vidax/other", "input"), tmp_path / "missing.png")
    assert ei.value.code == "COMFYUI_OUTPUT_MISSING"
    assert not (tmp_path / "missing.png").exists() and not list(tmp_path.glob(".*.part"))


# --------------------------------------------------------------------------- the phase, end to end


@pytest.fixture
def comfy_settings(tmp_path, media, fake):
    return load_settings(env={
        "VIDAX_RUNS_DIR": str(tmp_path / "runs"),
        "VIDAX_INPUT_ROOTS": f"{media.dir}:{WORKFLOWS}",
        "VIDAX_API_KEY": KEY,
        "VIDAX_ASSETS_CONFIG": str(tmp_path / "assets.json"),
        "VIDAX_LIPSYNC_PROVIDERS": str(tmp_path / "lipsync.providers.json"),
        "VIDAX_COMFYUI_URL": fake.url,
    }, cwd=tmp_path)


@pytest.fixture
def vx(comfy_settings):
    v = Vidax(comfy_settings, executor="inline")
    yield v
    v.close()


def comfy_job(workflow, params=None, fps=25, timeout_s=60):
    job = simple_job(fps=fps)
    job["comfyui"] = {"workflow": workflow, "params": params or {}, "timeout_s": timeout_s}
    return job


def execute(vx, job) -> dict:
    run_id = vx.create_run(job)["run_id"]
    vx.start_run(run_id)  # inline: the run is over when this returns
    return vx.status(run_id)


def test_video_output_becomes_output_mp4_and_a_real_final(vx, fake, media):
    st = execute(vx, comfy_job(str(WORKFLOWS / "test_video.json"),
                               {"seed": 7, "frames": 30, "fps": 10, "format": "mp4"}))
    run_id, workdir = st["run_id"], Path(st["workdir"])
    assert (st["run_status"], st["exit_status"]) == ("completed", "success"), st
    comfy = st["phases"]["comfyui"]
    assert comfy["status"] == "completed"
    assert comfy["outputs"]["video"] == "comfyui/output.mp4"
    assert comfy["outputs"]["source"] == "test_video_7_00001_.mp4"
    info = probe(workdir / "comfyui" / "output.mp4")
    assert info.vcodec == "h264" and (info.width, info.height) == (256, 256) and abs(info.duration - 3.0) < 0.05
    assert_final_mp4(workdir / "final.mp4", AUDIO_SECONDS, fps=25)

    (upload,) = fake.uploads
    assert (upload.name, upload.subfolder, upload.data) == ("image.png", f"vidax/{run_id}",
                                                            (workdir / "inputs" / "image.png").read_bytes())
    assert upload.data == media.png.read_bytes()  # the prepared copy of inputs.image
    posted = fake.posted[-1]
    assert posted["extra_data"] == {"vidax_run_id": run_id}
    assert posted["prompt"]["1"]["inputs"]["image"] == f"vidax/{run_id}/image.png"
    assert posted["prompt"]["2"]["inputs"]["seed"] == 7
    assert json.loads((workdir / "comfyui" / "workflow.json").read_text()) == posted["prompt"]
    events = [(e["event"], e.get("phase")) for e in read_events(workdir)]
    for event in ("comfyui.uploaded", "comfyui.submitted", "phase.progress", "comfyui.completed"):
        assert (event, "comfyui") in events
    submitted = next(e for e in read_events(workdir) if e["event"] == "comfyui.submitted")
    assert submitted["data"]["websocket"] is True


def test_webm_output_is_transcoded_to_mp4(vx):
    st = execute(vx, comfy_job(str(WORKFLOWS / "test_video.json"),
                               {"seed": 3, "frames": 20, "fps": 10, "format": "webm"}))
    workdir = Path(st["workdir"])
    assert st["exit_status"] == "success", st
    assert st["phases"]["comfyui"]["outputs"]["source"] == "test_video_3_00001_.webm"
    info = probe(workdir / "comfyui" / "output.mp4")
    assert info.vcodec == "h264" and "mp4" in info.format and abs(info.duration - 2.0) < 0.1
    assert sorted(p.name for p in (workdir / "comfyui").iterdir()) == ["output.mp4", "workflow.json"]
    assert_final_mp4(workdir / "final.mp4", AUDIO_SECONDS)


def test_png_frames_become_numbered_frames_and_final_at_encode_fps(vx):
    st = execute(vx, comfy_job(str(WORKFLOWS / "test_frames.json"), {"seed": 5, "frames": 6}, fps=12))
    workdir = Path(st["workdir"])
    assert st["exit_status"] == "success", st
    outputs = st["phases"]["comfyui"]["outputs"]
    assert outputs["frames"] == "frames/%06d.png" and outputs["count"] == 6 and outputs["fps"] == 12
    # the SaveImage outputs only: PreviewImage's temp copies are left out
    assert sorted(p.name for p in (workdir / "frames").iterdir()) == [f"{n:06d}.png" for n in range(1, 7)]
    assert probe(workdir / "frames" / "000001.png").width == 128
    assert_final_mp4(workdir / "final.mp4", AUDIO_SECONDS, fps=12)


ANIMATION = {"1": {"class_type": "LoadImage", "inputs": {"image": "{{inputs.image}}"}},
             "2": {"class_type": "VidaxTestFrames", "inputs": {"image": ["1", 0], "count": 8, "width": 64,
                                                               "height": 48, "seed": 2}}}


def test_animated_webp_output_becomes_a_video(vx):
    wf = {**ANIMATION, "3": {"class_type": "SaveAnimatedWEBP", "inputs": {
        "images": ["2", 0], "filename_prefix": "vidax/anim", "fps": 8.0, "lossless": False, "quality": 80,
        "method": "default"}}}
    st = execute(vx, comfy_job(wf))
    assert st["exit_status"] == "success", st["phases"]["comfyui"]
    assert st["phases"]["comfyui"]["outputs"]["video"] == "comfyui/output.mp4"
    info = probe(Path(st["workdir"]) / "comfyui" / "output.mp4")
    assert info.vcodec == "h264" and abs(info.duration - 1.0) < 0.15


def test_animated_png_output_becomes_a_video(vx):
    wf = {**ANIMATION, "3": {"class_type": "SaveAnimatedPNG", "inputs": {
        "images": ["2", 0], "filename_prefix": "vidax/apng", "fps": 8.0, "compress_level": 4}}}
    st = execute(vx, comfy_job(wf))
    assert st["exit_status"] == "success", st["phases"]["comfyui"]
    assert st["phases"]["comfyui"]["outputs"].get("video") == "comfyui/output.mp4", st["phases"]["comfyui"]


def test_placeholders_are_bound_with_their_types(vx, fake):
    combine = {"class_type": "VidaxTestVideoCombine", "inputs": {
        "images": ["2", 0], "frame_rate": "{{rate}}", "loop_count": 0, "format": "video/h264-mp4",
        "filename_prefix": "vidax/{{name}}_noaudio", "pingpong": False, "save_output": True}}
    wf = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "{{inputs.image}}"}},
        "2": {"class_type": "VidaxTestFrames", "inputs": {"image": ["1", 0], "count": "{{count}}", "width": 64,
                                                          "height": 64, "seed": "{{seed}}"}},
        "3": {"class_type": "LoadAudio", "inputs": {"audio": "{{inputs.audio}}"}},
        "4": combine,
        "5": {**combine, "inputs": {**combine["inputs"], "filename_prefix": "vidax/{{name}}_{{seed}}",
                                    "pingpong": "{{pingpong}}", "save_output": "{{save}}", "audio": ["3", 0]}},
    }
    params = {"count": 10, "seed": 7, "rate": 12.5, "name": "clip", "pingpong": True, "save": True}
    st = execute(vx, comfy_job(wf, params))
    run_id, workdir = st["run_id"], Path(st["workdir"])
    assert st["exit_status"] == "success", st
    sent = fake.posted[-1]["prompt"]
    assert sent["1"]["inputs"]["image"] == f"vidax/{run_id}/image.png"
    assert sent["3"]["inputs"]["audio"] == f"vidax/{run_id}/audio.wav"
    got = sent["5"]["inputs"]
    assert (got["frame_rate"], got["pingpong"], got["save_output"], got["filename_prefix"]) == (
        12.5, True, True, "vidax/clip_7")
    assert type(got["frame_rate"]) is float and type(got["pingpong"]) is bool
    assert type(sent["2"]["inputs"]["count"]) is int and sent["2"]["inputs"]["count"] == 10
    assert sent["4"]["inputs"]["filename_prefix"] == "vidax/clip_noaudio"
    # two VideoHelperSuite-style outputs: the one with audio wins over node order
    assert st["phases"]["comfyui"]["outputs"]["source"] == "clip_7_00001-audio.mp4"
    info = probe(workdir / "comfyui" / "output.mp4")
    assert info.has_audio and info.vcodec == "h264"
    assert_final_mp4(workdir / "final.mp4", AUDIO_SECONDS)


def test_unbound_placeholder_is_a_validation_error_at_create_run(vx, fake, tmp_path):
    wf = {"1": video_node(frames="{{frames}}", seed="{{seed}}", image="{{inputs.video}}")}
    with pytest.raises(ValidationError) as ei:
        vx.create_run(comfy_job(wf, {"seed": 1}))
    problems = [d["problem"] for d in ei.value.details if d["field"] == "comfyui.workflow"]
    assert any("{{frames}}" in p and "comfyui.params" in p for p in problems)
    assert any("{{inputs.video}}" in p for p in problems)
    assert not any("{{seed}}" in p for p in problems)
    assert fake.posted == [] and fake.uploads == []
    assert not (tmp_path / "runs").exists() or not [p for p in (tmp_path / "runs").iterdir()
                                                     if not p.name.startswith(".")]


def test_node_error_fails_the_run_with_comfyuis_message(vx):
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": "{{inputs.image}}"}},
          "2": {"class_type": "VidaxTestFail", "inputs": {"message": "CUDA out of memory (fake)",
                                                          "exception_type": "torch.OutOfMemoryError",
                                                          "anything": ["1", 0]}}}
    st = execute(vx, comfy_job(wf))
    assert (st["run_status"], st["exit_status"]) == ("failed", "failed")
    comfy = st["phases"]["comfyui"]
    assert comfy["status"] == "failed"
    assert comfy["error"]["code"] == "COMFYUI_EXECUTION_ERROR"
    assert "node 2 (VidaxTestFail) failed: torch.OutOfMemoryError: CUDA out of memory (fake)" in \
        comfy["error"]["message"]
    assert st["error"]["code"] == "COMFYUI_EXECUTION_ERROR"
    assert st["phases"]["prepare"]["status"] == "completed"
    assert st["phases"]["encode"]["status"] == "queued"
    assert st["final"] is None and not (Path(st["workdir"]) / "final.mp4").exists()


def test_rejected_workflow_fails_the_phase_naming_the_node(vx):
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": "{{inputs.image}}"}},
          "2": video_node(width=2, image=["1", 0])}
    st = execute(vx, comfy_job(wf))
    error = st["phases"]["comfyui"]["error"]
    assert st["exit_status"] == "failed" and error["code"] == "VALIDATION_ERROR"
    assert "comfyui.workflow.2.inputs.width" in error["message"] and "VidaxTestVideo" in error["message"]


def test_timeout_fails_the_phase_and_interrupts_comfyui(vx, fake):
    t0 = time.monotonic()
    st = execute(vx, comfy_job({"1": slow_node(30, steps=300)}, timeout_s=0.5))
    assert time.monotonic() - t0 < 10
    assert st["phases"]["comfyui"]["error"]["code"] == "COMFYUI_TIMEOUT"
    assert st["phases"]["encode"]["status"] == "queued"
    assert fake.interrupts == 1


# --------------------------------------------------------------------------- HTTP and CLI


def http_client(vidax) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(vidax), headers={"X-API-Key": KEY})


def with_comfyui(settings, **kw):
    return attrs.evolve(settings, comfyui=ComfyUISettings(**kw))


def assert_error(r, status, code):
    assert r.status_code == status, r.text
    assert r.json["ok"] is False and r.json["error"]["code"] == code
    return r.json["error"]["message"]


def test_job_start_with_comfyui_down_is_424(settings):
    with Vidax(with_comfyui(settings, url=dead_url()), executor="inline") as vidax:
        api = http_client(vidax)
        job = comfy_job({"1": video_node()})
        r = api.simulate_post("/jobs", json=job)
        assert r.status_code == 202, r.text
        run_id = r.json["run_id"]
        message = assert_error(api.simulate_post(f"/jobs/{run_id}/start"), 424, "COMFYUI_UNAVAILABLE")
        assert "auto_start is off" in message
        assert api.simulate_get(f"/jobs/{run_id}").json["run_status"] == "queued"
        with pytest.raises(ComfyUIUnavailable):
            vidax.start_run(run_id)
        # a job without ComfyUI does not need it
        assert api.simulate_post(f"/jobs/{api.simulate_post('/jobs', json=simple_job()).json['run_id']}/start"
                                 ).status_code == 202


def test_job_start_when_comfyui_never_becomes_healthy_is_424_timeout(settings, started):
    port = free_port()
    comfy = with_comfyui(settings, url=f"http://127.0.0.1:{port}", auto_start=True, start_timeout_s=1.0,
                         command=fake_command(port, "--never-healthy", "--start-log", str(started)))
    with Vidax(comfy, executor="inline") as vidax:
        api = http_client(vidax)
        run_id = api.simulate_post("/jobs", json=comfy_job({"1": video_node()})).json["run_id"]
        assert_error(api.simulate_post(f"/jobs/{run_id}/start"), 424, "COMFYUI_TIMEOUT")
    assert len(lines(started)) == 1 and gone(int(lines(started)[0]))


def test_job_start_auto_starts_comfyui_then_runs(settings, tmp_path, started):
    port = free_port()
    comfy = with_comfyui(settings, url=f"http://127.0.0.1:{port}", auto_start=True, start_timeout_s=30,
                         command=fake_command(port, "--start-log", str(started), "--output-dir",
                                              str(tmp_path / "comfy")))
    with Vidax(comfy, executor="inline") as vidax:
        try:
            api = http_client(vidax)
            run_id = api.simulate_post("/jobs", json=comfy_job({"1": video_node(frames=10)})).json["run_id"]
            r = api.simulate_post(f"/jobs/{run_id}/start")
            assert r.status_code == 202, r.text
            assert len(lines(started)) == 1
            assert api.simulate_get(f"/jobs/{run_id}").json["exit_status"] == "success"
            health = api.simulate_get("/comfyui/health").json
            assert health["ok"] is True and health["started_by_vidax"] is True
        finally:
            assert vidax.comfyui_stop()["stopped"] is True


def test_comfyui_endpoints(settings, fake):
    with Vidax(with_comfyui(settings, url=fake.url), executor="inline") as vidax:
        api = http_client(vidax)
        r = api.simulate_post("/comfyui/start")
        assert r.status_code == 202
        assert r.json == {"ok": True, "status": "ready", "url": fake.url, "started": False, "pid": None}
        health = api.simulate_get("/comfyui/health").json
        assert health["ok"] is True and health["version"] == "0.3.64" and health["started_by_vidax"] is False
    with Vidax(with_comfyui(settings, url=dead_url()), executor="inline") as vidax:
        health = http_client(vidax).simulate_get("/comfyui/health")
        assert health.status_code == 200 and health.json["ok"] is False and health.json["reason"]


@pytest.mark.parametrize("case", ["auto-start-off", "never-healthy", "exits"])
def test_comfyui_start_failure_is_500(settings, started, case):
    port = free_port()
    kw = {"url": f"http://127.0.0.1:{port}", "auto_start": case != "auto-start-off", "start_timeout_s": 1.0,
          "command": fake_command(port, "--start-log", str(started),
                                  *({"never-healthy": ["--never-healthy"], "exits": ["--exit-code", "4"]}.get(case,
                                                                                                             [])))}
    with Vidax(with_comfyui(settings, **kw), executor="inline") as vidax:
        r = http_client(vidax).simulate_post("/comfyui/start")
    if case == "never-healthy":
        assert_error(r, 500, "COMFYUI_TIMEOUT")
    else:
        message = assert_error(r, 500, "COMFYUI_START_FAILED")
        if case == "exits":
            assert "No module named 'torchvision'" in message
        else:
            assert lines(started) == []
    assert all(gone(int(pid)) for pid in lines(started))


def vidax_cli(*args, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VIDAX_")}
    return subprocess.run([sys.executable, "-c", "import sys; from vidax_core.cli import main; sys.exit(main())",
                           *args], env={**clean, **env}, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_cli_comfyui_health_exit_codes(fake, tmp_path):
    env = {"VIDAX_RUNS_DIR": str(tmp_path / "runs")}
    ok = vidax_cli("comfyui", "health", env={**env, "VIDAX_COMFYUI_URL": fake.url}, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True and json.loads(ok.stdout)["version"] == "0.3.64"
    down = vidax_cli("comfyui", "health", env={**env, "VIDAX_COMFYUI_URL": dead_url()}, cwd=tmp_path)
    assert down.returncode == 1
    assert json.loads(down.stdout)["ok"] is False and json.loads(down.stdout)["reason"]
    start = vidax_cli("comfyui", "start", env={**env, "VIDAX_COMFYUI_URL": dead_url()}, cwd=tmp_path)
    assert start.returncode == 1 and "COMFYUI_START_FAILED" in start.stderr
