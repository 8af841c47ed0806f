"""Validating a job: the JSON Schema, then the checks a schema cannot express, every problem at once.

Order of verdicts: every 400 problem (schema, files, roots, phases) is collected and reported together; only a
job free of them has its audio probed, which is the 415 ``UNSUPPORTED_FORMAT``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .converters import converter
from .errors import Problem
from .errors import ValidationError
from .media import check_audio
from .models import Job
from .phases import ValidationContext
from .schema import schema_problems
from .urls import URL_RE
from .urls import is_url

FILE_INPUTS = ("audio", "image", "video")
ALWAYS_ON = ("prepare", "encode")


def resolve_input(value: str, roots: tuple[Path, ...]) -> Path:
    """An input path as the job means it: absolute, or relative to the first input root."""
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else roots[0] / p


def inside_roots(path: Path, roots: tuple[Path, ...]) -> bool:
    """Whether ``path``, with every symlink and ``..`` resolved, lies inside one of ``roots``."""
    real = Path(os.path.realpath(path))
    for root in roots:
        r = Path(os.path.realpath(root))
        if real == r or r in real.parents:
            return True
    return False


def validate_job(raw: Any, ctx: ValidationContext) -> Job:
    """Turn a job as sent into a normalized :class:`Job`, or raise.

    Normalized: absent sections disabled, defaults filled in, input paths absolute and resolved.

    :raises ValidationError: (400) with a ``details`` list naming each field and its problem.
    :raises UnsupportedFormat: (415) the audio's extension is not supported or it does not decode.
    """
    problems = schema_problems("job", raw)
    problems.extend(Problem(f, "must be a finite number") for f in _non_finite(raw))
    schema_failed = bool(problems)
    settings = ctx.settings
    if not isinstance(raw, dict):
        raise ValidationError.from_problems(problems or [Problem("(root)", "must be a JSON object")])

    # file checks run on the raw document, so they are reported even when the schema found problems elsewhere
    inputs = raw.get("inputs") if isinstance(raw.get("inputs"), dict) else {}
    resolved: dict[str, str] = {}
    for name in FILE_INPUTS:
        value = inputs.get(name)
        if not isinstance(value, str) or not value:
            continue
        field = f"inputs.{name}"
        problem, path = _check_location(value, settings.input_roots, ctx)
        if problem:
            problems.append(Problem(field, problem))
        elif path is not None:
            resolved[name] = path

    comfy = raw.get("comfyui")
    comfy_on = isinstance(comfy, dict) and comfy.get("enable", True) is True
    if not comfy_on and not inputs.get("image") and not inputs.get("video") and isinstance(raw.get("inputs"), dict):
        problems.append(Problem("inputs.image", "inputs.image or inputs.video is required when comfyui is "
                                                "not enabled"))

    problems.extend(_unprovided_phases(raw, ctx))
    job: Job | None = None
    if not schema_failed:
        # the phases' own checks (workflow placeholders, providers) need a well-formed job, not good files
        job = converter.structure(raw, Job)
        for name, path in resolved.items():
            setattr(job.inputs, name, path)
        problems.extend(_phase_problems(job, ctx))
    if problems:
        raise ValidationError.from_problems(_unique(problems))

    assert job is not None
    if not is_url(job.inputs.audio):  # a URL's audio is fetched, then probed, in prepare
        check_audio(job.inputs.audio)
    return job


def _check_location(value: str, roots: tuple[Path, ...], ctx: ValidationContext) -> tuple[str | None, str | None]:
    """``(problem, normalized)`` for one input: a URL with a known scheme, or a file inside the roots."""
    m = URL_RE.match(value)
    if m:
        scheme = m.group("scheme").lower()
        if scheme == "file":
            return "file:// URLs are not accepted as inputs; give the path", None
        if scheme not in ctx.registry.sources:
            known = ", ".join(sorted(s for s in ctx.registry.sources if s != "file")) or "none"
            return f"no asset source handles {scheme}:// URLs (known: {known})", None
        return None, value
    if "\x00" in value:
        return "contains a NUL character", None
    try:
        path = resolve_input(value, roots)
        if not inside_roots(path, roots):
            return "is outside the allowed input roots", None
        real = Path(os.path.realpath(path))
        if not real.exists():
            return f"file not found: {value}", None
        if not real.is_file():
            return f"is not a file: {value}", None
        if not os.access(real, os.R_OK):
            return f"is not readable: {value}", None
    except (OSError, ValueError) as exc:  # e.g. a name longer than the file system allows
        return f"cannot be used as a path: {getattr(exc, 'strerror', None) or exc}", None
    return None, str(real)


def _unprovided_phases(raw: dict[str, Any], ctx: ValidationContext) -> list[Problem]:
    """Standard phases the job needs that no plugin provides: ``prepare`` and ``encode`` always, the others when
    the job enables them (a section present without ``"enable": false``).

    Checked on the raw job, so it is reported together with any other problem."""
    problems = []
    for name, phase in ctx.registry.pipeline():
        if phase is not None:
            continue
        if name in ALWAYS_ON:
            problems.append(Problem(name, f"no installed plugin provides the phase {name!r}, which every job needs "
                                          "(is it switched off in VIDAX_DISABLED_PLUGINS?)"))
            continue
        section = raw.get(name)
        if isinstance(section, dict) and section.get("enable", True) is not False:
            problems.append(Problem(name, f"phase {name!r} is enabled but no installed plugin provides it; "
                                          f"disable it with \"{name}\": {{\"enable\": false}}"))
    return problems


def _phase_problems(job: Job, ctx: ValidationContext) -> list[Problem]:
    """Each enabled phase's own checks (on the structured job)."""
    problems: list[Problem] = []
    for _name, phase in ctx.registry.pipeline():
        if phase is not None and phase.enabled(job):
            problems.extend(phase.validate(job, ctx) or [])
    return problems


def _non_finite(value: Any, path: str = "") -> list[str]:
    """Fields holding NaN or infinity (Python callers can pass them; they are not JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [path or "(root)"]
    if isinstance(value, dict):
        return [f for k, v in value.items() for f in _non_finite(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list):
        return [f for i, v in enumerate(value) for f in _non_finite(v, f"{path}[{i}]")]
    return []


def _unique(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))
