"""The ``encode`` phase: ``final.mp4`` from the best video so far and the prepared audio.

H.264 (yuv420p) + AAC in MP4 with ``+faststart``; as long as the audio (a shorter video holds its last
frame, a longer one is cut); frame rate ``encode.fps``. Written to a temp file and linked into place, so
``final.mp4`` is whole or absent and never overwritten.
"""

from __future__ import annotations

from vidax_core import BasePhase
from vidax_core import hookimpl
from vidax_core.errors import PhaseFailed
from vidax_core.errors import UnsupportedFormat
from vidax_core.media import EVEN_YUV420
from vidax_core.media import audio_duration
from vidax_core.media import ffmpeg_to_file
from vidax_core.media import probe

FINAL = "final.mp4"


def encode_args(video_in: list[str], audio: str, duration: float, encode) -> list[str]:
    """The ffmpeg arguments (without output) that make ``final.mp4``: exposed for the benchmarks."""
    fps = f"{encode.fps:g}"
    # even size and yuv420p for H.264; tpad holds the last frame, -t then cuts at the audio's length
    vf = f"fps={fps},tpad=stop=-1:stop_mode=clone,{EVEN_YUV420}"
    return [
        *video_in, "-i", audio,
        "-map", "0:v:0", "-map", "1:a:0",
        "-vf", vf, "-r", fps,
        "-c:v", "libx264", "-preset", encode.preset, "-crf", str(encode.crf), "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", encode.audio_bitrate,
        "-t", f"{duration:.6f}",
        "-movflags", "+faststart",
    ]


class Encode(BasePhase):
    name = "encode"
    order = 500

    def run(self, ctx):
        audio = ctx.inputs.get("audio")
        if audio is None or not audio.is_file():
            raise PhaseFailed("no prepared audio (inputs/audio.wav) to encode with", code="INPUT_NOT_FOUND")
        duration = audio_duration(audio)
        video = ctx.input_video()
        frames = ctx.input_frames()
        if video is not None:
            video_in = ["-i", str(video)]
            source = ctx.relative(video)
        elif frames is not None:
            pattern, rate = frames
            video_in = ["-framerate", f"{rate or ctx.job.encode.fps:g}", "-start_number", "1", "-i", pattern]
            source = ctx.relative(pattern)
        else:
            raise PhaseFailed("no video or frames from an earlier phase to encode", code="INPUT_NOT_FOUND")
        ctx.event("phase.info", f"encoding {source} with {ctx.relative(audio)}",
                  {"source": source, "duration": duration})
        final = ctx.path(FINAL)
        ffmpeg_to_file(final, encode_args(video_in, str(audio), duration, ctx.job.encode),
                       ffmpeg=ctx.ffmpeg, fmt="mp4", what="final encode", duration=duration,
                       on_progress=lambda f: ctx.progress(f), replace=False)
        try:
            info = probe(final)
        except UnsupportedFormat as exc:
            final.unlink(missing_ok=True)
            raise PhaseFailed(f"final.mp4 does not read back: {exc.message}", code="OUTPUT_WRITE_FAILED") from None
        if not (info.has_video and info.has_audio):
            final.unlink(missing_ok=True)
            raise PhaseFailed("final.mp4 lacks a video or an audio stream", code="OUTPUT_WRITE_FAILED")
        return {"final": FINAL, "source": source, "duration": info.duration}


@hookimpl
def register_phases(register):
    register(Encode())
