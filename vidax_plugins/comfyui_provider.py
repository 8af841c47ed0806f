"""The ``comfyui`` lip-sync provider type: run a lip-sync workflow (LatentSync, MuseTalk, Wav2Lip nodes...) on
the ComfyUI server, through the same client as the ``comfyui`` phase.

An entry of the providers file::

    "latentsync": {"type": "comfyui", "workflow": "workflows/latentsync.json",
                   "params": {"seed": 42, "inference_steps": 20}, "timeout_s": 3600,
                   "requires_assets": ["latentsync_unet"]}

The workflow (API format; a path relative to the providers file's folder, or the object) uses
``{{inputs.video}}`` (the video to lip-sync, uploaded), ``{{inputs.audio}}`` (the prepared WAV, uploaded),
``{{inputs.image}}`` when the job has an image, and ``{{name}}`` for ``params`` — which a job's
``lipsync.options`` override. Its video output becomes ``lipsync/output.mp4``. Available when the workflow
loads, its required assets are present and ComfyUI answers (or ``auto_start`` can start it); a job that uses it
gets ComfyUI ensured at start like the ``comfyui`` phase.
"""

from __future__ import annotations

from typing import Any

from vidax_core import hookimpl
from vidax_core.comfyui.workflow import find_placeholders
from vidax_core.errors import PhaseFailed
from vidax_core.errors import Problem
from vidax_core.errors import ValidationError
from vidax_core.lipsync import entry_problems
from vidax_core.lipsync import missing_assets

from .comfyui_common import collect_video
from .comfyui_common import resolve_workflow
from .comfyui_common import run_workflow
from .comfyui_common import videos_of
from .comfyui_phase import ensure_comfyui

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type", "workflow"],
    "properties": {
        "type": {"const": "comfyui"},
        "description": {"type": "string"},
        "workflow": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "object"}]},
        "params": {"type": "object"},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0},
        "requires_assets": {"type": "array", "items": {"type": "string"}},
    },
}
INPUTS = ("inputs.video", "inputs.audio", "inputs.image", "inputs.prompt")


class ComfyUIProvider:
    """A provider that runs a lip-sync workflow on ComfyUI."""

    def __init__(self, name: str, entry: dict[str, Any], ctx):
        problems = entry_problems(SCHEMA, entry, name)
        workflow = None
        if not problems:
            try:
                workflow = resolve_workflow(entry["workflow"], [ctx.base_dir])
            except ValueError as exc:
                problems.append(Problem(f"providers.{name}.workflow", str(exc)))
        if workflow is not None:
            params = entry.get("params") or {}
            for ph in sorted(find_placeholders(workflow)):
                if ph not in INPUTS and ph not in params:
                    problems.append(Problem(f"providers.{name}.params",
                                            f"the workflow's placeholder {{{{{ph}}}}} has no value in params"))
            if "inputs.video" not in find_placeholders(workflow):
                problems.append(Problem(f"providers.{name}.workflow",
                                        "the workflow never uses {{inputs.video}}: it cannot lip-sync the video"))
        if problems:
            raise ValidationError.from_problems(problems, f"lip-sync provider {name!r}")
        self.name = name
        self.workflow = workflow
        self.params = dict(entry.get("params") or {})
        self.timeout_s = float(entry.get("timeout_s", 1800))
        self.requires_assets = tuple(entry.get("requires_assets") or ())
        self._assets = ctx.assets
        self._comfyui = ctx.comfyui

    def validate_options(self, options: dict[str, Any]) -> list[Problem]:
        return [Problem(f"lipsync.options.{k}", f"provider {self.name!r} has no parameter {k!r} (it has: "
                                                f"{', '.join(sorted(self.params)) or 'none'})")
                for k in options if k not in self.params]

    def availability(self) -> tuple[bool, str | None]:
        if self._assets is not None:
            reason = missing_assets(self._assets, self.requires_assets)
            if reason:
                return False, reason
        if self._comfyui is not None and not self._comfyui.is_healthy() and not self._comfyui.config.auto_start:
            return False, f"ComfyUI at {self._comfyui.url} is not reachable and auto_start is off"
        return True, None

    def preflight(self, ctx) -> None:
        ensure_comfyui(ctx)

    def run(self, ctx, video, audio, output) -> None:
        if ctx.comfyui is not None and not ctx.comfyui.is_healthy():
            ensure_comfyui(ctx)
        files = {"inputs.video": video, "inputs.audio": audio, "inputs.image": ctx.inputs.get("image")}
        values = {**self.params, **ctx.job.lipsync.options, "inputs.prompt": ctx.job.inputs.prompt or ""}
        client, _prompt_id, items = run_workflow(ctx, self.workflow, values, files, self.timeout_s)
        videos = videos_of(items)
        if not videos:
            raise PhaseFailed(f"the lip-sync workflow produced no video (outputs: "
                              f"{[i.filename for i in items] or 'none'})", code="LIPSYNC_FAILED")
        collect_video(ctx, client, videos[0], output)


@hookimpl
def register_lipsync_provider_types(register):
    register("comfyui", ComfyUIProvider)
