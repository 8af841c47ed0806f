"""Media facts and the ffmpeg binary: probing with PyAV, running ffmpeg with progress and a clear error.

Phases never build ffmpeg error handling of their own: :func:`run_ffmpeg` raises :class:`PhaseFailed` with
the command line and the tail of ffmpeg's stderr, and reports progress through a callback.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path

from attrs import frozen

from .errors import ConfigError
from .errors import PhaseFailed
from .errors import UnsupportedFormat
from .fsutil import temp_file_beside

AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".m4a", ".aac", ".ogg", ".oga", ".opus")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
STDERR_TAIL_LINES = 25
# the filter that makes any picture encodable as H.264 yuv420p (which needs even width and height)
EVEN_YUV420 = "scale=trunc(iw/2)*2:trunc(ih/2)*2,format=yuv420p"


@frozen
class MediaInfo:
    """What a media file holds, as far as VIDAX cares."""

    format: str
    duration: float | None
    has_video: bool
    has_audio: bool
    vcodec: str | None = None
    pix_fmt: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    acodec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None


def ffmpeg_exe(configured: str | None = None) -> str:
    """The ffmpeg binary: ``configured`` (a path, or a name on PATH) or the one imageio-ffmpeg ships."""
    if configured:
        found = configured if os.sep in configured else shutil.which(configured)
        if not found or not os.access(found, os.X_OK):
            raise ConfigError(f"ffmpeg binary {configured!r} (VIDAX_FFMPEG / \"ffmpeg\") is not an executable")
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def probe(path: str | os.PathLike) -> MediaInfo:
    """Container and first-stream facts of ``path``, read with PyAV.

    :raises UnsupportedFormat: the file is not media PyAV can open.
    """
    import av

    try:
        with av.open(str(path)) as c:
            return _info(c)
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise UnsupportedFormat(f"{Path(path).name} is not a media file VIDAX can read: {_av_reason(exc)}") from None


def _info(c) -> MediaInfo:
    v = c.streams.video[0] if c.streams.video else None
    a = c.streams.audio[0] if c.streams.audio else None
    duration = c.duration / 1_000_000 if c.duration is not None else None
    if duration is None:
        for s in (a, v):
            if s is not None and s.duration is not None:
                duration = float(s.duration * s.time_base)
                break
    rate = (v.average_rate or v.guessed_rate or v.base_rate) if v is not None else None
    return MediaInfo(
        format=c.format.name,
        duration=duration,
        has_video=v is not None,
        has_audio=a is not None,
        vcodec=v.codec_context.name if v is not None else None,
        pix_fmt=(v.codec_context.format.name if v is not None and v.codec_context.format else None),
        width=v.codec_context.width if v is not None else None,
        height=v.codec_context.height if v is not None else None,
        fps=float(rate) if rate else None,
        acodec=a.codec_context.name if a is not None else None,
        sample_rate=a.codec_context.sample_rate if a is not None else None,
        channels=a.codec_context.channels if a is not None else None,
    )


def check_audio(path: str | os.PathLike, field: str = "inputs.audio", check_extension: bool = True) -> MediaInfo:
    """Check that ``path`` has a supported audio extension and really decodes as audio.

    Decodes the first frames only, so a long file costs no more than a short one. ``check_extension=False``
    for files whose name says nothing (fetched from a URL): the decoder alone decides.

    :raises UnsupportedFormat: naming ``field``, the extension list or the decoder's complaint.
    """
    import av

    p = Path(path)
    ext = p.suffix.lower()
    if check_extension and ext not in AUDIO_EXTENSIONS:
        raise UnsupportedFormat(
            f"{field}: audio format {ext or '(no extension)'!r} is not supported; use one of "
            + ", ".join(e.lstrip(".") for e in AUDIO_EXTENSIONS)
        )
    try:
        with av.open(str(p)) as c:
            if not c.streams.audio:
                raise UnsupportedFormat(f"{field}: {p.name} holds no audio stream")
            info = _info(c)
            decoded = 0
            for frame in c.decode(audio=0):
                decoded += frame.samples
                if decoded >= 4096:
                    break
            if decoded == 0:
                raise UnsupportedFormat(f"{field}: {p.name} holds no decodable audio")
            return info
    except UnsupportedFormat:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise UnsupportedFormat(f"{field}: {p.name} does not decode as audio: {_av_reason(exc)}") from None


def audio_duration(path: str | os.PathLike) -> float:
    """The exact length of an audio file in seconds.

    WAV (what ``prepare`` normalizes to) is read from its header; other formats are decoded and their samples
    counted, since compressed formats' container durations are estimates.
    """
    import av

    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        if c.format.name == "wav" and stream.duration is not None:
            return float(stream.duration * stream.time_base)
        samples = sum(frame.samples for frame in c.decode(audio=0))
        return samples / stream.codec_context.sample_rate


def _av_reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # PyAV puts the path into the message; the caller names the file already
    return text.split(": '")[0]


ProgressFn = Callable[[float], None]


def run_ffmpeg(
    args: Sequence[str],
    *,
    ffmpeg: str,
    duration: float | None = None,
    on_progress: ProgressFn | None = None,
    timeout: float | None = None,
    what: str = "ffmpeg",
    cwd: str | os.PathLike | None = None,
) -> None:
    """Run ``ffmpeg`` with ``args`` (no input/output defaults added but the logging flags).

    ``on_progress`` receives a fraction 0..1 computed from ffmpeg's ``-progress`` output against
    ``duration`` (seconds of output expected).

    :raises PhaseFailed: ffmpeg exited non-zero or ran past ``timeout``; the message carries the command line
        and the tail of ffmpeg's stderr.
    """
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
    if on_progress is not None and duration:
        cmd += ["-progress", "pipe:1", "-nostats"]
    cmd += list(args)
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    # ffmpeg stays in our process group: when the server's group is killed, its encodes die with it
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)

    def read_stderr():
        assert proc.stderr is not None
        for raw in proc.stderr:
            tail.append(raw.decode("utf-8", "replace").rstrip())

    reader = threading.Thread(target=read_stderr, name="ffmpeg-stderr", daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout if timeout else None
    timer = None
    if deadline is not None:
        timer = threading.Timer(timeout, proc.kill)
        timer.daemon = True
        timer.start()
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("ascii", "replace").strip()
            if on_progress is not None and duration and line.startswith("out_time_us="):
                try:
                    done = int(line.split("=", 1)[1]) / 1_000_000
                except ValueError:
                    continue
                on_progress(max(0.0, min(1.0, done / duration)))
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if timer is not None:
            timer.cancel()
        reader.join(timeout=5)
    if deadline is not None and time.monotonic() >= deadline and proc.returncode != 0:
        raise PhaseFailed(f"{what} did not finish within {timeout:.0f}s: {shlex.join(cmd)}",
                          code="PHASE_TIMEOUT")
    if proc.returncode != 0:
        stderr = "\n".join(tail) or "(no output)"
        raise PhaseFailed(
            f"{what} failed (exit {proc.returncode}): {shlex.join(cmd)}\n{stderr}",
            details={"command": cmd, "returncode": proc.returncode, "stderr_tail": list(tail)},
            code="FFMPEG_FAILED",
        )


def ffmpeg_to_file(
    dest: str | os.PathLike,
    args: Sequence[str],
    *,
    ffmpeg: str,
    fmt: str,
    what: str = "ffmpeg",
    duration: float | None = None,
    on_progress: ProgressFn | None = None,
    replace: bool = True,
    cwd: str | os.PathLike | None = None,
) -> None:
    """Run ffmpeg writing to a temp file beside ``dest``; rename it to ``dest`` only when ffmpeg succeeded.

    ``dest`` is therefore whole or untouched. With ``replace=False`` an existing ``dest`` is never
    overwritten (the rename is a hard link, which fails if ``dest`` appeared meanwhile).

    :raises PhaseFailed: ffmpeg failed (see :func:`run_ffmpeg`), or ``dest`` exists and ``replace`` is off.
    """
    dest = Path(dest)
    tmp = temp_file_beside(dest)
    try:
        run_ffmpeg([*args, "-f", fmt, tmp], ffmpeg=ffmpeg, what=what, duration=duration, on_progress=on_progress,
                   cwd=cwd)
        if replace:
            os.replace(tmp, dest)
        else:
            try:
                os.link(tmp, dest)
            except FileExistsError:
                raise PhaseFailed(f"{dest.name} exists already and is not overwritten",
                                  code="OUTPUT_WRITE_FAILED") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
