"""The data of VIDAX as attrs classes: the job, the manifest of a run and the state of its phases.

Models hold data and invariants only; JSON goes in and out through the one converter of
:mod:`vidax_core.converters`, and validation of what users send through :mod:`vidax_core.validation`.
"""

from __future__ import annotations

from typing import Any

from attrs import Factory
from attrs import define
from attrs import field

# The pipeline of SPEC.md, in order. Plugins implement these phases (and may add more, placed by `order`).
STANDARD_PHASES: tuple[tuple[str, int], ...] = (
    ("prepare", 100),
    ("comfyui", 200),
    ("stabilize", 300),
    ("lipsync", 400),
    ("encode", 500),
)

RUN_STATUSES = ("queued", "running", "completed", "failed")
EXIT_STATUSES = ("success", "failed", "partial")
PHASE_STATUSES = ("queued", "running", "skipped", "completed", "failed")
MANIFEST_SCHEMA_VERSION = 1


# --------------------------------------------------------------------------- the job


@define
class Inputs:
    """The job's input files (absolute paths or URLs once a job is accepted) and the prompt."""

    audio: str
    image: str | None = None
    video: str | None = None
    prompt: str | None = None


@define
class ComfyUIJob:
    """The ``comfyui`` section: which workflow to run and its parameters."""

    enable: bool = True
    workflow: str | dict[str, Any] | None = None
    params: dict[str, Any] = Factory(dict)
    timeout_s: float = 1800.0


@define
class StabilizeJob:
    """The ``stabilize`` section."""

    enable: bool = True
    method: str = "vidstab"
    smoothing: int = 10
    allow_passthrough: bool = False


@define
class LipsyncJob:
    """The ``lipsync`` section: a provider of the providers file and its options."""

    enable: bool = True
    provider: str | None = None
    allow_passthrough: bool = False
    options: dict[str, Any] = Factory(dict)


@define
class EncodeJob:
    """The ``encode`` section: how ``final.mp4`` is encoded."""

    fps: float = 25.0
    crf: int = 18
    preset: str = "medium"
    audio_bitrate: str = "192k"


@define
class Job:
    """A job as accepted: absent sections are disabled, present ones enabled unless they say otherwise."""

    inputs: Inputs
    comfyui: ComfyUIJob = Factory(lambda: ComfyUIJob(enable=False))
    stabilize: StabilizeJob = Factory(lambda: StabilizeJob(enable=False))
    lipsync: LipsyncJob = Factory(lambda: LipsyncJob(enable=False))
    encode: EncodeJob = Factory(EncodeJob)
    metadata: dict[str, Any] = Factory(dict)

    def section_enabled(self, name: str) -> bool:
        """Whether the job enables the standard phase ``name`` (prepare and encode always run)."""
        section = getattr(self, name, None)
        if name in ("prepare", "encode"):
            return True
        return bool(getattr(section, "enable", False))


# --------------------------------------------------------------------------- a run


@define
class ErrorInfo:
    """An error as stored in the manifest and shown by the API: a SPEC.md code and a message."""

    code: str
    message: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        code = getattr(exc, "code", None) or "INTERNAL_ERROR"
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return cls(code=code, message=message)


@define
class PhaseState:
    """One phase of a run. ``provider`` and ``reason`` are set by phases that have them (lipsync)."""

    status: str = field(default="queued")
    started_at: str | None = None
    finished_at: str | None = None
    outputs: dict[str, Any] = Factory(dict)
    error: ErrorInfo | None = None
    provider: str | None = None
    reason: str | None = None
    # the outputs that are files (relative to the workdir), as found when the phase completed: a resume runs a
    # completed phase again when one of them is gone
    files: list[str] = Factory(list)

    @status.validator
    def _check_status(self, attribute, value):
        if value not in PHASE_STATUSES:
            raise ValueError(f"phase status must be one of {PHASE_STATUSES}, not {value!r}")


@define(kw_only=True)
class Manifest:
    """The truth about a run, as written to ``manifest.json``."""

    schema_version: int = MANIFEST_SCHEMA_VERSION
    run_id: str
    created_at: str
    updated_at: str
    run_status: str = "queued"
    exit_status: str | None = None
    attempt: int = 0
    resumed: bool = False
    workdir: str
    job: Job
    phases: dict[str, PhaseState]
    outputs: dict[str, Any] = Factory(lambda: {"final": None})
    error: ErrorInfo | None = None

    def phase(self, name: str) -> PhaseState:
        return self.phases[name]
