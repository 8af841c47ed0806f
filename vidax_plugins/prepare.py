"""The ``prepare`` phase: fetch and copy the inputs, normalize the audio to WAV, and — without ComfyUI —
build ``prepare/source.mp4`` from the input video or the still image held for the audio's length.

Outputs (relative to the workdir): ``audio`` (``inputs/audio.wav``), ``image`` / ``input_video`` (the copied
inputs), ``video`` (``prepare/source.mp4``, when built) and ``audio_duration`` (seconds).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote
from urllib.parse import urlsplit

from vidax_core import BasePhase
from vidax_core import hookimpl
from vidax_core.errors import FetchError
from vidax_core.errors import PhaseFailed
from vidax_core.errors import UnsupportedFormat
from vidax_core.media import EVEN_YUV420
from vidax_core.media import audio_duration
from vidax_core.media import check_audio
from vidax_core.media import ffmpeg_to_file
from vidax_core.media import probe
from vidax_core.urls import is_url
from vidax_core.urls import redact_url

STILL_CRF = 12  # source.mp4 is an intermediate: keep it close to lossless, encode decides the final quality


class Prepare(BasePhase):
    name = "prepare"
    order = 100

    def run(self, ctx):
        job = ctx.job
        inputs_dir = ctx.path("inputs")
        inputs_dir.mkdir(parents=True, exist_ok=True)
        outputs = {}

        audio_src = self._obtain(ctx, "audio", job.inputs.audio, inputs_dir)
        try:
            # a fetched file's name comes from its URL, which need not end in an audio extension
            check_audio(audio_src, check_extension=not is_url(job.inputs.audio))
        except UnsupportedFormat as exc:
            raise PhaseFailed(exc.message, code=exc.code) from None
        wav = inputs_dir / "audio.wav"
        ffmpeg_to_file(wav, ["-i", str(audio_src), "-map", "0:a:0", "-vn", "-c:a", "pcm_s16le",
                              "-af", "aformat=channel_layouts=mono|stereo"],
                       ffmpeg=ctx.ffmpeg, fmt="wav", what="audio normalization")
        if audio_src.parent == inputs_dir and audio_src != wav:
            audio_src.unlink()  # a fetched original: the normalized WAV is what the run uses
        duration = audio_duration(wav)
        if duration <= 0:
            raise PhaseFailed("inputs.audio holds no audio", code="UNSUPPORTED_FORMAT")
        outputs["audio"] = ctx.relative(wav)
        outputs["audio_duration"] = round(duration, 6)
        ctx.progress(0.3, "audio normalized")

        image = video = None
        if job.inputs.image:
            image = self._obtain(ctx, "image", job.inputs.image, inputs_dir)
            info = _probe_visual(image, "inputs.image")
            outputs["image"] = ctx.relative(image)
            outputs["image_size"] = [info.width, info.height]
        if job.inputs.video:
            video = self._obtain(ctx, "video", job.inputs.video, inputs_dir)
            _probe_visual(video, "inputs.video")
            outputs["input_video"] = ctx.relative(video)
        ctx.progress(0.5, "inputs copied")

        if not job.comfyui.enable:
            source = ctx.output("source.mp4")
            fps = job.encode.fps
            if video is not None:
                self._video_source(ctx, video, source)
            elif image is not None:
                ffmpeg_to_file(source, [
                    "-loop", "1", "-framerate", _num(fps), "-i", str(image), "-t", f"{duration:.6f}",
                    "-vf", EVEN_YUV420, "-r", _num(fps),
                    "-c:v", "libx264", "-preset", "veryfast", "-tune", "stillimage", "-crf", str(STILL_CRF),
                    "-an", "-movflags", "+faststart"],
                    ffmpeg=ctx.ffmpeg, fmt="mp4", what="still image to video", duration=duration)
            else:  # validation makes this unreachable; kept for jobs written by hand into a run folder
                raise PhaseFailed("without comfyui, inputs.image or inputs.video is required",
                                  code="VALIDATION_ERROR")
            outputs["video"] = ctx.relative(source)
        ctx.progress(1.0, "prepared")
        return outputs

    def _video_source(self, ctx, video: Path, source: Path) -> None:
        info = probe(video)
        if info.vcodec == "h264" and info.pix_fmt == "yuv420p" and info.format and "mp4" in info.format:
            ffmpeg_to_file(source, ["-i", str(video), "-map", "0:v:0", "-c:v", "copy", "-an",
                                     "-movflags", "+faststart"], ffmpeg=ctx.ffmpeg, fmt="mp4", what="video remux")
            return
        ffmpeg_to_file(source, [
            "-i", str(video), "-map", "0:v:0", "-vf", EVEN_YUV420,
            "-c:v", "libx264", "-preset", "veryfast", "-crf", str(STILL_CRF), "-an", "-movflags", "+faststart"],
            ffmpeg=ctx.ffmpeg, fmt="mp4", what="video transcode", duration=info.duration)

    def _obtain(self, ctx, name: str, location: str, inputs_dir: Path) -> Path:
        """The input as a file under ``inputs/``: fetched through an asset source, or copied."""
        if is_url(location):
            source = ctx.registry.source_for(location)
            if source is None:
                raise PhaseFailed(f"inputs.{name}: no asset source handles {location.split(':', 1)[0]}:// URLs",
                                  code="VALIDATION_ERROR")
            suffix = Path(unquote(urlsplit(location).path)).suffix.lower()
            if not suffix[1:].isalnum() or len(suffix) > 6:
                suffix = ""
            dest = inputs_dir / f"{name}.src{suffix}"
            ctx.event("input.fetching", f"fetching inputs.{name}", {"url": redact_url(location)})
            tmp = dest.with_name(f".{dest.name}.part")
            try:
                with open(tmp, "wb") as f:
                    source.fetch(location, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, dest)
            except FetchError as exc:
                raise PhaseFailed(f"inputs.{name}: {exc.message}", code="INPUT_NOT_FOUND") from None
            finally:
                if tmp.exists():
                    tmp.unlink()
            return dest
        src = Path(location)
        if not src.is_file():
            raise PhaseFailed(f"inputs.{name}: {location} no longer exists", code="INPUT_NOT_FOUND")
        dest = inputs_dir / f"{name}{src.suffix.lower()}"
        if name == "audio":
            return src  # normalized to inputs/audio.wav straight from the source
        tmp = dest.with_name(f".{dest.name}.part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        return dest


def _probe_visual(path: Path, field: str):
    try:
        info = probe(path)
    except UnsupportedFormat as exc:
        raise PhaseFailed(f"{field}: {exc.message}", code="UNSUPPORTED_FORMAT") from None
    if not info.has_video or not info.width:
        raise PhaseFailed(f"{field}: {path.name} holds no picture", code="UNSUPPORTED_FORMAT")
    return info


def _num(value: float) -> str:
    return f"{value:g}"


@hookimpl
def register_phases(register):
    register(Prepare())
