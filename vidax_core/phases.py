"""What a phase is and what it is handed.

A phase plugin gets a :class:`PhaseContext` from the runner and takes every path from it: the prepared inputs,
the best video so far, the place to write its own output. Phases never look into each other's folders, so a
phase can be replaced, and the runner alone decides what "the best video so far" is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import Protocol
from typing import runtime_checkable

from attrs import define
from attrs import field

from .errors import Problem
from .media import ffmpeg_exe

if TYPE_CHECKING:  # pragma: no cover
    from .config import Settings
    from .models import Job
    from .plugins import Registry


@runtime_checkable
class Phase(Protocol):
    """The interface of a pipeline phase (see ``register_phases`` in :mod:`vidax_core.hookspecs`)."""

    name: str
    order: int

    def enabled(self, job: Job) -> bool:
        """Whether ``job`` runs this phase; a disabled phase is marked ``skipped``."""

    def validate(self, job: Job, ctx: ValidationContext) -> list[Problem]:
        """Problems with ``job`` that only this phase can see, reported with the 400 of ``POST /jobs``."""

    def preflight(self, ctx: PhaseContext) -> None:
        """Synchronous checks at ``POST /jobs/{id}/start``; raise a ``VidaxError`` to refuse the start."""

    def run(self, ctx: PhaseContext) -> Mapping[str, Any] | None:
        """Do the work; return the outputs (paths relative to the workdir) to record in the manifest."""

    def allow_passthrough(self, job: Job) -> bool:
        """Whether the run goes on (with the video as it was) when this phase fails."""

    def required_assets(self, ctx: PhaseContext) -> list[str]:
        """Names of asset-manifest entries that must be present and verified to start the run (optional)."""


class BasePhase:
    """Defaults for a phase: enabled by the job section of its name, nothing to validate or preflight."""

    name: str = ""
    order: int = 1000

    def enabled(self, job: Job) -> bool:
        return job.section_enabled(self.name)

    def validate(self, job: Job, ctx: ValidationContext) -> list[Problem]:
        return []

    def preflight(self, ctx: PhaseContext) -> None:
        return None

    def run(self, ctx: PhaseContext) -> Mapping[str, Any] | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def allow_passthrough(self, job: Job) -> bool:
        section = getattr(job, self.name, None)
        return bool(getattr(section, "allow_passthrough", False))

    def required_assets(self, ctx: PhaseContext) -> list[str]:
        return []

    def __repr__(self) -> str:
        return f"<phase {self.name} order={self.order}>"


@define
class ValidationContext:
    """What a phase's ``validate`` may consult: the settings, the plugin registry, the assets and ComfyUI."""

    settings: Settings
    registry: Registry
    assets: Any = None
    comfyui: Any = None


EventFn = Callable[..., None]


@define
class PhaseContext:
    """Everything a phase gets from the runner.

    Paths: ``workdir`` is the run's folder; :meth:`output` is where this phase writes; :meth:`input_video`
    is the best video the phases before it made; :attr:`inputs` are the prepared inputs.
    """

    run_id: str
    workdir: Path
    phase: str
    job: Job
    settings: Settings
    registry: Registry
    emit: EventFn
    # the supervised ComfyUI server (vidax_core.comfyui.ComfyUIProcess): health, ensure, its URL
    comfyui: Any = None
    # the asset manager (vidax_core.assets.AssetManager): status and require() of manifest entries
    assets: Any = None
    # outputs of the completed phases before this one, in pipeline order: {phase: {key: relative path}}
    previous: dict[str, dict[str, Any]] = field(factory=dict)
    # facts about this phase for its manifest entry (``provider``, ``reason``), set with :meth:`note`
    notes: dict[str, Any] = field(factory=dict)
    _last_progress: list[float] = field(factory=lambda: [0.0, -1.0])

    # ---------------------------------------------------------------- paths

    def path(self, relative: str | os.PathLike) -> Path:
        """An absolute path inside the workdir."""
        return self.workdir / relative

    def relative(self, path: str | os.PathLike) -> str:
        """``path`` relative to the workdir, as recorded in the manifest."""
        return os.path.relpath(path, self.workdir)

    @property
    def phase_dir(self) -> Path:
        """This phase's own folder (created on first use)."""
        d = self.workdir / self.phase
        d.mkdir(parents=True, exist_ok=True)
        return d

    def output(self, name: str = "output.mp4") -> Path:
        """Where this phase writes its output ``name``."""
        return self.phase_dir / name

    @property
    def inputs(self) -> dict[str, Path]:
        """The prepared inputs (``audio`` as WAV, ``image``, ``video``, ``source``) as absolute paths."""
        prepared = self.previous.get("prepare", {})
        return {k: self.workdir / v for k, v in prepared.items() if isinstance(v, str)}

    def input_video(self) -> Path | None:
        """The best video the phases before this one produced (the latest phase's ``video`` output)."""
        for outputs in reversed(list(self.previous.values())):
            video = outputs.get("video")
            if isinstance(video, str):
                return self.workdir / video
        return None

    def input_frames(self) -> tuple[str, float | None] | None:
        """An image sequence (``frames/%06d.png`` pattern, absolute, and its frame rate) when the latest
        visual output of an earlier phase is frames rather than a video."""
        for outputs in reversed(list(self.previous.values())):
            if isinstance(outputs.get("video"), str):
                return None
            frames = outputs.get("frames")
            if isinstance(frames, str):
                return str(self.workdir / frames), outputs.get("fps")
        return None

    def video_file(self) -> Path | None:
        """The best video so far as a file: :meth:`input_video`, or the earlier phase's frames encoded into
        ``<phase>/input.mp4`` (at their frame rate, near-lossless) for phases that need a video file."""
        video = self.input_video()
        if video is not None:
            return video
        frames = self.input_frames()
        if frames is None:
            return None
        pattern, rate = frames
        out = self.output("input.mp4")
        if not out.exists():
            from .media import EVEN_YUV420
            from .media import ffmpeg_to_file

            fps = f"{rate or self.job.encode.fps:g}"
            ffmpeg_to_file(out, ["-framerate", fps, "-start_number", "1", "-i", pattern,
                                 "-vf", EVEN_YUV420,
                                 "-c:v", "libx264", "-preset", "veryfast", "-crf", "12", "-r", fps],
                           ffmpeg=self.ffmpeg, fmt="mp4", what="frames to video")
        return out

    def note(self, **facts: Any) -> None:
        """Record facts for this phase's manifest entry: ``provider`` and ``reason`` (why it could not run)."""
        self.notes.update(facts)

    # ---------------------------------------------------------------- tools

    @property
    def ffmpeg(self) -> str:
        """The ffmpeg binary to use (``VIDAX_FFMPEG`` or imageio-ffmpeg's)."""
        return ffmpeg_exe(self.settings.ffmpeg)

    # ---------------------------------------------------------------- events

    def event(self, event: str, message: str | None = None, data: dict[str, Any] | None = None) -> None:
        """Append an event of this phase to the run's ``logs/events.jsonl``."""
        self.emit(event, phase=self.phase, message=message, data=data)

    def progress(self, fraction: float, message: str | None = None, **data: Any) -> None:
        """Report progress (0..1). Throttled: at most one event per second or per 5 % step."""
        now = time.monotonic()
        last_time, last_fraction = self._last_progress
        if fraction < 1.0 and now - last_time < 1.0 and fraction - last_fraction < 0.05:
            return
        self._last_progress[:] = [now, fraction]
        self.event("phase.progress", message, {"progress": round(fraction, 4), **data})
