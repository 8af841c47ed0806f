"""The ``comfyui`` phase: run the job's workflow on the ComfyUI server.

Upload the prepared inputs (``POST /upload/image`` into ``vidax/<run_id>/``), bind the workflow's placeholders,
submit it, follow it on the websocket (progress events), and collect what it made through ``/view``: a video
becomes ``comfyui/output.mp4`` (transcoded to H.264 when it is not MP4), images become ``frames/%06d.png``
(``encode`` turns them into video at ``encode.fps``). The workflow as submitted is kept in
``comfyui/workflow.json``.

Which output counts when a workflow makes several: a video beats images; among videos, VideoHelperSuite's
variant with audio (``-audio`` in its name) and MP4 come first, then node order. Images of type ``output``
beat ``temp`` previews.
"""

from __future__ import annotations

from pathlib import Path

from vidax_core import BasePhase
from vidax_core import hookimpl
from vidax_core.comfyui.process import ComfyUIStartFailed
from vidax_core.comfyui.process import ComfyUIUnavailable
from vidax_core.comfyui.workflow import unbound_problems
from vidax_core.errors import PhaseFailed
from vidax_core.errors import Problem

from .comfyui_common import collect_frames
from .comfyui_common import collect_video
from .comfyui_common import images_of
from .comfyui_common import resolve_workflow
from .comfyui_common import run_workflow
from .comfyui_common import videos_of


def workflow_bases(settings) -> list[Path]:
    """Where a relative ``comfyui.workflow`` path is looked up: the first input root, then the config folder."""
    bases = [settings.input_roots[0]]
    if settings.config_file is not None:
        bases.append(settings.config_file.parent)
    return bases


def ensure_comfyui(ctx) -> None:
    """The check at job start for anything that needs ComfyUI: up, or started (``auto_start``) and up.

    A start that cannot happen is ``COMFYUI_UNAVAILABLE`` here (424), a start that timed out ``COMFYUI_TIMEOUT``."""
    try:
        ctx.comfyui.ensure()
    except ComfyUIStartFailed as exc:
        raise ComfyUIUnavailable(exc.message, details=exc.details) from None


class ComfyUIPhase(BasePhase):
    name = "comfyui"
    order = 200

    def validate(self, job, ctx):
        try:
            wf = resolve_workflow(job.comfyui.workflow, workflow_bases(ctx.settings))
        except ValueError as exc:
            return [Problem("comfyui.workflow", str(exc))]
        inputs = {"image": job.inputs.image, "audio": job.inputs.audio, "video": job.inputs.video,
                  "prompt": job.inputs.prompt}
        return unbound_problems(wf, job.comfyui.params, inputs)

    def preflight(self, ctx):
        ensure_comfyui(ctx)

    def run(self, ctx):
        job = ctx.job
        try:
            wf = resolve_workflow(job.comfyui.workflow, workflow_bases(ctx.settings))
        except ValueError as exc:
            raise PhaseFailed(f"comfyui.workflow: {exc}", code="VALIDATION_ERROR") from None
        files = {"inputs.image": ctx.inputs.get("image"), "inputs.audio": ctx.inputs.get("audio"),
                 "inputs.video": ctx.inputs.get("input_video")}
        values = {**job.comfyui.params, "inputs.prompt": job.inputs.prompt or ""}
        client, prompt_id, items = run_workflow(ctx, wf, values, files, job.comfyui.timeout_s)
        videos = videos_of(items)
        if videos:
            out = collect_video(ctx, client, videos[0], ctx.output("output.mp4"))
            return {"video": ctx.relative(out), "prompt_id": prompt_id, "source": videos[0].filename}
        images = images_of(items)
        if not images:
            raise PhaseFailed(f"the workflow produced no video and no images (outputs: "
                              f"{[i.filename for i in items] or 'none'})", code="COMFYUI_NO_OUTPUT")
        pattern, count = collect_frames(ctx, client, images, ctx.path("frames"))
        return {"frames": ctx.relative(pattern), "fps": job.encode.fps, "count": count, "prompt_id": prompt_id}


@hookimpl
def register_phases(register):
    register(ComfyUIPhase())
