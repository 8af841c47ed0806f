"""Running a workflow on ComfyUI and collecting its result: shared by the ``comfyui`` phase and the ``comfyui``
lip-sync provider type."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from vidax_core.comfyui import ComfyUIClient
from vidax_core.comfyui import bind_workflow
from vidax_core.comfyui import find_placeholders
from vidax_core.comfyui import load_workflow
from vidax_core.errors import PhaseFailed
from vidax_core.media import EVEN_YUV420
from vidax_core.media import ffmpeg_to_file
from vidax_core.media import probe


def resolve_workflow(ref: Any, bases: list[Path]) -> dict[str, Any]:
    """The workflow object of ``ref``: the object itself, or the API-format JSON file it names (absolute, or
    relative to the first of ``bases`` that has it).

    :raises ValueError: not found, not JSON, not API format."""
    if isinstance(ref, dict):
        return load_workflow(ref)
    expanded = os.path.expanduser(ref)
    candidates = [Path(expanded)] if os.path.isabs(expanded) else [base / ref for base in bases]
    for path in candidates:
        if path.is_file():
            return load_workflow(str(path))
    raise ValueError(f"workflow file not found: {ref} (looked in {', '.join(str(c.parent) for c in candidates)})")


def run_workflow(ctx, workflow: dict[str, Any], values: dict[str, Any], files: dict[str, Path],
                 timeout_s: float) -> tuple[ComfyUIClient, str, list]:
    """Upload the ``files`` the workflow's placeholders use (``{"inputs.image": path, ...}``), bind it with
    ``values`` and the uploads' names, keep it as ``<phase>/workflow.json``, submit it and wait for it.

    :return: the client, the prompt id and the output items.
    """
    client = ComfyUIClient(ctx.settings.comfyui.url, alive=ctx.comfyui.is_healthy if ctx.comfyui else None)
    wanted = set(find_placeholders(workflow))
    values = dict(values)
    for name, path in files.items():
        if name in wanted and path is not None:
            values[name] = client.upload(path, subfolder=f"vidax/{ctx.run_id}")
            ctx.event("comfyui.uploaded", f"uploaded {name}", {"name": values[name]})
    bound = bind_workflow(workflow, values)
    (ctx.phase_dir / "workflow.json").write_text(json.dumps(bound, indent=1))
    with client.session_socket() as sock:
        prompt_id = client.submit(bound, sock.client_id, extra_data={"vidax_run_id": ctx.run_id})
        ctx.event("comfyui.submitted", f"prompt {prompt_id}",
                  {"prompt_id": prompt_id, "websocket": sock.ws is not None})
        entry = client.wait(prompt_id, sock, timeout_s=timeout_s, total_nodes=len(bound),
                            on_progress=lambda f, info: ctx.progress(f, **info))
    items = client.outputs(entry)
    ctx.event("comfyui.completed", f"{len(items)} output file(s)",
              {"prompt_id": prompt_id, "outputs": [i.filename for i in items]})
    return client, prompt_id, items


def videos_of(items) -> list:
    """Video outputs, best first: VideoHelperSuite's variant with audio (``-audio``), then MP4, then node order."""
    def rank(item):
        stem = os.path.splitext(item.filename)[0]
        return (0 if stem.endswith("-audio") else 1, 0 if item.extension == ".mp4" else 1)

    return sorted((i for i in items if i.is_video), key=rank)


def images_of(items) -> list:
    """Image outputs; ``output`` images beat ``temp`` previews when both are there."""
    images = [i for i in items if i.is_image]
    if any(i.type == "output" for i in images):
        images = [i for i in images if i.type == "output"]
    return images


def collect_video(ctx, client: ComfyUIClient, item, out: Path) -> Path:
    """Download ``item`` to ``out`` as MP4 (transcoded to H.264 yuv420p, audio kept, when it is not MP4)."""
    raw = out.with_name(f"download{item.extension or '.bin'}")
    client.download(item, raw)
    info = probe(raw)
    if not info.has_video:
        raw.unlink(missing_ok=True)
        raise PhaseFailed(f"ComfyUI's output {item.filename} holds no video", code="COMFYUI_NO_OUTPUT")
    if "mp4" in info.format and item.extension in (".mp4", ".m4v", ".mov"):
        os.replace(raw, out)
        return out
    args = ["-i", str(raw), "-map", "0:v:0", "-map", "0:a:0?",
            "-vf", EVEN_YUV420,
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "16", "-c:a", "aac", "-movflags", "+faststart"]
    ffmpeg_to_file(out, args, ffmpeg=ctx.ffmpeg, fmt="mp4", what=f"transcoding {item.filename} to MP4",
                   duration=info.duration)
    raw.unlink(missing_ok=True)
    return out


def collect_frames(ctx, client: ComfyUIClient, images: list, frames: Path) -> tuple[Path, int]:
    """Download ``images`` as ``frames/000001.png``...; returns the pattern and the count."""
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
