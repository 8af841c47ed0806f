"""End-to-end: the real ``vidax`` command, real gunicorn on loopback, real ffmpeg, real files.

One server (2 workers) is shared by most tests; the concurrency test adds a second server process on the same
runs folder, and the crash scenario (a module fixture shared by the tests of what a crash must and must not leave
behind) kills and restarts a server of its own. The long run (concurrency, crash recovery) is a 640x360 moving test
pattern with as long an audio, encoded with preset ``slow`` so that ``encode`` lasts seconds on two cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import AUDIO_SECONDS
from conftest import ffmpeg
from e2e_server import VIDAX
from e2e_server import VidaxServer
from e2e_server import free_port
from e2e_server import port_open
from e2e_server import server  # noqa: F401  (fixture)
from e2e_server import vidax_env
from e2e_server import write_config
from helpers import assert_final_mp4
from helpers import read_events
from helpers import simple_job

pytestmark = pytest.mark.e2e

RUN_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{10}$")
LONG_SECONDS = 16.0
LIFECYCLE = {"run.created", "run.started", "run.resumed", "run.completed", "run.failed",
             "phase.started", "phase.completed", "phase.skipped", "phase.failed"}


# --------------------------------------------------------------------------- fixtures and helpers


class LongMedia:
    def __init__(self, root: Path):
        self.dir = root
        self.wav = root / "long.wav"
        self.mp4 = root / "motion.mp4"
        ffmpeg("-f", "lavfi", "-i", f"sine=frequency=220:sample_rate=48000:duration={LONG_SECONDS}", "-ac", "1",
               "-c:a", "pcm_s16le", str(self.wav))
        ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={LONG_SECONDS}", "-c:v", "libx264",
               "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(self.mp4))

    def job(self, **meta) -> dict:
        """A run whose encode lasts seconds: moving 640x360 video, preset slow."""
        return {"inputs": {"audio": str(self.wav), "video": str(self.mp4)},
                "encode": {"fps": 25, "crf": 23, "preset": "slow", "audio_bitrate": "96k"},
                "metadata": meta}


@pytest.fixture(scope="module")
def long_media(tmp_path_factory) -> LongMedia:
    return LongMedia(tmp_path_factory.mktemp("long-media"))


@pytest.fixture(scope="module")
def api(tmp_path_factory, media, long_media):
    """One real server (2 workers x 4 threads) shared by the tests that do not kill it."""
    srv = VidaxServer(tmp_path_factory.mktemp("e2e-api"), [media.dir, long_media.dir], workers=2, threads=4)
    try:
        yield srv.start()
    finally:
        srv.close()


def create(srv: VidaxServer, job: dict) -> dict:
    r = srv.post("/jobs", job)
    assert r.status_code == 202, f"{r.status_code} {r.text}\n{srv.log_tail()}"
    return r.json()


def start(srv: VidaxServer, run_id: str) -> dict:
    r = srv.post(f"/jobs/{run_id}/start")
    assert r.status_code == 202, f"{r.status_code} {r.text}\n{srv.log_tail()}"
    return r.json()


def error_of(r) -> dict:
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    body = r.json()
    assert body["ok"] is False and set(body["error"]) >= {"code", "message"}, body
    return body["error"]


def lifecycle(events: list[dict]) -> list[tuple]:
    return [(e["event"], e.get("phase")) for e in events if e["event"] in LIFECYCLE]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def temp_leftovers(workdir: Path) -> list[str]:
    """Temp files (``*.part``, ``*.tmp``, hidden ``*.mp4``) anywhere in the workdir."""
    out = []
    for p in Path(workdir).rglob("*"):
        name = p.name
        if p.is_file() and (name.endswith((".part", ".tmp")) or (name.startswith(".") and ".mp4" in name)):
            out.append(str(p.relative_to(workdir)))
    return out


def gray_frames(path: Path) -> list[tuple[float, bytes]]:
    """(time, luma bytes) of every frame of the video stream."""
    import av

    frames = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            g = f.reformat(format="gray")
            plane, w = g.planes[0], g.width
            buf = bytes(plane)
            frames.append((float(f.time), b"".join(buf[i * plane.line_size:i * plane.line_size + w]
                                                   for i in range(g.height))))
    return frames


def mean_abs_diff(a: bytes, b: bytes) -> float:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def run_cli(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run ``vidax ARGS`` in a session of its own; the whole group is killed if it outlives ``timeout``."""
    proc = subprocess.Popen([str(VIDAX), *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"vidax {' '.join(args)} still ran after {timeout}s:\n{out}\n{err}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def image_run(api):
    """An image + audio run (encode.fps 20) through the shared server, started and waited for."""
    job = simple_job(fps=20)
    r = api.post("/jobs", job)
    created = r.json()
    if r.status_code != 202:
        return {"job": job, "create": r, "created": created, "start": None, "status": None}
    r_start = api.post(f"/jobs/{created['run_id']}/start")
    st = api.wait_run(created["run_id"]) if r_start.status_code == 202 else None
    return {"job": job, "create": r, "created": created, "start": r_start, "status": st}


# --------------------------------------------------------------------------- 1. image + audio


def test_image_and_audio_job_through_gunicorn(api, image_run):
    r = image_run["create"]
    assert r.status_code == 202, f"{r.status_code} {r.text}\n{api.log_tail()}"
    created = image_run["created"]
    run_id, workdir = created["run_id"], Path(created["workdir"])
    assert RUN_ID_RE.match(run_id), created
    assert created["status"] == "queued"
    assert workdir == api.runs_dir / run_id and workdir.is_absolute()
    assert Path(created["manifest"]) == workdir / "manifest.json"

    r = image_run["start"]
    assert r.status_code == 202, f"{r.status_code} {r.text}\n{api.log_tail()}"
    assert r.json() == {"ok": True, "run_id": run_id, "run_status": "running"}

    st = image_run["status"]
    assert (st["run_status"], st["exit_status"], st["error"]) == ("completed", "success", None), st
    final = workdir / "final.mp4"
    assert st["final"] == str(final)
    assert st["manifest"] == str(workdir / "manifest.json") and st["workdir"] == str(workdir)
    assert_final_mp4(final, AUDIO_SECONDS, fps=20)

    assert list(st["phases"]) == ["prepare", "comfyui", "stabilize", "lipsync", "encode"]
    assert {n: p["status"] for n, p in st["phases"].items()} == {
        "prepare": "completed", "comfyui": "skipped", "stabilize": "skipped", "lipsync": "skipped",
        "encode": "completed"}
    for name in ("prepare", "encode"):
        phase = st["phases"][name]
        assert phase["started_at"] and phase["finished_at"] and phase["error"] is None, phase

    events = read_events(workdir)
    assert all(e["run_id"] == run_id and e["ts"].endswith("Z") for e in events), events
    assert lifecycle(events) == [
        ("run.created", None), ("run.started", None),
        ("phase.started", "prepare"), ("phase.completed", "prepare"),
        ("phase.skipped", "comfyui"), ("phase.skipped", "stabilize"), ("phase.skipped", "lipsync"),
        ("phase.started", "encode"), ("phase.completed", "encode"),
        ("run.completed", None),
    ]
    assert events[-1]["data"]["exit_status"] == "success"

    assert temp_leftovers(workdir) == []
    assert sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*.mp4")) == ["final.mp4",
                                                                                  "prepare/source.mp4"]

    r = api.get(f"/jobs/{run_id}/manifest")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json"), r.headers
    on_disk = json.loads((workdir / "manifest.json").read_text())
    assert r.json() == on_disk
    assert on_disk["run_status"] == "completed" and on_disk["outputs"]["final"] == str(final)
    assert on_disk["job"]["encode"]["fps"] == 20

    r = api.get(f"/jobs/{run_id}/logs")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain"), r.headers
    assert r.text == (workdir / "logs" / "events.jsonl").read_text()


# --------------------------------------------------------------------------- 2. video + mp3


def test_short_video_and_mp3_holds_the_last_frame(api, media):
    created = create(api, simple_job(audio="voice.mp3", image=None, video="short.mp4", fps=25))
    start(api, created["run_id"])
    st = api.wait_run(created["run_id"])
    assert (st["run_status"], st["exit_status"]) == ("completed", "success"), st
    final = Path(st["final"])
    assert_final_mp4(final, AUDIO_SECONDS, fps=25)

    frames = gray_frames(final)
    # the video stream itself lasts as long as the audio, not the 1.5 s of the clip
    assert abs(len(frames) - AUDIO_SECONDS * 25) <= 1, len(frames)
    assert frames[-1][0] >= AUDIO_SECONDS - 0.1, frames[-1][0]
    last = frames[-1][1]
    moving = mean_abs_diff(frames[5][1], frames[30][1])
    assert moving > 1.0, f"the test clip should move: {moving}"
    held = [t for t, f in frames if t >= 1.6 and mean_abs_diff(f, last) > 0.5]
    assert held == [], f"frames after the clip's end differ from the last one at {held}"
    assert temp_leftovers(Path(st["workdir"])) == []


# --------------------------------------------------------------------------- 3. start after completion


def test_start_after_completion_is_409_and_leaves_final_untouched(api, image_run):
    st = image_run["status"]
    assert st and st["run_status"] == "completed", image_run
    run_id, workdir = st["run_id"], Path(st["workdir"])
    final = workdir / "final.mp4"
    before = (sha256(final), final.stat().st_mtime_ns, (workdir / "manifest.json").read_bytes(),
              (workdir / "logs" / "events.jsonl").read_bytes())

    r = api.post(f"/jobs/{run_id}/start")
    assert r.status_code == 409, f"{r.status_code} {r.text}"
    assert error_of(r)["code"] == "OUTPUT_WRITE_FAILED"

    time.sleep(0.2)
    after = (sha256(final), final.stat().st_mtime_ns, (workdir / "manifest.json").read_bytes(),
             (workdir / "logs" / "events.jsonl").read_bytes())
    assert after == before
    again = api.status(run_id)
    assert (again["run_status"], again["exit_status"], again["final"]) == ("completed", "success", str(final))


# --------------------------------------------------------------------------- 4. concurrent starts


def test_two_concurrent_starts_one_wins(api, server, long_media, tmp_path):  # noqa: F811
    # a second server process on the same runs folder: another process that can see (and start) the run
    peer = server(base=tmp_path / "peer", workers=1, threads=2, roots=[long_media.dir],
                  config={"runs_dir": str(api.runs_dir)})
    created = create(api, long_media.job(test="concurrent"))
    run_id = created["run_id"]
    barrier = threading.Barrier(2)
    results = []

    def go():
        barrier.wait()
        results.append(api.post(f"/jobs/{run_id}/start"))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    st = api.status(run_id)  # read at once: the run (seconds of encode) must still be running
    codes = sorted(r.status_code for r in results)
    assert codes == [202, 409], [(r.status_code, r.text) for r in results]
    won = next(r for r in results if r.status_code == 202)
    lost = next(r for r in results if r.status_code == 409)
    assert won.json() == {"ok": True, "run_id": run_id, "run_status": "running"}
    assert error_of(lost)["code"] == "RUN_IN_PROGRESS"
    assert st["run_status"] == "running", st
    assert not (Path(created["workdir"]) / "final.mp4").exists()

    # another process sees it running (not "interrupted": its owner is alive) and cannot start it either
    r = peer.post(f"/jobs/{run_id}/start")
    assert r.status_code == 409 and error_of(r)["code"] == "RUN_IN_PROGRESS", r.text
    seen = peer.status(run_id)
    assert seen["run_status"] == "running" and seen["error"] is None, seen
    r = api.post(f"/jobs/{run_id}/start")
    assert r.status_code == 409 and error_of(r)["code"] == "RUN_IN_PROGRESS", r.text

    st = api.wait_run(run_id, timeout=90)
    assert (st["run_status"], st["exit_status"], st["attempt"], st["resumed"]) == (
        "completed", "success", 1, False), st
    assert_final_mp4(st["final"], LONG_SECONDS, fps=25)
    events = lifecycle(read_events(created["workdir"]))
    assert events.count(("run.started", None)) == 1 and ("run.failed", None) not in events, events


# --------------------------------------------------------------------------- 5. crash recovery


def wait_for_event(workdir: Path, event: str, phase: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for e in read_events(workdir):
                if e["event"] == event and e.get("phase") == phase:
                    return e
        except json.JSONDecodeError:  # a line being appended
            pass
        time.sleep(0.05)
    raise AssertionError(f"no {event} of {phase} within {timeout}s: {read_events(workdir)}")


@pytest.fixture(scope="module")
def crash(tmp_path_factory, media, long_media):
    """Start a long run, SIGKILL the server's whole process group while ffmpeg encodes, start a new server on
    the same runs folder, look at the run, resume it and wait. Returns what was seen at each step."""
    srv = VidaxServer(tmp_path_factory.mktemp("e2e-crash"), [media.dir, long_media.dir], workers=2, threads=4)
    seen: dict = {}
    try:
        srv.start()
        created = create(srv, long_media.job(test="crash"))
        run_id, workdir = created["run_id"], Path(created["workdir"])
        seen.update(run_id=run_id, workdir=workdir)
        start(srv, run_id)
        wait_for_event(workdir, "phase.progress", "encode")  # ffmpeg is encoding
        seen["before_kill"] = srv.status(run_id)
        seen["old_pid"] = srv.proc.pid
        srv.kill(signal.SIGKILL)  # the whole process group; waits until the group is gone
        seen["alive_after_kill"] = srv.alive()
        time.sleep(0.2)
        seen["escaped"] = srv.escaped()
        srv.kill_escaped()  # by pid: the test must not leak them whatever the verdict
        seen["manifest_after_kill"] = json.loads((workdir / "manifest.json").read_text())
        seen["final_after_kill"] = (workdir / "final.mp4").exists()

        srv.start()  # a new server on the same folder and runs
        seen["new_pid"] = srv.proc.pid
        seen["after_restart"] = srv.status(run_id)
        r = srv.post(f"/jobs/{run_id}/start")
        seen["resume"] = (r.status_code, r.json())
        seen["final_status"] = srv.wait_run(run_id, timeout=90) if r.status_code == 202 else None
        seen["events"] = read_events(workdir)
        seen["leftovers"] = temp_leftovers(workdir)
        seen["log"] = srv.log_tail()
        yield seen
    finally:
        srv.close()


def test_killed_server_run_is_interrupted_then_resumed(crash):
    run_id, workdir = crash["run_id"], crash["workdir"]
    before = crash["before_kill"]
    assert before["run_status"] == "running" and before["phases"]["encode"]["status"] == "running", before
    assert before["phases"]["prepare"]["status"] == "completed"
    assert crash["alive_after_kill"] is False
    assert crash["manifest_after_kill"]["run_status"] == "running"  # the dead server recorded nothing
    assert crash["final_after_kill"] is False
    assert crash["new_pid"] != crash["old_pid"]

    st = crash["after_restart"]
    assert (st["run_status"], st["exit_status"], st["final"]) == ("failed", "failed", None), st
    assert st["error"]["code"] == "RUN_INTERRUPTED", st
    assert st["phases"]["prepare"]["status"] == "completed"
    assert st["phases"]["encode"]["status"] == "failed", st
    assert st["phases"]["encode"]["error"]["code"] == "RUN_INTERRUPTED", st

    assert crash["resume"] == (202, {"ok": True, "run_id": run_id, "run_status": "running"}), crash["log"]
    st = crash["final_status"]
    assert (st["run_status"], st["exit_status"], st["resumed"], st["attempt"], st["error"]) == (
        "completed", "partial", True, 2, None), st
    assert st["phases"]["prepare"]["status"] == "completed"
    assert st["phases"]["encode"]["status"] == "completed" and st["phases"]["encode"]["error"] is None
    assert st["final"] == str(workdir / "final.mp4")
    assert_final_mp4(st["final"], LONG_SECONDS, fps=25)
    manifest = json.loads((workdir / "manifest.json").read_text())
    assert manifest["resumed"] is True and manifest["exit_status"] == "partial" and manifest["attempt"] == 2

    events = crash["events"]
    names = lifecycle(events)
    failed = [e for e in events if e["event"] == "run.failed"]
    assert len(failed) == 1 and failed[0]["data"]["code"] == "RUN_INTERRUPTED", failed
    i = names.index(("run.resumed", None))
    assert names[i - 1] == ("run.started", None)
    assert names.index(("run.failed", None)) < i
    # after the resume only the phase that had not completed runs again
    assert names[i + 1:] == [("phase.started", "encode"), ("phase.completed", "encode"), ("run.completed", None)]
    resumed = next(e for e in events if e["event"] == "run.resumed")
    assert resumed["data"]["kept"] == ["prepare"]
    assert events[-1]["data"]["exit_status"] == "partial"


def test_killing_the_server_group_stops_its_ffmpeg(crash):
    assert crash["escaped"] == {}, f"still running after the server's group was killed: {crash['escaped']}"


def test_resumed_run_leaves_no_temp_files(crash):
    assert crash["final_status"]["run_status"] == "completed"
    assert crash["leftovers"] == []


# --------------------------------------------------------------------------- 6. refusing to serve


def test_serve_without_api_key_exits_before_binding(tmp_path, media):
    write_config(tmp_path, [media.dir])
    port = free_port()
    p = run_cli(["serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"], tmp_path, vidax_env(api_key=None))
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert "VIDAX_API_KEY" in out and "apiKey" in out, out
    assert "Traceback" not in out, out
    assert "Listening at" not in out and "Booting worker" not in out, out
    assert not port_open(port)


def test_serve_with_invalid_config_names_file_and_field(tmp_path, media):
    write_config(tmp_path, [media.dir], comfyui={"start_timeout_s": "soon"})
    port = free_port()
    p = run_cli(["serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"], tmp_path, vidax_env())
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert "vidax.json" in out and "start_timeout_s" in out, out
    assert "Traceback" not in out, out
    assert not port_open(port)


# --------------------------------------------------------------------------- 7. gunicorn, concurrency


def test_real_gunicorn_and_fifty_concurrent_creates(api):
    r = api.get("/health")
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert "gunicorn" in r.headers.get("Server", "").lower(), r.headers

    def make(n):
        return n, api.post("/jobs", simple_job(metadata={"n": n}))

    with ThreadPoolExecutor(max_workers=25) as pool:
        results = list(pool.map(make, range(50)))
    bad = [(n, r.status_code, r.text) for n, r in results if r.status_code != 202]
    assert bad == [], f"{bad}\n{api.log_tail()}"
    ids = [r.json()["run_id"] for _, r in results]
    assert len(set(ids)) == 50 and all(RUN_ID_RE.match(i) for i in ids), ids
    for n, r in results:
        run_id = r.json()["run_id"]
        m = api.get(f"/jobs/{run_id}/manifest")
        assert m.status_code == 200, m.text
        manifest = m.json()
        assert manifest["run_id"] == run_id and manifest["run_status"] == "queued"
        assert manifest["job"]["metadata"] == {"n": n}, (n, manifest["job"])
        assert json.loads((api.runs_dir / run_id / "job.json").read_text())["metadata"] == {"n": n}


# --------------------------------------------------------------------------- 8. vidax run


@pytest.fixture
def run_dir(tmp_path, media) -> Path:
    write_config(tmp_path, [media.dir])
    return tmp_path


def vidax_run(cwd: Path, job) -> subprocess.CompletedProcess:
    path = cwd / "job.json"
    path.write_text(job if isinstance(job, str) else json.dumps(job))
    return run_cli(["run", str(path)], cwd, vidax_env(api_key=None))


def test_vidax_run_completes_and_prints_id_status_and_final(run_dir):
    p = vidax_run(run_dir, simple_job(fps=20))
    assert p.returncode == 0, p.stdout + p.stderr
    ids = set(re.findall(r"\d{8}T\d{6}Z-[0-9a-f]{10}", p.stdout))
    assert len(ids) == 1, p.stdout
    run_id = ids.pop()
    assert re.search(rf"{run_id}: completed \(success\)", p.stdout), p.stdout
    final = run_dir / "runs" / run_id / "final.mp4"
    assert f"final: {final}" in p.stdout, p.stdout
    assert_final_mp4(final, AUDIO_SECONDS, fps=20)
    assert "Traceback" not in p.stderr, p.stderr


@pytest.mark.parametrize("kind", ["invalid_job", "garbage_audio", "not_json"])
def test_vidax_run_refuses_bad_input_with_exit_2(run_dir, kind):
    job, expect = {
        "invalid_job": ({"inputs": {"audio": "voice.wav", "image": "face.png"}, "bogus": 1}, "bogus"),
        "garbage_audio": (simple_job(audio="garbage.wav"), "UNSUPPORTED_FORMAT"),
        "not_json": ('{"inputs": {"audio": "voice.wav",', "not a JSON job"),
    }[kind]
    p = vidax_run(run_dir, job)
    assert p.returncode == 2, p.stdout + p.stderr
    assert expect in p.stderr, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    runs = run_dir / "runs"
    assert not runs.exists() or not [d for d in runs.iterdir() if RUN_ID_RE.match(d.name)]


def test_vidax_version(tmp_path):
    p = run_cli(["--version"], tmp_path, vidax_env(api_key=None))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"vidax {version('vidax')}"
