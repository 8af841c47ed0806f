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

import json
import os
import shutil
from pathlib import Path

from vidax_core import BasePhase
from vidax_core import hookimpl
from vidax_core.comfyui import ComfyUIClient
from vidax_core.comfyui import bind_workflow
from vidax_core.comfyui import find_placeholders
from vidax_core.comfyui import load_workflow
from vidax_core.comfyui.process import ComfyUIStartFailed
from vidax_core.comfyui.process import ComfyUIUnavailable
from vidax_core.comfyui.workflow import unbound_problems
from vidax_core.errors import PhaseFailed
from vidax_core.errors import Problem
from vidax_core.media import ffmpeg_to_file
from vidax_core.media import probe


def workflow_bases(settings) -> list[Path]:
    """Where a relative workflow path is looked up: the first input root, then the config file's folder."""
    bases = [settings.input_roots[0]]
    if settings.config_file is not None:
        bases.append(settings.config_file.parent)
    return bases


def resolve_workflow(ref, settings):
    """The workflow object of ``ref``: the object itself, or the API-format JSON file it names (absolute, or
    relative to the first input root, then to the config file's folder)."""
    if isinstance(ref, dict):
        return load_workflow(ref)
    expanded = os.path.expanduser(ref)
    candidates = [Path(expanded)] if os.path.isabs(expanded) else [base / ref for base in workflow_bases(settings)]
    for path in candidates:
        if path.is_file():
            return load_workflow(str(path))
    raise ValueError(f"workflow file not found: {ref} (looked in {', '.join(str(c.parent) for c in candidates)})")


class ComfyUIPhase(BasePhase):
    name = "comfyui"
    order = 200

    # ---------------------------------------------------------------- at POST /jobs

    def validate(self, job, ctx):
        try:
            wf = resolve_workflow(job.comfyui.workflow, ctx.settings)
        except ValueError as exc:
            return [Problem("comfyui.workflow", str(exc))]
        inputs = {"image": job.inputs.image, "audio": job.inputs.audio, "video": job.inputs.video,
                  "prompt": job.inputs.prompt}
        return unbound_problems(wf, job.comfyui.params, inputs)

    # ---------------------------------------------------------------- at POST /jobs/{id}/start

    def preflight(self, ctx):
        try:
            ctx.comfyui.ensure()
        except ComfyUIStartFailed as exc:
            raise ComfyUIUnavailable(exc.message, details=exc.details) from None

    # ---------------------------------------------------------------- the run

    def run(self, ctx):
        job = ctx.job
        try:
            wf = resolve_workflow(job.comfyui.workflow, ctx.settings)
        except ValueError as exc:
            raise PhaseFailed(f"comfyui.workflow: {exc}", code="VALIDATION_ERROR") from None
        client = ComfyUIClient(ctx.settings.comfyui.url, alive=ctx.comfyui.is_healthy if ctx.comfyui else None)
        subfolder = f"vidax/{ctx.run_id}"
        values = dict(job.comfyui.params)
        values["inputs.prompt"] = job.inputs.prompt or ""
        wanted = set(find_placeholders(wf))
        for key in ("image", "audio", "video"):
            name = f"inputs.{key}"
            source = ctx.inputs.get("input_video" if key == "video" else key)
            if name in wanted and source is not None:
                values[name] = client.upload(source, subfolder=subfolder)
                ctx.event("comfyui.uploaded", f"uploaded {name}", {"name": values[name]})
        bound = bind_workflow(wf, values)
        (ctx.phase_dir / "workflow.json").write_text(json.dumps(bound, indent=1))

        with client.session_socket() as sock:
            prompt_id = client.submit(bound, sock.client_id, extra_data={"vidax_run_id": ctx.run_id})
            ctx.event("comfyui.submitted", f"prompt {prompt_id}",
                      {"prompt_id": prompt_id, "websocket": sock.ws is not None})
            entry = client.wait(prompt_id, sock, timeout_s=job.comfyui.timeout_s, total_nodes=len(bound),
                                on_progress=lambda f, info: ctx.progress(f, **info))
        items = client.outputs(entry)
        ctx.event("comfyui.completed", f"{len(items)} output file(s)",
                  {"prompt_id": prompt_id, "outputs": [i.filename for i in items]})
        videos = sorted((i for i in items if i.is_video), key=_video_rank)
        if videos:
            return {"video": ctx.relative(self._collect_video(ctx, client, videos[0])), "prompt_id": prompt_id,
                    "source": videos[0].filename}
        images = [i for i in items if i.is_image]
        if any(i.type == "output" for i in images):
            images = [i for i in images if i.type == "output"]
        if not images:
            raise PhaseFailed(f"the workflow produced no video and no images (outputs: "
                              f"{[i.filename for i in items] or 'none'})", code="COMFYUI_NO_OUTPUT")
        pattern, count = self._collect_frames(ctx, client, images)
        return {"frames": ctx.relative(pattern), "fps": job.encode.fps, "count": count, "prompt_id": prompt_id}

    def _collect_video(self, ctx, client, item) -> Path:
        out = ctx.output("output.mp4")
        raw = ctx.output(f"download{item.extension or '.bin'}")
        client.download(item, raw)
        info = probe(raw)
        if not info.has_video:
            raise PhaseFailed(f"ComfyUI's output {item.filename} holds no video", code="COMFYUI_NO_OUTPUT")
        if "mp4" in info.format and item.extension in (".mp4", ".m4v", ".mov"):
            os.replace(raw, out)
            return out
        args = ["-i", str(raw), "-map", "0:v:0", "-map", "0:a:0?",
                "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2,format=yuv420p",
                "-c:v", "libx264", "-preset", "veryfast", "-crf", "16", "-c:a", "aac", "-movflags", "+faststart"]
        ffmpeg_to_file(out, args, ffmpeg=ctx.ffmpeg, fmt="mp4", what=f"transcoding {item.filename} to MP4",
                       duration=info.duration)
        raw.unlink(missing_ok=True)
        return out

    def _collect_frames(self, ctx, client, images):
        frames = ctx.path("frames")
        if frames.exists():
            shutil.rmtree(frames)
        frames.mkdir(parents=True)
        for n, item in enumerate(images, 1):
            dest = frames / f"{n:06d}.png"
            if item.extension == ".png":
                client.download(item, dest)
            else:
                raw = client.download(item, frames / f".{n:06d}{item.extension}")
                ffmpeg_to_file(dest, ["-i", str(raw), "-frames:v", "1"], ffmpeg=ctx.ffmpeg, fmt="image2",
                               what=f"converting {item.filename} to PNG")
                raw.unlink(missing_ok=True)
            ctx.progress(n / len(images), "collecting frames")
        return frames / "%06d.png", len(images)


def _video_rank(item):
    stem = os.path.splitext(item.filename)[0]
    return (0 if stem.endswith("-audio") else 1, 0 if item.extension == ".mp4" else 1)


@hookimpl
def register_phases(register):
    register(ComfyUIPhase())
