"""Shared fixtures: real media made with ffmpeg, settings in a temp folder, a fresh plugin manager.

Unit tests do not load third-party plugins from entry points (a developer's installed plugins must not leak
in); the tests that mean to load them set it explicitly.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import vidax_core.plugins
from vidax_core import Vidax
from vidax_core.config import load_settings
from vidax_core.media import ffmpeg_exe

AUDIO_SECONDS = 3.0


def pytest_configure(config):
    vidax_core.plugins.LOAD_ENTRY_POINTS = False


def ffmpeg(*args: str) -> None:
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")


class Media:
    """Small real media files (made once per session)."""

    def __init__(self, root: Path):
        self.dir = root
        self.wav = root / "voice.wav"
        self.mp3 = root / "voice.mp3"
        self.flac = root / "voice.flac"
        self.stereo_wav = root / "stereo.wav"
        self.png = root / "face.png"
        self.odd_png = root / "odd.png"
        self.mp4 = root / "clip.mp4"
        self.short_mp4 = root / "short.mp4"
        self.webm = root / "clip.webm"
        self.garbage_wav = root / "garbage.wav"
        self.xyz = root / "voice.xyz"
        self.text = root / "notes.txt"

    def make(self) -> Media:
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        s = AUDIO_SECONDS
        ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={s}", "-ac", "1",
               "-c:a", "pcm_s16le", str(self.wav))
        ffmpeg("-i", str(self.wav), "-c:a", "libmp3lame", "-b:a", "128k", str(self.mp3))
        ffmpeg("-i", str(self.wav), "-c:a", "flac", str(self.flac))
        ffmpeg("-f", "lavfi", "-i", f"sine=frequency=330:sample_rate=44100:duration={s}", "-ac", "2",
               "-c:a", "pcm_s16le", str(self.stereo_wav))
        ffmpeg("-f", "lavfi", "-i", "color=c=0x3366cc:s=256x256:d=1", "-frames:v", "1", str(self.png))
        ffmpeg("-f", "lavfi", "-i", "color=c=0xcc6633:s=255x251:d=1", "-frames:v", "1", str(self.odd_png))
        ffmpeg("-f", "lavfi", "-i", f"testsrc=size=256x256:rate=25:duration={s}", "-c:v", "libx264",
               "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(self.mp4))
        ffmpeg("-f", "lavfi", "-i", "testsrc=size=256x256:rate=25:duration=1.5", "-c:v", "libx264",
               "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(self.short_mp4))
        ffmpeg("-f", "lavfi", "-i", "testsrc=size=128x128:rate=25:duration=2", "-c:v", "libvpx-vp9",
               "-deadline", "realtime", str(self.webm))
        self.garbage_wav.write_bytes(b"RIFF" + os.urandom(4096))
        self.xyz.write_bytes(self.wav.read_bytes())
        self.text.write_text("not media\n")
        return self


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> Media:
    return Media(tmp_path_factory.mktemp("media")).make()


@pytest.fixture
def settings(tmp_path, media):
    """Settings for a VIDAX in ``tmp_path`` whose input root is the media folder."""
    return load_settings(env={
        "VIDAX_RUNS_DIR": str(tmp_path / "runs"),
        "VIDAX_INPUT_ROOTS": f"{media.dir}:{tmp_path / 'inputs'}",
        "VIDAX_API_KEY": "test-key-0123456789",
        "VIDAX_ASSETS_CONFIG": str(tmp_path / "assets.json"),
        "VIDAX_LIPSYNC_PROVIDERS": str(tmp_path / "lipsync.providers.json"),
    }, cwd=tmp_path)


@pytest.fixture
def vidax(settings):
    """A Vidax with the builtin plugins and the default thread-pool executor."""
    vx = Vidax(settings)
    yield vx
    vx.close()


@pytest.fixture
def inline_vidax(settings):
    """A Vidax whose runs execute inside ``start_run`` (deterministic for runner tests)."""
    vx = Vidax(settings, executor="inline")
    yield vx
    vx.close()


def simple_job(audio="voice.wav", image="face.png", video=None, fps=25, **sections) -> dict:
    """An image (or video) + audio job without ComfyUI."""
    inputs = {"audio": audio}
    if image is not None:
        inputs["image"] = image
    if video is not None:
        inputs["video"] = video
    job = {"inputs": inputs, "encode": {"fps": fps, "crf": 23, "preset": "ultrafast", "audio_bitrate": "96k"}}
    job.update(sections)
    return job
