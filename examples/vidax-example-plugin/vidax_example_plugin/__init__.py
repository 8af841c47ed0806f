"""An example VIDAX plugin: the ``waveform`` lip-sync provider type and the ``mirror://`` asset source.

VIDAX finds this module through the ``vidax`` entry point in pyproject.toml and calls the ``@hookimpl``
functions below, exactly as it does for its builtin plugins.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote
from urllib.parse import urlsplit

from vidax_core import hookimpl
from vidax_core.errors import FetchError
from vidax_core.errors import PhaseFailed
from vidax_core.errors import Problem
from vidax_core.errors import ValidationError
from vidax_core.media import ffmpeg_to_file

CHUNK = 1 << 20


# --------------------------------------------------------------------------- an asset source


class MirrorSource:
    """``mirror://<path>``: the file ``$VIDAX_MIRROR_ROOT/<path>``; resumes partial copies."""

    schemes = ("mirror",)

    def fetch(self, url, dest, *, resume_from=0, validator=None, headers=None, progress=None, on_validator=None):
        root = os.environ.get("VIDAX_MIRROR_ROOT")
        if not root:
            raise FetchError("mirror:// URLs need VIDAX_MIRROR_ROOT (the mirror's folder)")
        parts = urlsplit(url)
        rel = unquote(parts.netloc + parts.path).lstrip("/")
        path = (Path(root) / rel).resolve()
        if Path(root).resolve() not in path.parents:
            raise FetchError(f"{url} leads out of the mirror")
        try:
            src = open(path, "rb")
        except FileNotFoundError:
            raise FetchError(f"{url}: not in the mirror ({path})", status=404) from None
        with src:
            st = os.fstat(src.fileno())
            version = f"{st.st_size}-{st.st_mtime_ns}"
            if on_validator is not None:
                on_validator(version)
            if validator not in (None, version) or resume_from > st.st_size:
                resume_from = 0  # the mirror's file changed since the partial copy began
            src.seek(resume_from)
            dest.seek(resume_from)
            dest.truncate()
            done = resume_from
            while chunk := src.read(CHUNK):
                dest.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, st.st_size)
        return done


@hookimpl
def register_asset_sources(register):
    register(MirrorSource())


# --------------------------------------------------------------------------- a lip-sync provider type


class WaveformProvider:
    """Draws the voice's waveform over the lower part of the video (a stand-in for a real lip-sync model)."""

    OPTIONS = {"color": "white", "height": 0.25}

    def __init__(self, name, entry, ctx):
        problems = []
        unknown = set(entry) - {"type", "options", "requires_assets", "description"}
        problems += [Problem(f"providers.{name}.{k}", "unknown key") for k in sorted(unknown)]
        options = {**self.OPTIONS, **(entry.get("options") or {})}
        problems += self._check(options, f"providers.{name}.options")
        if problems:
            raise ValidationError.from_problems(problems, f"lip-sync provider {name!r}")
        self.name = name
        self.options = options
        self.requires_assets = tuple(entry.get("requires_assets") or ())
        self._assets = ctx.assets

    @staticmethod
    def _check(options, field):
        problems = []
        height = options.get("height")
        if not isinstance(height, (int, float)) or not 0 < height <= 1:
            problems.append(Problem(f"{field}.height", "must be a number in (0, 1]"))
        if not isinstance(options.get("color"), str) or not options["color"].replace("#", "").isalnum():
            problems.append(Problem(f"{field}.color", "must be a colour name or #RRGGBB"))
        return problems

    def validate_options(self, options):
        unknown = [Problem(f"lipsync.options.{k}", f"provider {self.name!r} has no option {k!r}")
                   for k in options if k not in self.OPTIONS]
        return unknown + self._check({**self.options, **options}, "lipsync.options")

    def availability(self):
        if self.requires_assets and self._assets is not None:
            try:
                self._assets.require(self.requires_assets)
            except Exception as exc:  # InputNotFound / ValidationError carry the reason
                return False, str(exc)
        return True, None

    def run(self, ctx, video, audio, output):
        opts = {**self.options, **ctx.job.lipsync.options}
        h = float(opts["height"])
        graph = (f"[1:a]showwaves=s=640x120:mode=cline:colors={opts['color']}[w];"
                 f"[w][0:v]scale2ref=w=iw:h=ih*{h:g}[wv][v];"
                 "[v][wv]overlay=x=0:y=main_h-overlay_h:shortest=1,format=yuv420p[out]")
        ffmpeg_to_file(output, ["-i", str(video), "-i", str(audio), "-filter_complex", graph,
                                "-map", "[out]", "-map", "1:a:0", "-c:v", "libx264", "-preset", "veryfast",
                                "-crf", "18", "-c:a", "aac", "-shortest"],
                       ffmpeg=ctx.ffmpeg, fmt="mp4", what="waveform overlay")
        if not output.is_file():
            raise PhaseFailed("the waveform overlay wrote nothing", code="LIPSYNC_FAILED")


@hookimpl
def register_lipsync_provider_types(register):
    register("waveform", WaveformProvider)
