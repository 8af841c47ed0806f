"""The ``stabilize`` phase with real ffmpeg: a shaky clip comes out steadier, frame for frame, and a failing
ffmpeg is reported with its command line and stderr (or passed through when the job allows it).

The shaky clip is a 256x256 window jumping around a larger still test pattern (ffmpeg ``crop`` with per-frame
expressions). Motion is measured without numpy: the mean absolute difference of consecutive frames,
downscaled to 64x64 grayscale by PyAV.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import attrs
import av
import pytest
from conftest import ffmpeg
from helpers import assert_final_mp4
from helpers import read_events
from helpers import simple_job

from vidax_core import BasePhase
from vidax_core import Vidax
from vidax_core import hookimpl
from vidax_core.media import ffmpeg_exe
from vidax_core.media import probe
from vidax_core.plugins import get_plugin_manager

FPS = 25
SECONDS = 3


@pytest.fixture(scope="module")
def shaky_clip(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("shaky")
    pattern = d / "pattern.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=480x480:rate=1", "-frames:v", "1", str(pattern))
    clip = d / "shaky.mp4"
    # x and y jump by up to ~20 px from one frame to the next around the middle of the pattern
    shake = "crop=256:256:x='112+10*sin(n*2.1)+4*sin(n*0.37)':y='112+10*cos(n*1.7)',format=yuv420p"
    ffmpeg("-loop", "1", "-framerate", str(FPS), "-i", str(pattern), "-t", str(SECONDS), "-vf", shake,
           "-c:v", "libx264", "-preset", "ultrafast", "-crf", "12", str(clip))
    return clip


@pytest.fixture
def clip(shaky_clip, tmp_path) -> Path:
    """The shaky clip inside an allowed input root of the ``settings`` fixture."""
    inputs = tmp_path / "inputs"
    inputs.mkdir(exist_ok=True)
    return Path(shutil.copy(shaky_clip, inputs / "shaky.mp4"))


def gray_frames(path, size: int = 64) -> list[bytes]:
    frames = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            plane = frame.reformat(width=size, height=size, format="gray").planes[0]
            raw = bytes(plane)
            frames.append(b"".join(raw[r * plane.line_size:r * plane.line_size + size] for r in range(size)))
    return frames


def motion(path) -> float:
    """Mean absolute difference of consecutive frames (0..255), averaged over the clip."""
    frames = gray_frames(path)
    assert len(frames) > 1
    pairs = zip(frames[:-1], frames[1:], strict=True)
    diffs = [sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a) for a, b in pairs]
    return sum(diffs) / len(diffs)


def frame_count(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def run_job(vx, job) -> dict:
    run_id = vx.create_run(job)["run_id"]
    vx.start_run(run_id)
    return vx.status(run_id)


def stabilize_job(clip: Path, **stabilize) -> dict:
    return simple_job(image=None, video=str(clip), fps=FPS, stabilize=stabilize)


# --------------------------------------------------------------------------- it steadies


@pytest.mark.parametrize("method", ["vidstab", "deshake"])
def test_stabilized_video_keeps_frames_and_length_and_moves_less(inline_vidax, clip, method):
    st = run_job(inline_vidax, stabilize_job(clip, method=method, smoothing=10))
    assert st["run_status"] == "completed" and st["exit_status"] == "success", st
    phase = st["phases"]["stabilize"]
    assert phase["status"] == "completed", phase
    assert phase["outputs"]["video"] == "stabilize/output.mp4"
    assert phase["outputs"]["method"] == method
    wd = Path(st["workdir"])
    source, out = wd / "prepare" / "source.mp4", wd / "stabilize" / "output.mp4"
    assert out.is_file()

    assert frame_count(out) == frame_count(source) == FPS * SECONDS
    info_in, info_out = probe(source), probe(out)
    assert abs(info_out.duration - info_in.duration) <= 0.05, (info_in, info_out)
    assert abs(info_out.fps - info_in.fps) < 0.01
    assert info_out.vcodec == "h264" and info_out.pix_fmt == "yuv420p"

    before, after = motion(source), motion(out)
    assert after < 0.8 * before, f"{method}: motion {before:.2f} -> {after:.2f}"

    trf = wd / "stabilize" / "transforms.trf"
    if method == "vidstab":
        assert trf.is_file() and trf.stat().st_size > 0
    else:
        assert not trf.exists()
    # the stabilized video is what final.mp4 is made from
    assert st["phases"]["encode"]["outputs"]["source"] == "stabilize/output.mp4"
    assert_final_mp4(st["final"], 3.0, fps=FPS)


class SoundtrackPhase(BasePhase):
    """A third-party phase before stabilize that hands on the video with an AAC soundtrack (as ComfyUI may)."""

    name = "soundtrack"
    order = 250

    def enabled(self, job):
        return True

    def run(self, ctx):
        out = ctx.output("with-sound.mp4")
        ffmpeg("-i", str(ctx.input_video()), "-f", "lavfi", "-i", "sine=frequency=220:duration=3", "-map", "0:v",
               "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", str(out))
        return {"video": ctx.relative(out)}


class SoundtrackPlugin:
    __name__ = "soundtrack_plugin"

    @hookimpl
    def register_phases(self, register):
        register(SoundtrackPhase())


def test_stabilize_keeps_the_audio_of_its_input(settings, clip):
    vx = Vidax(settings, plugin_manager=get_plugin_manager(extra=[SoundtrackPlugin()]), executor="inline")
    try:
        st = run_job(vx, stabilize_job(clip, method="vidstab"))
    finally:
        vx.close()
    assert st["exit_status"] == "success", st
    wd = Path(st["workdir"])
    before, after = probe(wd / "soundtrack" / "with-sound.mp4"), probe(wd / "stabilize" / "output.mp4")
    assert after.has_audio and after.acodec == before.acodec == "aac"
    assert after.sample_rate == before.sample_rate
    assert abs(after.duration - before.duration) <= 0.05
    assert frame_count(wd / "stabilize" / "output.mp4") == FPS * SECONDS


# --------------------------------------------------------------------------- a failing ffmpeg


@pytest.fixture
def failing_vidstab_ffmpeg(tmp_path) -> Path:
    """An ffmpeg that fails every vidstab pass with a message on stderr and runs the real one otherwise."""
    script = tmp_path / "bin" / "ffmpeg"
    script.parent.mkdir()
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        "  *vidstabdetect*) echo 'fake-ffmpeg: vidstab exploded on frame 7' >&2;"
        " echo 'Conversion failed!' >&2; exit 1;;\n"
        "esac\n"
        f'exec "{ffmpeg_exe()}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


@pytest.fixture
def failing_vx(settings, failing_vidstab_ffmpeg):
    vx = Vidax(attrs.evolve(settings, ffmpeg=str(failing_vidstab_ffmpeg)), executor="inline")
    yield vx
    vx.close()


def test_failing_ffmpeg_fails_the_phase_with_command_line_and_stderr(failing_vx, clip, failing_vidstab_ffmpeg):
    st = run_job(failing_vx, stabilize_job(clip, method="vidstab"))
    assert st["run_status"] == "failed" and st["exit_status"] == "failed", st
    phase = st["phases"]["stabilize"]
    assert phase["status"] == "failed"
    assert phase["error"]["code"] == "FFMPEG_FAILED"
    assert "vidstabdetect" in phase["error"]["message"]
    assert str(failing_vidstab_ffmpeg) in phase["error"]["message"]
    assert "vidstab exploded on frame 7" in phase["error"]["message"]
    assert st["error"]["code"] == "FFMPEG_FAILED"
    # later phases never ran, and there is no final.mp4
    assert st["phases"]["encode"]["status"] == "queued"
    assert st["final"] is None
    assert not (Path(st["workdir"]) / "final.mp4").exists()

    failed = [e for e in read_events(st["workdir"]) if e["event"] == "phase.failed"]
    assert [e["phase"] for e in failed] == ["stabilize"]
    ev = failed[0]
    assert "vidstab exploded on frame 7" in ev["message"]
    details = ev["data"]["details"]
    assert details["command"][0] == str(failing_vidstab_ffmpeg)
    assert any("vidstabdetect" in a for a in details["command"])
    assert details["returncode"] == 1
    assert details["stderr_tail"][-2:] == ["fake-ffmpeg: vidstab exploded on frame 7", "Conversion failed!"]
    assert ev["data"]["code"] == "FFMPEG_FAILED"


def test_failing_ffmpeg_with_passthrough_goes_on_with_the_unstabilized_video(failing_vx, clip):
    st = run_job(failing_vx, stabilize_job(clip, method="vidstab", allow_passthrough=True))
    assert st["run_status"] == "completed" and st["exit_status"] == "success", st
    assert st["phases"]["stabilize"]["status"] == "failed"
    assert st["phases"]["stabilize"]["error"]["code"] == "FFMPEG_FAILED"
    assert st["phases"]["encode"]["outputs"]["source"] == "prepare/source.mp4"
    assert not (Path(st["workdir"]) / "stabilize" / "output.mp4").exists()
    assert_final_mp4(st["final"], 3.0, fps=FPS)
    events = [e["event"] for e in read_events(st["workdir"]) if e.get("phase") == "stabilize"]
    assert events[-2:] == ["phase.failed", "phase.passthrough"]
    # the final video is the shaky one: it still moves as much as the source
    source = Path(st["workdir"]) / "prepare" / "source.mp4"
    assert motion(st["final"]) > 0.8 * motion(source)


def test_image_job_is_stabilized_from_the_prepared_source(inline_vidax):
    """An image job is made into prepare/source.mp4 first, so stabilize always has a video to work on."""
    st = run_job(inline_vidax, simple_job(stabilize={"method": "deshake"}))
    assert st["exit_status"] == "success", st
    assert st["phases"]["stabilize"]["status"] == "completed"
    assert os.path.isfile(Path(st["workdir"]) / "stabilize" / "output.mp4")
