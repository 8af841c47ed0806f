"""The ``stabilize`` phase: ffmpeg's two-pass ``vidstabdetect`` + ``vidstabtransform`` (default) or ``deshake``.

``vidstab`` writes its transforms to ``stabilize/transforms.trf`` (kept for inspection) and smooths over
``smoothing`` frames each way; ``deshake`` is a one-pass filter without a smoothing window (``smoothing`` is not
used). The output, ``stabilize/output.mp4``, keeps the input's frames, rate, length and audio. When ffmpeg
fails, the phase's error and its ``phase.failed`` event carry the command line and ffmpeg's stderr tail.
"""

from __future__ import annotations

from vidax_core import BasePhase
from vidax_core import hookimpl
from vidax_core.errors import PhaseFailed
from vidax_core.media import ffmpeg_to_file
from vidax_core.media import probe
from vidax_core.media import run_ffmpeg

TRANSFORMS = "transforms.trf"
ENCODE = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "16", "-pix_fmt", "yuv420p",
          "-c:a", "copy", "-movflags", "+faststart"]


class Stabilize(BasePhase):
    name = "stabilize"
    order = 300

    def run(self, ctx):
        source = ctx.video_file()
        if source is None:
            raise PhaseFailed("no video from an earlier phase to stabilize", code="INPUT_NOT_FOUND")
        info = probe(source)
        out = ctx.output("output.mp4")
        method = ctx.job.stabilize.method
        if method == "vidstab":
            self._vidstab(ctx, source, out, info.duration, ctx.job.stabilize.smoothing)
        elif method == "deshake":
            ffmpeg_to_file(out, ["-i", str(source), "-map", "0:v:0", "-map", "0:a:0?", "-vf", "deshake", *ENCODE],
                           ffmpeg=ctx.ffmpeg, fmt="mp4", what="deshake", duration=info.duration,
                           on_progress=ctx.progress)
        else:  # the schema allows only the two; a hand-written job.json might not
            raise PhaseFailed(f"stabilize.method {method!r} is not vidstab or deshake", code="VALIDATION_ERROR")
        return {"video": ctx.relative(out), "method": method}

    def _vidstab(self, ctx, source, out, duration, smoothing):
        # the filter graph names the transforms file relative to the phase folder, so no path needs escaping
        run_ffmpeg(["-i", str(source), "-map", "0:v:0",
                    "-vf", f"vidstabdetect=shakiness=8:accuracy=15:result={TRANSFORMS}", "-f", "null", "-"],
                   ffmpeg=ctx.ffmpeg, what="vidstabdetect (pass 1)", duration=duration, cwd=ctx.phase_dir,
                   on_progress=lambda f: ctx.progress(f / 2, "analysing motion"))
        ffmpeg_to_file(out, ["-i", str(source), "-map", "0:v:0", "-map", "0:a:0?",
                             "-vf", f"vidstabtransform=input={TRANSFORMS}:smoothing={smoothing}:optzoom=1:"
                                    "interpol=bicubic,unsharp=5:5:0.8:3:3:0.4", *ENCODE],
                       ffmpeg=ctx.ffmpeg, fmt="mp4", what="vidstabtransform (pass 2)", duration=duration,
                       cwd=ctx.phase_dir, on_progress=lambda f: ctx.progress(0.5 + f / 2, "transforming"))


@hookimpl
def register_phases(register):
    register(Stabilize())
