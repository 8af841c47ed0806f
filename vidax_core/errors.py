"""The error hierarchy of VIDAX.

Every error carries one of SPEC.md's codes. The core knows no HTTP: ``vidax_http`` maps
codes to status codes in one table (``vidax_http/errors.py``), the CLI maps them to exit codes.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen


class VidaxError(Exception):
    """Base of every error VIDAX raises on purpose; ``code`` is one of SPEC.md's error codes."""

    code = "INTERNAL_ERROR"

    def __init__(self, message: str, *, details: Any = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            out["details"] = self.details
        return out

    def __str__(self) -> str:
        return self.message


class ValidationError(VidaxError):
    """A request, job, manifest or config that does not validate; ``details`` lists every problem."""

    code = "VALIDATION_ERROR"

    @classmethod
    def from_problems(cls, problems: list[Problem], what: str = "the job") -> ValidationError:
        n = len(problems)
        summary = "; ".join(f"{p.field}: {p.problem}" for p in problems[:3])
        more = f" (and {n - 3} more)" if n > 3 else ""
        return cls(f"{what} is invalid: {summary}{more}", details=[p.to_dict() for p in problems])


class ConfigError(VidaxError):
    """A configuration file or variable that is missing or invalid; the message names file and field."""

    code = "VALIDATION_ERROR"


class PluginError(VidaxError):
    """A plugin that cannot be loaded, or two plugins that register the same name."""

    code = "INTERNAL_ERROR"


class UnsupportedFormat(VidaxError):
    """An input whose format is not supported or does not decode."""

    code = "UNSUPPORTED_FORMAT"


class RunNotFound(VidaxError):
    """An unknown run id, or one that is not a valid run id."""

    code = "RUN_NOT_FOUND"


class InputNotFound(VidaxError):
    """A file a request needs is missing (asset manifest, manifest.json, logs, an asset)."""

    code = "INPUT_NOT_FOUND"


class OutputWriteFailed(VidaxError):
    """The run's ``final.mp4`` exists already, or an output could not be written."""

    code = "OUTPUT_WRITE_FAILED"


class RunInProgress(VidaxError):
    """The run is running (in this process or another one)."""

    code = "RUN_IN_PROGRESS"


class ProviderError(VidaxError):
    """An external service or tool (ComfyUI, a lip-sync provider) failed or is unreachable."""

    code = "COMFYUI_UNAVAILABLE"


class ComfyUIUnavailable(ProviderError):
    """ComfyUI cannot be reached (and was not, or could not be, started)."""

    code = "COMFYUI_UNAVAILABLE"


class ComfyUITimeout(ProviderError):
    """ComfyUI did not become healthy within ``start_timeout_s``, or a prompt ran past its ``timeout_s``."""

    code = "COMFYUI_TIMEOUT"


class ComfyUIStartFailed(ProviderError):
    """ComfyUI could not be started: no command, ``auto_start`` off, not found, or it exited early."""

    code = "COMFYUI_START_FAILED"


class PhaseFailed(VidaxError):
    """A phase could not produce its output; ``code`` says why (e.g. ``COMFYUI_TIMEOUT``)."""

    code = "PHASE_FAILED"


@frozen
class Problem:
    """One validation problem: the field (a dotted path such as ``inputs.audio``) and what is wrong."""

    field: str
    problem: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "problem": self.problem}


class FetchError(VidaxError):
    """A URL could not be fetched; ``transient`` says whether trying again may help."""

    code = "FETCH_FAILED"

    def __init__(self, message: str, *, transient: bool = False, status: int | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.transient = transient
        self.status = status


# Every code SPEC.md names, for the HTTP layer's table and for documentation.
ERROR_CODES = (
    "VALIDATION_ERROR",
    "AUTH_REQUIRED",
    "AUTH_INVALID",
    "RUN_NOT_FOUND",
    "INPUT_NOT_FOUND",
    "OUTPUT_WRITE_FAILED",
    "RUN_IN_PROGRESS",
    "UNSUPPORTED_FORMAT",
    "COMFYUI_UNAVAILABLE",
    "COMFYUI_TIMEOUT",
    "COMFYUI_START_FAILED",
    "INTERNAL_ERROR",
)
