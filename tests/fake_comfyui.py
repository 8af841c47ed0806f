"""A fake ComfyUI 0.3.64 for the tests, built from the recordings of a real server in ``shared/comfyui/``.

It is an aiohttp server (the recorded server ran aiohttp 3.14.5 too, so status lines, content types, the 500
page and ``FileResponse`` headers are aiohttp's own) with a prompt queue, a worker thread that executes graphs
node by node, a websocket per client, and nodes that make real media with imageio-ffmpeg's ffmpeg.

What follows the recordings (file names relative to ``shared/comfyui/``):

* every endpoint of README.md, each also under ``/api`` (``http/get_api_prefix_prompt.json``), with the
  recorded JSON shapes, status codes and content types;
* ``POST /prompt`` validates like the real server: no ``prompt`` -> 400 ``no_prompt``; a node without or with an
  unknown ``class_type`` -> 400 ``invalid_prompt`` with ``node_errors`` ``{}``; no output node -> 400
  ``prompt_no_outputs``; per-node ``required_input_missing``, ``invalid_input_type``, ``value_smaller_than_min``,
  ``value_bigger_than_max``, ``value_not_in_list``, ``custom_validation_failed`` (LoadImage/LoadAudio of a missing
  file), ``return_type_mismatch``, ``exception_during_validation`` (link to a missing node) with
  ``dependent_outputs``; a graph with some valid outputs is accepted (200) with the ``node_errors`` of the
  others, which are dropped; new-style (V3) nodes such as SaveVideo do not check COMBO values or ranges; a body
  that is not JSON or a ``prompt`` that is not an object -> 500 text/plain; ``number`` grows on every POST;
* websocket frames in the recorded order: ``status`` (with ``sid``) on connect; ``status`` x2 -> ``execution_start``
  -> ``execution_cached`` -> per node [``progress_state``, ``executing``, ``progress`` (nodes with a bar),
  ``executed`` (nodes with UI output), ``progress_state``] -> ``execution_success`` | ``execution_error`` |
  ``execution_interrupted`` -> ``status`` -> ``executing {node: null}``; execution messages only to the socket of
  the prompt's ``client_id`` (``progress_state``/``progress`` broadcast when there is none); node order as
  ComfyUI's execution list picks it (output nodes as soon as they are ready);
* the history entry is written ``history_delay`` seconds (default 2 ms, as measured) *after*
  ``execution_success``/``execution_error`` was sent, before the final ``status`` and ``executing null``;
  entries ``{prompt, outputs, status{status_str, completed, messages}, meta}``; unknown/running ids -> ``{}``;
* a one-prompt output cache (``runs/image_still_cached_rerun.json``): the same node with the same inputs in the
  next prompt is listed in ``execution_cached``, not run again, and its output nodes re-send ``executed`` with the
  earlier files; nodes that must always run (the test nodes that fail, sleep or kill) are never cached;
* ``POST /upload/image``: field ``image``, optional ``type``/``subfolder``/``overwrite``; same name + same bytes ->
  same name (nothing written), other bytes -> ``name (1).ext``, ``overwrite`` true/1 -> replaced; no file field or
  a subfolder escaping the folder -> 400 with an empty body; any bytes accepted;
* ``GET /view``: ``FileResponse`` with the guessed content type and ``Content-Disposition: filename="..."``;
  ``name [output]`` annotations; 400 for ``..`` in the filename or an unknown type, 403 for a subfolder escape,
  404 when missing (empty bodies); ``preview=``/``channel=`` re-encoding is not implemented (the file is served);
* ``POST /interrupt`` (optional ``prompt_id``; ignored when that prompt is not running), ``POST /queue``
  (``delete``/``clear`` of pending prompts), ``POST /history`` (``delete``/``clear``), ``POST /free``: 200 empty.

Nodes. Core nodes of the recorded workflows, so those replay here: EmptyImage, ImageAddNoise, ImageInvert,
LoadImage, LoadAudio, EmptyAudio, CreateVideo, SaveVideo (mp4/h264, ``animated: [true]``, a bad format fails at run
time with the recorded ValueError, odd sizes with the recorded libx264 error), SaveWEBM (vp9), SaveAnimatedWEBP,
SaveAnimatedPNG (``.png`` with ``animated: [true]``), SaveImage, PreviewImage (``temp``), SaveAudio (flac, output
key ``audio``). Test nodes (``VidaxTest*``):

* ``VidaxTestVideo``: an MP4 (h264/yuv420p) or WebM (vp9) of ``frames`` frames ``width`` x ``height`` at ``fps``,
  from an optional ``image`` (else a test pattern) with an optional ``audio`` track; reported like SaveVideo
  (``{"images": [{filename, subfolder, type}], "animated": [true]}``); a progress bar fed by ffmpeg;
* ``VidaxTestFrames``: an IMAGE batch of ``count`` frames (from an optional ``image``) for SaveImage;
* ``VidaxTestVideoCombine``: VideoHelperSuite-style (not recorded: README says ``gifs`` is a custom-node
  convention): ``{filename}_{00001}.mp4|webm`` reported under ``gifs`` with ``format`` and ``frame_rate``; with
  ``audio`` the reported file is the muxed ``{filename}_{00001}-audio.ext`` variant;
* ``VidaxTestFail``: raises ``exception_type(message)`` -> ``execution_error`` with the recorded payload shape;
* ``VidaxTestSlow``: sleeps ``seconds`` in ``steps`` with a progress bar; interruptible (``POST /interrupt`` ->
  ``execution_interrupted``);
* ``VidaxTestKillServer``: the server dies (in-process: it stops listening and cuts every connection; as a
  separate process: ``os._exit``), so clients see connections refused.

Not implemented: binary preview frames (SaveImageWebsocket, ``feature_flags`` is answered though), ``/view``
re-encoding, models and every other node class (they are rejected as unknown, like a server without them).

Switches: ``websocket_enabled`` (False: ``/ws`` answers 404), ``drop_websockets_before(type)`` (cut every socket
instead of sending the next message of that type), ``mute_websockets()`` (sockets stay open, nothing arrives),
``history_delay``, ``never_healthy`` (``/system_stats`` fails), ``kill()``. Recorded for assertions: ``posted``,
``accepted``, ``uploads``, ``interrupts``, ``ws_clients``, ``ws_sent``, ``requests``.

Run as a separate process (``python tests/fake_comfyui.py --port P ...``, see ``--help``) for the process
manager's tests: start delay, never healthy, early exit with a message on stderr, a pid file.
"""

from __future__ import annotations

import argparse
import asyncio
import builtins
import hashlib
import heapq
import itertools
import json
import mimetypes
import os
import random
import re
import shutil
import socket
import string
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import imageio_ffmpeg
from aiohttp import WSMsgType
from aiohttp import web

COMFYUI_VERSION = "0.3.64"
FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac")
FORCE_DOWNLOAD = {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}


# --------------------------------------------------------------------------- errors


def full_type_name(klass: type) -> str:
    """How ComfyUI names an exception type in ``execution_error`` (``PIL.UnidentifiedImageError``, ``ValueError``)."""
    if klass.__module__ == "builtins":
        return klass.__qualname__
    return f"{klass.__module__}.{klass.__qualname__}"


_EXCEPTION_TYPES: dict[str, type[BaseException]] = {}


def exception_type(dotted: str) -> type[BaseException]:
    """An exception class whose :func:`full_type_name` is ``dotted`` (a builtin one when it names one)."""
    builtin = getattr(builtins, dotted, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        return builtin
    if dotted not in _EXCEPTION_TYPES:
        module, _, name = dotted.rpartition(".")
        _EXCEPTION_TYPES[dotted] = type(name or "Exception", (Exception,),
                                        {"__module__": module or "builtins", "__qualname__": name or "Exception"})
    return _EXCEPTION_TYPES[dotted]


class InterruptProcessingException(Exception):
    """ComfyUI's interrupt, raised inside the running node."""


InterruptProcessingException.__module__ = "comfy.model_management"
_exception_type = exception_type


class _Killed(BaseException):
    """The server was killed (or is stopping) while a node ran: unwind without sending anything."""


# --------------------------------------------------------------------------- media values


def png_size(path: Path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != PNG_SIGNATURE:
        raise ValueError(f"{path} is not a PNG")
    width, height = struct.unpack(">II", head[16:24])
    return width, height


class Frames:
    """IMAGE: a batch of frames as PNG files ``00001.png`` ... in a folder."""

    def __init__(self, folder: Path, count: int | None = None):
        self.folder = folder
        self.count = count if count is not None else len(list(folder.glob("*.png")))
        self.width, self.height = png_size(self.paths()[0])

    @property
    def pattern(self) -> str:
        return str(self.folder / "%05d.png")

    def paths(self) -> list[Path]:
        return [self.folder / f"{i:05d}.png" for i in range(1, self.count + 1)]

    def __str__(self) -> str:
        return f"<IMAGE batch of {self.count} {self.width}x{self.height}>"


class Mask:
    """MASK (LoadImage's second output; no test uses it)."""

    def __str__(self) -> str:
        return "<MASK>"


@dataclass
class Audio:
    """AUDIO: a WAV file."""

    path: Path

    def __str__(self) -> str:
        return f"<AUDIO {self.path.name}>"


@dataclass
class Video:
    """VIDEO (CreateVideo): frames, a frame rate and an optional audio track."""

    frames: Frames
    fps: float
    audio: Audio | None = None

    def __str__(self) -> str:
        return f"<VIDEO {self.frames.count} frames at {self.fps:g} fps>"


def format_value(x: Any) -> Any:
    """``current_inputs`` values as ComfyUI formats them: primitives as they are, anything else as ``str``."""
    if x is None or isinstance(x, (int, float, bool, str)):
        return x
    return str(x)


# --------------------------------------------------------------------------- ffmpeg


def run_ffmpeg(args: list[str], ctx: NodeContext | None = None, total: int | None = None) -> None:
    """Run ffmpeg; with ``ctx`` and ``total`` frames, feed its ``-progress`` output to the node's progress bar
    (which also makes it interruptible)."""
    cmd = [FFMPEG, "-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
    if ctx is None or not total:
        proc = subprocess.run(cmd + args, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed: {proc.stderr.strip()[-600:]}")
        return
    cmd += ["-progress", "pipe:1", "-nostats", "-stats_period", "0.05"]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd + args, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            ctx.progress(0, total)
            last = 0
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("frame="):
                    try:
                        n = int(line.split("=", 1)[1])
                    except ValueError:
                        continue
                    if last < n < total:
                        ctx.progress(n, total)
                        last = n
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"ffmpeg failed: {err.read().decode('utf-8', 'replace').strip()[-600:]}")
    ctx.progress(total, total)


def _frames_input(frames: Frames, rate: float = 25) -> list[str]:
    return ["-framerate", f"{rate:g}", "-start_number", "1", "-i", frames.pattern]


def _filter_frames(ctx: NodeContext, frames: Frames, vf: str) -> Frames:
    out = ctx.workdir()
    run_ffmpeg([*_frames_input(frames), "-vf", vf, "-frames:v", str(frames.count), str(out / "%05d.png")])
    return Frames(out, frames.count)


# --------------------------------------------------------------------------- nodes


@dataclass
class NodeType:
    """One node class: its inputs as ``/object_info`` shows them, its outputs and its function.

    ``run(ctx, **inputs)`` returns ``(outputs, ui)``: the output values (a tuple, one per ``outputs`` type) and the
    UI output (what ``executed`` and the history report) or None. ``check(fake, **values)`` is the node's
    ``VALIDATE_INPUTS`` for the inputs named in ``check_inputs`` (True or a reason); ``changed(fake, inputs)`` its
    ``IS_CHANGED`` (``ALWAYS`` never hits the cache).
    """

    name: str
    required: dict[str, list] | Callable[[FakeComfyUI], dict[str, list]]
    run: Callable[..., tuple[tuple, dict | None]]
    optional: dict[str, list] = field(default_factory=dict)
    hidden: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    output_node: bool = False
    display_name: str | None = None
    description: str = ""
    python_module: str = "custom_nodes.vidax_test_nodes"
    category: str = "vidax/test"
    v3: bool = False  # new-style node: no COMBO/min/max validation at POST /prompt
    check: Callable[..., Any] | None = None
    check_inputs: tuple[str, ...] = ()
    changed: Callable[[FakeComfyUI, dict[str, Any]], Any] | None = None

    def inputs(self, fake: FakeComfyUI) -> dict[str, dict[str, list]]:
        required = self.required(fake) if callable(self.required) else self.required
        return {"required": required, "optional": self.optional}

    def input_info(self, fake: FakeComfyUI, name: str) -> tuple[Any, str, dict[str, Any]]:
        for category, specs in self.inputs(fake).items():
            if name in specs:
                spec = specs[name]
                return spec[0], category, (spec[1] if len(spec) > 1 else {})
        raise KeyError(name)

    def object_info(self, fake: FakeComfyUI) -> dict[str, Any]:
        ins = self.inputs(fake)
        inp: dict[str, Any] = {"required": ins["required"]}
        order: dict[str, Any] = {"required": list(ins["required"])}
        if self.optional:
            inp["optional"], order["optional"] = self.optional, list(self.optional)
        if self.hidden:
            inp["hidden"], order["hidden"] = self.hidden, list(self.hidden)
        info = {"input": inp, "input_order": order, "output": list(self.outputs),
                "output_is_list": [False] * len(self.outputs), "output_name": list(self.outputs)}
        if self.v3:
            info["output_tooltips"] = [None] * len(self.outputs)
        info.update({"name": self.name, "display_name": self.display_name or self.name,
                     "description": self.description, "python_module": self.python_module,
                     "category": self.category, "output_node": self.output_node})
        if self.v3:
            info.update({"deprecated": False, "experimental": False, "api_node": False})
        return info


ALWAYS = "always"  # IS_CHANGED of nodes that must run every time (ComfyUI: float("NaN"))
HIDDEN_PROMPT = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
SEED = ["INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}]


def _file_hash(fake: FakeComfyUI, name: Any) -> Any:
    path = fake.annotated_path(str(name))
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ALWAYS


def _exists_check(what: str) -> Callable[..., Any]:
    def check(fake: FakeComfyUI, **values: Any) -> Any:
        name = next(iter(values.values()))
        if not fake.annotated_path(str(name)).exists():
            return f"Invalid {what} file: {name}"
        return True

    return check


def _input_files(fake: FakeComfyUI, extensions: tuple[str, ...]) -> list[str]:
    return sorted(p.name for p in fake.input_dir.iterdir() if p.is_file() and p.suffix.lower() in extensions)


# ---- core nodes (as recorded: object_info and outputs)


def empty_image(ctx: NodeContext, width: int, height: int, batch_size: int, color: int):
    out = ctx.workdir()
    run_ffmpeg(["-f", "lavfi", "-i", f"color=c=0x{color:06x}:s={width}x{height}", "-frames:v", str(batch_size),
                str(out / "%05d.png")])
    return (Frames(out, batch_size),), None


def image_add_noise(ctx: NodeContext, image: Frames, seed: int, strength: float):
    amount = max(0, min(100, round(strength * 100)))
    return (_filter_frames(ctx, image, f"noise=alls={amount}:allf=t:all_seed={seed % 2147483647}"),), None


def image_invert(ctx: NodeContext, image: Frames):
    return (_filter_frames(ctx, image, "negate"),), None


def load_image(ctx: NodeContext, image: str):
    path = ctx.fake.annotated_path(image)
    out = ctx.workdir()
    try:
        run_ffmpeg(["-i", str(path), "-frames:v", "1", "-pix_fmt", "rgb24", str(out / "%05d.png")])
        frames = Frames(out, 1)
    except (RuntimeError, OSError, ValueError, IndexError):
        raise exception_type("PIL.UnidentifiedImageError")(f"cannot identify image file '{path}'") from None
    return (frames, Mask()), None


def load_audio(ctx: NodeContext, audio: str):
    path = ctx.fake.annotated_path(audio)
    out = ctx.workdir() / "audio.wav"
    run_ffmpeg(["-i", str(path), "-vn", "-c:a", "pcm_s16le", str(out)])
    return (Audio(out),), None


def empty_audio(ctx: NodeContext, duration: float, sample_rate: int, channels: int):
    out = ctx.workdir() / "audio.wav"
    layout = "mono" if channels == 1 else "stereo"
    run_ffmpeg(["-f", "lavfi", "-i", f"anullsrc=r={sample_rate}:cl={layout}", "-t", f"{duration:.6f}",
                "-c:a", "pcm_s16le", str(out)])
    return (Audio(out),), None


def create_video(ctx: NodeContext, images: Frames, fps: float, audio: Audio | None = None):
    return (Video(images, fps, audio),), None


def _ui_item(filename: str, subfolder: str, kind: str = "output") -> dict[str, str]:
    return {"filename": filename, "subfolder": subfolder, "type": kind}


def save_video(ctx: NodeContext, video: Video, filename_prefix: str, format: str, codec: str):
    if format not in ("auto", "mp4"):
        raise ValueError(f"'{format}' is not a valid VideoContainer")
    if codec not in ("auto", "h264"):
        raise ValueError(f"'{codec}' is not a valid VideoCodec")
    frames = video.frames
    if frames.width % 2 or frames.height % 2:  # libx264 with yuv420p: runtime_error_odd_size_h264
        raise exception_type("av.error.ExternalError")(
            "[Errno 542398533] Generic error in an external library: 'avcodec_open2(\"libx264\", {})'")
    folder, filename, counter, subfolder = ctx.save_path(filename_prefix)
    file = f"{filename}_{counter:05}_.mp4"
    args = _frames_input(frames, video.fps)
    if video.audio is not None:
        args += ["-i", str(video.audio.path), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-r", f"{video.fps:g}",
             "-t", f"{frames.count / video.fps:.6f}", str(folder / file)]
    run_ffmpeg(args)
    return (), {"images": [_ui_item(file, subfolder)], "animated": [True]}


def save_webm(ctx: NodeContext, images: Frames, filename_prefix: str, codec: str, fps: float, crf: float):
    if codec != "vp9":
        raise RuntimeError(f"fake ComfyUI: SaveWEBM codec {codec!r} is not available here")
    folder, filename, counter, subfolder = ctx.save_path(filename_prefix)
    file = f"{filename}_{counter:05}_.webm"
    run_ffmpeg([*_frames_input(images, fps), "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                "-b:v", "0", "-crf", f"{int(crf)}", "-pix_fmt", "yuv420p", str(folder / file)])
    return (), {"images": [_ui_item(file, subfolder)], "animated": [True]}


def save_animated_webp(ctx: NodeContext, images: Frames, filename_prefix: str, fps: float, lossless: bool,
                       quality: int, method: str):
    folder, filename, counter, subfolder = ctx.save_path(filename_prefix)
    file = f"{filename}_{counter:05}_.webp"
    run_ffmpeg([*_frames_input(images, fps), "-c:v", "libwebp_anim", "-lossless", "1" if lossless else "0",
                "-quality", str(quality), "-loop", "0", str(folder / file)])
    return (), {"images": [_ui_item(file, subfolder)], "animated": [True]}


def save_animated_png(ctx: NodeContext, images: Frames, filename_prefix: str, fps: float, compress_level: int):
    folder, filename, counter, subfolder = ctx.save_path(filename_prefix)
    file = f"{filename}_{counter:05}_.png"
    run_ffmpeg([*_frames_input(images, fps), "-c:v", "apng", "-plays", "0", "-compression_level",
                str(compress_level), "-f", "apng", str(folder / file)])
    return (), {"images": [_ui_item(file, subfolder)], "animated": [True]}


def _save_frames(ctx: NodeContext, images: Frames, filename_prefix: str, kind: str) -> list[dict[str, str]]:
    folder, filename, counter, subfolder = ctx.save_path(filename_prefix, kind)
    results = []
    for path in images.paths():
        file = f"{filename}_{counter:05}_.png"
        shutil.copyfile(path, folder / file)
        results.append(_ui_item(file, subfolder, kind))
        counter += 1
    return results


def save_image(ctx: NodeContext, images: Frames, filename_prefix: str):
    return (), {"images": _save_frames(ctx, images, filename_prefix, "output")}


def preview_image(ctx: NodeContext, images: Frames):
    prefix = "ComfyUI_temp_" + "".join(random.choice(string.ascii_lowercase) for _ in range(5))
    return (), {"images": _save_frames(ctx, images, prefix, "temp")}


def save_audio(ctx: NodeContext, audio: Audio, filename_prefix: str):
    folder, filename, counter, subfolder = ctx.save_path(filename_prefix)
    file = f"{filename}_{counter:05}_.flac"
    run_ffmpeg(["-i", str(audio.path), "-c:a", "flac", str(folder / file)])
    return (), {"audio": [_ui_item(file, subfolder)]}


# ---- test nodes


def _picture_source(image: Frames | None, width: int, height: int, fps: float, seed: int) -> tuple[list[str], str]:
    """ffmpeg input args and a filter for a moving picture: the image (looped, its hue turning) or a test pattern."""
    hue = f"hue=h={seed % 360}+90*t"
    if image is not None:
        return (["-loop", "1", "-framerate", f"{fps:g}", "-i", str(image.paths()[0])],
                f"scale={width}:{height},{hue}")
    return (["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps:g}"], hue)


def vidax_test_video(ctx: NodeContext, frames: int, width: int, height: int, fps: float, format: str,
               filename_prefix: str, seed: int, image: Frames | None = None, audio: Audio | None = None):
    folder, filename, counter, subfolder = ctx.save_path(filename_prefix)
    file = f"{filename}_{counter:05}_.{format}"
    args, vf = _picture_source(image, width, height, fps, seed)
    if audio is not None:
        args += ["-i", str(audio.path), "-map", "0:v:0", "-map", "1:a:0",
                 "-c:a", "aac" if format == "mp4" else "libopus"]
    if format == "mp4":
        codec = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-movflags", "+faststart"]
    else:
        codec = ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "0", "-crf", "40",
                 "-pix_fmt", "yuv420p"]
    run_ffmpeg([*args, "-vf", vf, *codec, "-r", f"{fps:g}", "-frames:v", str(frames), "-t", f"{frames / fps:.6f}",
                str(folder / file)], ctx, total=frames)
    return (), {"images": [_ui_item(file, subfolder)], "animated": [True]}


def vidax_test_frames(ctx: NodeContext, count: int, width: int, height: int, seed: int, image: Frames | None = None):
    out = ctx.workdir()
    args, vf = _picture_source(image, width, height, 25, seed)
    run_ffmpeg([*args, "-vf", vf, "-frames:v", str(count), str(out / "%05d.png")])
    return (Frames(out, count),), None


VHS_FORMATS = {"video/h264-mp4": ("mp4", ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"], "aac"),
               "video/webm": ("webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "0",
                                       "-crf", "40", "-pix_fmt", "yuv420p"], "libopus")}


def vidax_test_video_combine(ctx: NodeContext, images: Frames, frame_rate: float, loop_count: int, filename_prefix: str,
                       format: str, pingpong: bool, save_output: bool, audio: Audio | None = None):
    kind = "output" if save_output else "temp"
    folder, filename, _, subfolder = ctx.save_path(filename_prefix, kind)
    numbers = [int(m.group(1)) for p in folder.iterdir()
               if (m := re.match(rf"^{re.escape(filename)}_(\d+)\D*\..+$", p.name))]
    counter = max(numbers, default=0) + 1
    ext, codec, audio_codec = VHS_FORMATS[format]
    source = images
    if pingpong and images.count > 2:
        order = images.paths() + images.paths()[-2:0:-1]
        work = ctx.workdir()
        for i, path in enumerate(order, 1):
            shutil.copyfile(path, work / f"{i:05d}.png")
        source = Frames(work, len(order))
    first_image = f"{filename}_{counter:05}.png"
    shutil.copyfile(source.paths()[0], folder / first_image)
    file = f"{filename}_{counter:05}.{ext}"
    run_ffmpeg([*_frames_input(source, frame_rate), *codec, str(folder / file)], ctx, total=source.count)
    files = [folder / first_image, folder / file]
    if audio is not None:
        with_audio = f"{filename}_{counter:05}-audio.{ext}"
        run_ffmpeg(["-i", str(folder / file), "-i", str(audio.path), "-map", "0:v:0", "-map", "1:a:0",
                    "-c:v", "copy", "-c:a", audio_codec, "-af", f"apad=whole_dur={source.count / frame_rate:.6f}",
                    "-shortest", str(folder / with_audio)])
        files.append(folder / with_audio)
        file = with_audio
    ui = {"gifs": [{**_ui_item(file, subfolder, kind), "format": format, "frame_rate": frame_rate,
                    "workflow": first_image, "fullpath": str(folder / file)}]}
    return ((save_output, [str(f) for f in files]),), ui


def vidax_test_fail(ctx: NodeContext, message: str, exception_type: str, anything: Any = None):
    raise _exception_type(exception_type)(message)


def vidax_test_slow(ctx: NodeContext, seconds: float, steps: int, images: Frames | None = None):
    for step in range(1, steps + 1):
        end = time.monotonic() + seconds / steps
        while True:
            ctx.check_interrupt()
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(0.02, left))
        ctx.progress(step, steps)
    return (images,), None


def vidax_test_kill_server(ctx: NodeContext, exit_code: int, anything: Any = None):
    ctx.fake._kill_from_node(exit_code)
    raise _Killed()


def builtin_nodes() -> dict[str, NodeType]:
    core = dict(python_module="nodes", category="image")
    nodes = [
        # -- core, inputs as recorded in http/get_object_info_*.json
        NodeType("EmptyImage", {
            "width": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}],
            "height": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}],
            "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}],
            "color": ["INT", {"default": 0, "min": 0, "max": 16777215, "step": 1, "display": "color"}]},
            empty_image, outputs=("IMAGE",), **core),
        NodeType("ImageAddNoise", {
            "image": ["IMAGE"], "seed": SEED,
            "strength": ["FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}]},
            image_add_noise, outputs=("IMAGE",), python_module="comfy_extras.nodes_images", category="image"),
        NodeType("ImageInvert", {"image": ["IMAGE"]}, image_invert, outputs=("IMAGE",), display_name="Invert Image",
                 **core),
        NodeType("LoadImage", lambda fake: {"image": [_input_files(fake, IMAGE_EXTENSIONS), {"image_upload": True}]},
                 load_image, outputs=("IMAGE", "MASK"), display_name="Load Image", check=_exists_check("image"),
                 check_inputs=("image",), changed=lambda fake, inputs: _file_hash(fake, inputs.get("image")), **core),
        NodeType("LoadAudio", lambda fake: {"audio": [_input_files(fake, AUDIO_EXTENSIONS), {"audio_upload": True}]},
                 load_audio, outputs=("AUDIO",), display_name="Load Audio", check=_exists_check("audio"),
                 check_inputs=("audio",), changed=lambda fake, inputs: _file_hash(fake, inputs.get("audio")),
                 python_module="comfy_extras.nodes_audio", category="audio"),
        NodeType("EmptyAudio", {
            "duration": ["FLOAT", {"default": 60.0, "min": 0.0, "max": 18446744073709551615, "step": 0.01}],
            "sample_rate": ["INT", {"default": 44100}],
            "channels": ["INT", {"default": 2, "min": 1, "max": 2}]},
            empty_audio, outputs=("AUDIO",), display_name="Empty Audio", python_module="comfy_extras.nodes_audio",
            category="audio"),
        NodeType("CreateVideo", {
            "images": ["IMAGE", {"tooltip": "The images to create a video from."}],
            "fps": ["FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0, "step": 1.0}]},
            create_video, optional={"audio": ["AUDIO", {"tooltip": "The audio to add to the video."}]},
            outputs=("VIDEO",), display_name="Create Video", description="Create a video from images.",
            python_module="comfy_extras.nodes_video", category="image/video", v3=True),
        NodeType("SaveVideo", {
            "video": ["VIDEO", {"tooltip": "The video to save."}],
            "filename_prefix": ["STRING", {"default": "video/ComfyUI", "multiline": False}],
            "format": ["COMBO", {"default": "auto", "multiselect": False, "options": ["auto", "mp4"]}],
            "codec": ["COMBO", {"default": "auto", "multiselect": False, "options": ["auto", "h264"]}]},
            save_video, hidden={"prompt": ["PROMPT"], "extra_pnginfo": ["EXTRA_PNGINFO"]}, output_node=True,
            display_name="Save Video", description="Saves the input images to your ComfyUI output directory.",
            python_module="comfy_extras.nodes_video", category="image/video", v3=True),
        NodeType("SaveWEBM", {
            "images": ["IMAGE", {}],
            "filename_prefix": ["STRING", {"default": "ComfyUI", "multiline": False}],
            "codec": ["COMBO", {"multiselect": False, "options": ["vp9", "av1"]}],
            "fps": ["FLOAT", {"default": 24.0, "min": 0.01, "max": 1000.0, "step": 0.01}],
            "crf": ["FLOAT", {"default": 32.0, "min": 0, "max": 63.0, "step": 1}]},
            save_webm, hidden={"prompt": ["PROMPT"], "extra_pnginfo": ["EXTRA_PNGINFO"]}, output_node=True,
            python_module="comfy_extras.nodes_video", category="image/video", v3=True),
        NodeType("SaveAnimatedWEBP", {
            "images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}],
            "fps": ["FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}],
            "lossless": ["BOOLEAN", {"default": True}],
            "quality": ["INT", {"default": 80, "min": 0, "max": 100}],
            "method": [["default", "fastest", "slowest"]]},
            save_animated_webp, hidden=HIDDEN_PROMPT, output_node=True, python_module="comfy_extras.nodes_images",
            category="image/animation"),
        NodeType("SaveAnimatedPNG", {
            "images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}],
            "fps": ["FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}],
            "compress_level": ["INT", {"default": 4, "min": 0, "max": 9}]},
            save_animated_png, hidden=HIDDEN_PROMPT, output_node=True, python_module="comfy_extras.nodes_images",
            category="image/animation"),
        NodeType("SaveImage", {
            "images": ["IMAGE", {"tooltip": "The images to save."}],
            "filename_prefix": ["STRING", {"default": "ComfyUI", "tooltip": "The prefix for the file to save."}]},
            save_image, hidden=HIDDEN_PROMPT, output_node=True, display_name="Save Image",
            description="Saves the input images to your ComfyUI output directory.", **core),
        NodeType("PreviewImage", {"images": ["IMAGE"]}, preview_image, hidden=HIDDEN_PROMPT, output_node=True,
                 display_name="Preview Image", description="Saves the input images to your ComfyUI output "
                 "directory.", **core),
        NodeType("SaveAudio", {"audio": ["AUDIO"], "filename_prefix": ["STRING", {"default": "audio/ComfyUI"}]},
                 save_audio, hidden=HIDDEN_PROMPT, output_node=True, display_name="Save Audio (FLAC)",
                 python_module="comfy_extras.nodes_audio", category="audio"),
        # -- test nodes
        NodeType("VidaxTestVideo", {
            "frames": ["INT", {"default": 25, "min": 1, "max": 10000}],
            "width": ["INT", {"default": 256, "min": 8, "max": 4096}],
            "height": ["INT", {"default": 256, "min": 8, "max": 4096}],
            "fps": ["FLOAT", {"default": 25.0, "min": 1.0, "max": 120.0}],
            "format": [["mp4", "webm"], {"default": "mp4"}],
            "filename_prefix": ["STRING", {"default": "vidax/test_video"}],
            "seed": SEED},
            vidax_test_video, optional={"image": ["IMAGE"], "audio": ["AUDIO"]}, hidden=HIDDEN_PROMPT, output_node=True,
            description="Test node: an MP4/WebM of N frames WxH at fps, reported like SaveVideo."),
        NodeType("VidaxTestFrames", {
            "count": ["INT", {"default": 8, "min": 1, "max": 10000}],
            "width": ["INT", {"default": 256, "min": 8, "max": 4096}],
            "height": ["INT", {"default": 256, "min": 8, "max": 4096}],
            "seed": SEED},
            vidax_test_frames, optional={"image": ["IMAGE"]}, outputs=("IMAGE",),
            description="Test node: an IMAGE batch of N frames."),
        NodeType("VidaxTestVideoCombine", {
            "images": ["IMAGE"],
            "frame_rate": ["FLOAT", {"default": 8, "min": 1, "step": 1}],
            "loop_count": ["INT", {"default": 0, "min": 0, "max": 100, "step": 1}],
            "filename_prefix": ["STRING", {"default": "AnimateDiff"}],
            "format": [list(VHS_FORMATS)],
            "pingpong": ["BOOLEAN", {"default": False}],
            "save_output": ["BOOLEAN", {"default": True}]},
            vidax_test_video_combine, optional={"audio": ["AUDIO"]}, hidden=HIDDEN_PROMPT, outputs=("VHS_FILENAMES",),
            output_node=True, description="Test node in the style of VideoHelperSuite's Video Combine (gifs)."),
        NodeType("VidaxTestFail", {
            "message": ["STRING", {"default": "this node fails on purpose"}],
            "exception_type": ["STRING", {"default": "RuntimeError"}]},
            vidax_test_fail, optional={"anything": ["*"]}, output_node=True, changed=lambda fake, inputs: ALWAYS,
            description="Test node: raises exception_type(message)."),
        NodeType("VidaxTestSlow", {
            "seconds": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 3600.0}],
            "steps": ["INT", {"default": 10, "min": 1, "max": 10000}]},
            vidax_test_slow, optional={"images": ["IMAGE"]}, outputs=("IMAGE",), output_node=True,
            changed=lambda fake, inputs: ALWAYS, description="Test node: sleeps with a progress bar; interruptible."),
        NodeType("VidaxTestKillServer", {"exit_code": ["INT", {"default": 1, "min": 0, "max": 255}]},
                 vidax_test_kill_server, optional={"anything": ["*"]}, output_node=True,
                 changed=lambda fake, inputs: ALWAYS, description="Test node: the server dies."),
    ]
    return {n.name: n for n in nodes}


# --------------------------------------------------------------------------- validation (POST /prompt)


def is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], (int, float)) and not isinstance(value[1], bool))


def validate_node_input(received_type: Any, input_type: Any) -> bool:
    if not received_type != input_type:
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    received = {t.strip() for t in received_type.split(",")}
    wanted = {t.strip() for t in input_type.split(",")}
    if "*" in received or "*" in wanted:
        return True
    return bool(received & wanted)


def _error(kind: str, message: str, details: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


class Validator:
    """ComfyUI's ``validate_prompt``/``validate_inputs``, with the same errors, in the same places."""

    def __init__(self, fake: FakeComfyUI, prompt: dict[str, Any]):
        self.fake = fake
        self.prompt = prompt
        self.validated: dict[str, tuple[bool, list, str]] = {}

    def validate_prompt(self) -> tuple[bool, dict | None, list[str], dict[str, Any]]:
        prompt = self.prompt
        outputs = []
        for x in prompt:
            if "class_type" not in prompt[x]:
                return False, _error("invalid_prompt", "Cannot execute because a node is missing the class_type "
                                     "property.", f"Node ID '#{x}'", {}), [], {}
            class_type = prompt[x]["class_type"]
            node = self.fake.nodes.get(class_type)
            if node is None:
                return False, _error("invalid_prompt", f"Cannot execute because node {class_type} does not exist.",
                                     f"Node ID '#{x}'", {}), [], {}
            if node.output_node:
                outputs.append(x)
        if not outputs:
            return False, _error("prompt_no_outputs", "Prompt has no outputs", "", {}), [], {}

        good_outputs: list[str] = []
        errors: list[tuple[str, list]] = []
        node_errors: dict[str, Any] = {}
        for o in outputs:
            try:
                valid, reasons, _ = self.validate_inputs(o)
            except Exception as ex:
                valid = False
                reasons = [_error("exception_during_validation", "Exception when validating node", str(ex),
                                  {"exception_type": full_type_name(type(ex)),
                                   "traceback": traceback.format_tb(ex.__traceback__)})]
                self.validated[o] = (False, reasons, o)
            if valid is True:
                good_outputs.append(o)
                continue
            if reasons:
                errors.append((o, reasons))
            for node_id, (ok, node_reasons, _) in self.validated.items():
                if ok is not True and node_reasons:
                    if node_id not in node_errors:
                        node_errors[node_id] = {"errors": node_reasons, "dependent_outputs": [],
                                                "class_type": prompt[node_id]["class_type"]}
                    node_errors[node_id]["dependent_outputs"].append(o)
        if not good_outputs:
            details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in errors for e in errs)
            return False, _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details,
                                 {}), [], node_errors
        return True, None, good_outputs, node_errors

    def validate_inputs(self, unique_id: str) -> tuple[bool, list, str]:
        if unique_id in self.validated:
            return self.validated[unique_id]
        prompt = self.prompt
        inputs = prompt[unique_id]["inputs"]
        node = self.fake.nodes[prompt[unique_id]["class_type"]]
        declared = node.inputs(self.fake)
        errors: list[dict[str, Any]] = []
        valid = True
        for x in [*declared["required"], *declared["optional"]]:
            input_type, category, extra = node.input_info(self.fake, x)
            if x not in inputs:
                if category == "required":
                    errors.append(_error("required_input_missing", "Required input is missing", x,
                                         {"input_name": x}))
                continue
            val = inputs[x]
            info = [input_type, extra]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append(_error("bad_linked_input", "Bad linked input, must be a length-2 list of "
                                         "[node_id, slot_index]", x,
                                         {"input_name": x, "input_config": info, "received_value": val}))
                    continue
                o_id = val[0]
                o_class_type = prompt[o_id]["class_type"]
                received_type = self.fake.nodes[o_class_type].outputs[val[1]]
                if not validate_node_input(received_type, input_type):
                    errors.append(_error(
                        "return_type_mismatch", "Return type mismatch between linked nodes",
                        f"{x}, received_type({received_type}) mismatch input_type({input_type})",
                        {"input_name": x, "input_config": info, "received_type": received_type, "linked_node": val}))
                    continue
                try:
                    r = self.validate_inputs(o_id)
                    if r[0] is False:
                        valid = False
                        continue
                except Exception as ex:
                    valid = False
                    reasons = [_error("exception_during_inner_validation", "Exception when validating inner node",
                                      str(ex), {"input_name": x, "input_config": info, "exception_message": str(ex),
                                                "exception_type": full_type_name(type(ex)),
                                                "traceback": traceback.format_tb(ex.__traceback__),
                                                "linked_node": val})]
                    self.validated[o_id] = (False, reasons, o_id)
                    continue
            else:
                try:
                    if input_type == "INT":
                        val = int(val)
                    elif input_type == "FLOAT":
                        val = float(val)
                    elif input_type == "STRING":
                        val = str(val)
                    elif input_type == "BOOLEAN":
                        val = bool(val)
                    inputs[x] = val
                except Exception as ex:
                    errors.append(_error("invalid_input_type",
                                         f"Failed to convert an input value to a {input_type} value",
                                         f"{x}, {val}, {ex}", {"input_name": x, "input_config": info,
                                                               "received_value": val, "exception_message": str(ex)}))
                    continue
                if x in node.check_inputs or node.v3:
                    continue
                if "min" in extra and val < extra["min"]:
                    errors.append(_error("value_smaller_than_min", f"Value {val} smaller than min of {extra['min']}",
                                         x, {"input_name": x, "input_config": info, "received_value": val}))
                    continue
                if "max" in extra and val > extra["max"]:
                    errors.append(_error("value_bigger_than_max", f"Value {val} bigger than max of {extra['max']}",
                                         x, {"input_name": x, "input_config": info, "received_value": val}))
                    continue
                if isinstance(input_type, list) or input_type == "COMBO":
                    options = extra.get("options", []) if input_type == "COMBO" else input_type
                    if val not in options:
                        config: Any = info
                        if len(options) > 20:
                            listed, config = f"(list of length {len(options)})", None
                        else:
                            listed = str(options)
                        errors.append(_error("value_not_in_list", "Value not in list", f"{x}: '{val}' not in {listed}",
                                             {"input_name": x, "input_config": config, "received_value": val}))
                        continue
        if node.check is not None:
            values = {x: inputs[x] for x in node.check_inputs if x in inputs and not isinstance(inputs[x], list)}
            if values:
                r = node.check(self.fake, **values)
                if r is not True:
                    for x in values:
                        details = x if r is False else f"{x} - {r}"
                        errors.append(_error("custom_validation_failed", "Custom validation failed for node",
                                             details, {"input_name": x}))
        ret = (False, errors, unique_id) if errors or valid is not True else (True, [], unique_id)
        self.validated[unique_id] = ret
        return ret


# --------------------------------------------------------------------------- execution


class ExecutionList:
    """The order ComfyUI runs nodes in: ready nodes, an output node first, else one that unblocks an output
    (two levels deep), else the first ready one (``runs/video_with_uploaded_audio.json``: 3, 6, 1, 2, 4, 5)."""

    def __init__(self, prompt: dict[str, Any], nodes: dict[str, NodeType], cached: set[str]):
        self.prompt = prompt
        self.nodes = nodes
        self.cached = cached
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, bool]] = {}

    def add_node(self, node_id: str) -> None:
        """Add a node and its uncached ancestors, depth first through a stack (last input first: the order
        ``runs/video_with_empty_audio.json`` shows, EmptyAudio before EmptyImage), then the links."""
        stack, links = [node_id], []
        while stack:
            unique_id = stack.pop()
            if unique_id in self.pending:
                continue
            self.pending[unique_id] = True
            self.block_count[unique_id] = 0
            self.blocking[unique_id] = {}
            for value in self.prompt[unique_id]["inputs"].values():
                if is_link(value):
                    if value[0] not in self.cached:
                        stack.append(value[0])
                    links.append((value[0], unique_id))
        for source, target in links:
            if source not in self.cached and target not in self.blocking[source]:
                self.blocking[source][target] = True
                self.block_count[target] += 1

    def is_output(self, node_id: str) -> bool:
        return self.nodes[self.prompt[node_id]["class_type"]].output_node

    def stage(self) -> str:
        available = [n for n in self.pending if self.block_count[n] == 0]
        if not available:
            raise RuntimeError("dependency cycle in the prompt")
        for n in available:
            if self.is_output(n):
                return n
        for n in available:
            if any(self.is_output(b) for b in self.blocking[n]):
                return n
        for n in available:
            if any(self.is_output(b1) for b in self.blocking[n] for b1 in self.blocking[b]):
                return n
        return available[0]

    def complete(self, node_id: str) -> None:
        del self.pending[node_id]
        for blocked in self.blocking.pop(node_id):
            self.block_count[blocked] -= 1


class NodeContext:
    """What a node function gets: the fake, its progress bar, a work folder, save paths."""

    def __init__(self, execution: Execution, node_id: str):
        self.execution = execution
        self.fake = execution.fake
        self.node_id = node_id

    def check_interrupt(self) -> None:
        if self.fake._killed or self.fake._stopping:
            raise _Killed()
        if self.fake._interrupt.is_set():
            raise InterruptProcessingException()

    def progress(self, value: int | float, maximum: int | float) -> None:
        self.check_interrupt()
        self.execution.progress_update(self.node_id, value, maximum)

    def workdir(self) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"node{self.node_id}-", dir=self.fake.work_dir))

    def save_path(self, filename_prefix: str, kind: str = "output") -> tuple[Path, str, int, str]:
        """ComfyUI's ``get_save_image_path``: ``(folder, filename, counter, subfolder)``; a ``/`` in the prefix
        becomes the subfolder, the counter is one more than the highest ``<filename>_<n>_`` there."""
        base = os.path.abspath(self.fake.dirs[kind])
        subfolder = os.path.dirname(os.path.normpath(filename_prefix))
        filename = os.path.basename(os.path.normpath(filename_prefix))
        folder = os.path.join(base, subfolder)
        if os.path.commonpath((base, os.path.abspath(folder))) != base:
            raise Exception("**** ERROR: Saving image outside the output folder is not allowed.")
        os.makedirs(folder, exist_ok=True)
        counters = []
        for name in os.listdir(folder):
            prefix = name[:len(filename) + 1]
            try:
                digits = int(name[len(filename) + 1:].split("_")[0])
            except ValueError:
                digits = 0
            if prefix[:-1] == filename and prefix[-1:] == "_":
                counters.append(digits)
        return Path(folder), filename, max(counters, default=0) + 1, subfolder


@dataclass
class CacheEntry:
    signature: Any
    outputs: tuple
    ui: dict[str, Any] | None


class Execution:
    """One prompt being executed: its status messages (for the history) and its ``progress_state``."""

    def __init__(self, fake: FakeComfyUI, prompt_id: str, client_id: str | None):
        self.fake = fake
        self.prompt_id = prompt_id
        self.client_id = client_id
        self.messages: list[list[Any]] = []
        self.progress_nodes: dict[str, dict[str, Any]] = {}

    def add_message(self, event: str, data: dict[str, Any], broadcast: bool = False) -> None:
        data = {**data, "timestamp": int(time.time() * 1000)}
        self.messages.append([event, data])
        if self.client_id is not None or broadcast:
            self.fake.send_sync(event, data, self.client_id)

    def send(self, event: str, data: dict[str, Any]) -> None:
        """A message for the prompt's client only (never broadcast)."""
        if self.client_id is not None:
            self.fake.send_sync(event, data, self.client_id)

    def _entry(self, node_id: str) -> dict[str, Any]:
        return self.progress_nodes.setdefault(node_id, {"state": "pending", "value": 0, "max": 1})

    def _send_progress_state(self) -> None:
        nodes = {nid: {"value": e["value"], "max": e["max"], "state": e["state"], "node_id": nid,
                       "prompt_id": self.prompt_id, "display_node_id": nid, "parent_node_id": None,
                       "real_node_id": nid}
                 for nid, e in self.progress_nodes.items() if e["state"] != "pending"}
        self.fake.send_sync("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes}, self.client_id)

    def progress_start(self, node_id: str) -> None:
        self._entry(node_id).update(state="running", value=0.0, max=1.0)
        self._send_progress_state()

    def progress_update(self, node_id: str, value: int | float, maximum: int | float) -> None:
        self._entry(node_id).update(state="running", value=value, max=maximum)
        self._send_progress_state()
        self.fake.send_sync("progress", {"value": value, "max": maximum, "prompt_id": self.prompt_id,
                                         "node": node_id}, self.client_id)

    def progress_finish(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.update(state="finished", value=entry["max"])
        self._send_progress_state()


# --------------------------------------------------------------------------- the server


@dataclass
class Upload:
    """One ``POST /upload/image`` as the fake stored it."""

    name: str
    subfolder: str
    type: str
    data: bytes
    filename: str  # the name the client sent
    overwrite: bool
    duplicate: bool  # same name and bytes as a file there: nothing written


class FakeComfyUI:
    """The fake server. ``FakeComfyUI().start_in_thread()`` serves on a free 127.0.0.1 port (``.url``) until
    ``.stop()``; ``serve_forever()`` serves in the calling thread (the ``__main__`` CLI)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, root: str | os.PathLike | None = None, *,
                 never_healthy: bool = False, history_delay: float = 0.002, argv: list[str] | None = None):
        self.host = host
        self.port = port
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="fake-comfyui-")) if root is None else Path(root)
        self.dirs = {k: self.root / k for k in ("input", "output", "temp")}
        self.input_dir = self.dirs["input"]
        self.work_dir = self.root / ".work"
        for d in (*self.dirs.values(), self.work_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.nodes = builtin_nodes()
        self.never_healthy = never_healthy
        self.history_delay = history_delay
        self.websocket_enabled = True
        self.argv = argv
        # what the tests look at
        self.posted: list[Any] = []  # every POST /prompt body (parsed JSON, or the raw text when not JSON)
        self.accepted: list[dict[str, Any]] = []  # prompts queued: prompt_id, number, prompt, extra_data, outputs
        self.uploads: list[Upload] = []
        self.interrupts = 0
        self.interrupt_bodies: list[Any] = []
        self.ws_clients: list[str] = []  # clientId of every websocket, in connection order
        self.ws_sent: list[tuple[str, dict[str, Any]]] = []  # (clientId, message) of every text frame sent
        self.ws_drops = 0
        self.requests: list[tuple[str, str]] = []  # (method, path?query) of every request
        # state
        self.number = 0
        self.history: dict[str, dict[str, Any]] = {}
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self._transports: dict[str, Any] = {}
        self._drop_before: set[str] = set()
        self._muted = False
        self._cv = threading.Condition()
        self._pending: list[tuple[Any, int, tuple]] = []
        self._seq = itertools.count()
        self._running: dict[str, tuple] = {}
        self._cache: dict[str, CacheEntry] = {}
        self._interrupt = threading.Event()
        self._client_id: str | None = None
        self._last_node_id: str | None = None
        self._killed = False
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._outbox: asyncio.Queue | None = None
        self._publisher: asyncio.Future | None = None
        self._thread: threading.Thread | None = None
        self._worker: threading.Thread | None = None
        self.on_kill: Callable[[int], None] | None = None  # what VidaxTestKillServer does (default: kill())

    # ---------------------------------------------------------------- lifetime

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _listen(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        return sock

    def start_in_thread(self) -> FakeComfyUI:
        sock = self._listen()
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._astart(sock))
            except BaseException as exc:  # report to start_in_thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            try:
                self._loop.run_until_complete(self._astop())
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="fake-comfyui-http", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        self._start_worker()
        return self

    def serve_forever(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve in this thread until SIGTERM/SIGINT (the CLI)."""
        import signal

        sock = self._listen()
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._astart(sock))
        self._start_worker()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._loop.stop)
        if on_ready is not None:
            on_ready()
        try:
            self._loop.run_forever()
        finally:
            self._stopping = True
            self._interrupt.set()
            with self._cv:
                self._cv.notify_all()
            self._loop.run_until_complete(self._astop())
            self._loop.close()
            if self._own_root:
                shutil.rmtree(self.root, ignore_errors=True)

    def _start_worker(self) -> None:
        self._worker = threading.Thread(target=self._work, name="fake-comfyui-worker", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        """Stop serving and remove the folders it made."""
        if self._stopping and self._thread is None:
            return
        self._stopping = True
        self._interrupt.set()
        with self._cv:
            self._cv.notify_all()
        if self._loop is not None and self._thread is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(15)
            self._thread = None
        if self._worker is not None:
            self._worker.join(15)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> FakeComfyUI:
        return self.start_in_thread()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    async def _astart(self, sock: socket.socket) -> None:
        self._outbox = asyncio.Queue()
        app = web.Application(middlewares=[self._log_request], client_max_size=FEATURES["max_upload_size"])
        routes = [
            ("GET", "/system_stats", self.get_system_stats), ("GET", "/features", self.get_features),
            ("GET", "/object_info", self.get_object_info), ("GET", "/object_info/{node_class}", self.get_object_info),
            ("GET", "/prompt", self.get_prompt), ("POST", "/prompt", self.post_prompt),
            ("GET", "/queue", self.get_queue), ("POST", "/queue", self.post_queue),
            ("GET", "/history", self.get_history), ("GET", "/history/{prompt_id}", self.get_history),
            ("POST", "/history", self.post_history), ("POST", "/interrupt", self.post_interrupt),
            ("POST", "/free", self.post_free), ("POST", "/upload/image", self.post_upload_image),
            ("GET", "/view", self.get_view), ("GET", "/ws", self.websocket),
        ]
        for prefix in ("", "/api"):
            for method, path, handler in routes:
                app.router.add_route(method, prefix + path, handler)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self._publisher = asyncio.ensure_future(self._publish())

    async def _astop(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
        for ws in list(self.sockets.values()):
            try:
                await asyncio.wait_for(ws.close(), 1.0)
            except Exception:  # a socket that is gone already
                pass
        if self._runner is not None:
            await self._runner.cleanup()

    # ---------------------------------------------------------------- dying on purpose

    def kill(self) -> None:
        """Die like a crashed server: stop listening (connections are refused) and cut every connection."""
        if self._killed or self._loop is None:
            return
        self._killed = True
        self._interrupt.set()
        future = asyncio.run_coroutine_threadsafe(self._akill(), self._loop)
        future.result(10)

    async def _akill(self) -> None:
        assert self._runner is not None
        for site in list(self._runner.sites):
            await site.stop()
        for transport in list(self._transports.values()):
            transport.abort()
        server = self._runner.server
        for proto in list(server.connections if server is not None else []):
            if proto.transport is not None:
                proto.transport.abort()
        self.sockets.clear()
        self._transports.clear()

    def _kill_from_node(self, exit_code: int) -> None:
        if self.on_kill is not None:
            self.on_kill(exit_code)
        else:
            self.kill()

    def drop_websockets_before(self, event: str) -> None:
        """Cut every websocket (no close frame) instead of sending the next message of type ``event``."""
        self._drop_before.add(event)

    def mute_websockets(self) -> None:
        """From now on nothing reaches the open websockets, which stay open (a half-open connection)."""
        self._muted = True

    # ---------------------------------------------------------------- websocket

    def send_sync(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        """Queue a message from any thread; ``sid`` None broadcasts (ComfyUI's ``send_sync``)."""
        if self._killed or self._loop is None or self._outbox is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._outbox.put_nowait, (event, data, sid))
        except RuntimeError:  # the loop is closed: the server is gone
            pass

    async def _publish(self) -> None:
        assert self._outbox is not None
        while True:
            event, data, sid = await self._outbox.get()
            await self._send(event, data, sid)

    async def _send(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        if self._killed:
            return
        message = {"type": event, "data": data}
        if sid is None:
            targets = list(self.sockets.items())
        else:
            targets = [(sid, self.sockets[sid])] if sid in self.sockets else []
        if event in self._drop_before and targets:
            self._drop_before.discard(event)
            for s, _ in targets:
                transport = self._transports.pop(s, None)
                self.sockets.pop(s, None)
                if transport is not None:
                    transport.abort()
                self.ws_drops += 1
            return
        if self._muted:
            return
        text = json.dumps(message)
        for s, ws in targets:
            self.ws_sent.append((s, message))
            try:
                await ws.send_str(text)
            except Exception:  # the client went away
                pass

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        if not self.websocket_enabled:
            raise web.HTTPNotFound()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "")
        if sid:
            self.sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        self.sockets[sid] = ws
        self._transports[sid] = request.transport
        self.ws_clients.append(sid)
        try:
            await self._send("status", {"status": self.queue_info(), "sid": sid}, sid)
            if self._client_id == sid and self._last_node_id is not None:
                await self._send("executing", {"node": self._last_node_id}, sid)
            first = True
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                    await self._send("feature_flags", dict(FEATURES), sid)
                first = False
        finally:
            if self.sockets.get(sid) is ws:
                del self.sockets[sid]
                self._transports.pop(sid, None)
        return ws

    # ---------------------------------------------------------------- HTTP

    @web.middleware
    async def _log_request(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        return await handler(request)

    def queue_info(self) -> dict[str, Any]:
        with self._cv:
            return {"exec_info": {"queue_remaining": len(self._pending) + len(self._running)}}

    def queue_updated(self) -> None:
        self.send_sync("status", {"status": self.queue_info()})

    async def get_system_stats(self, request: web.Request) -> web.Response:
        if self.never_healthy:
            raise RuntimeError("fake ComfyUI: never healthy")
        page = os.sysconf("SC_PAGE_SIZE")
        total, free = page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
        return web.json_response({
            "system": {"os": os.name, "ram_total": total, "ram_free": free, "comfyui_version": COMFYUI_VERSION,
                       "required_frontend_version": "1.27.10", "installed_templates_version": "0.1.95",
                       "required_templates_version": "0.1.95", "python_version": sys.version,
                       "pytorch_version": "fake (no torch)", "embedded_python": False,
                       "argv": self.argv or ["main.py", "--cpu", "--listen", self.host, "--port", str(self.port)]},
            "devices": [{"name": "cpu", "type": "cpu", "index": None, "vram_total": total, "vram_free": free,
                         "torch_vram_total": total, "torch_vram_free": free}]})

    async def get_features(self, request: web.Request) -> web.Response:
        return web.json_response(dict(FEATURES))

    async def get_object_info(self, request: web.Request) -> web.Response:
        name = request.match_info.get("node_class")
        if name is None:
            return web.json_response({n: t.object_info(self) for n, t in self.nodes.items()})
        node = self.nodes.get(name)
        return web.json_response({name: node.object_info(self)} if node else {})

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self.queue_info())

    async def post_prompt(self, request: web.Request) -> web.Response:
        raw = await request.text()
        try:
            self.posted.append(json.loads(raw))
        except ValueError:
            self.posted.append(raw)
        json_data = json.loads(raw)  # not JSON: aiohttp's 500 text/plain, as recorded
        if "number" in json_data:
            number: Any = float(json_data["number"])
        else:
            number = self.number
            if json_data.get("front"):
                number = -number
        self.number += 1
        if "prompt" not in json_data:
            return web.json_response({"error": _error("no_prompt", "No prompt provided", "No prompt provided", {}),
                                      "node_errors": {}}, status=400)
        prompt = json_data["prompt"]
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        valid, error, outputs, node_errors = Validator(self, prompt).validate_prompt()
        extra_data = dict(json_data.get("extra_data", {}))
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not valid:
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        item = (number, prompt_id, prompt, extra_data, outputs)
        self.accepted.append({"prompt_id": prompt_id, "number": number, "prompt": prompt, "extra_data": extra_data,
                              "outputs": outputs})
        with self._cv:
            heapq.heappush(self._pending, (number, next(self._seq), item))
            self._cv.notify()
        self.queue_updated()
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    async def get_queue(self, request: web.Request) -> web.Response:
        with self._cv:
            running = [list(item) for item in self._running.values()]
            pending = [list(entry[2]) for entry in self._pending]
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def post_queue(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        with self._cv:
            if json_data.get("clear"):
                self._pending.clear()
            for prompt_id in json_data.get("delete", []):
                self._pending = [e for e in self._pending if e[2][1] != prompt_id]
            heapq.heapify(self._pending)
        self.queue_updated()
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info.get("prompt_id")
        with self._cv:
            if prompt_id is not None:
                out = {prompt_id: self.history[prompt_id]} if prompt_id in self.history else {}
            else:
                max_items = request.rel_url.query.get("max_items")
                keys = list(self.history)
                if max_items is not None:
                    keys = keys[max(0, len(keys) - int(max_items)):]
                out = {k: self.history[k] for k in keys}
            return web.json_response(json.loads(json.dumps(out)))

    async def post_history(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        with self._cv:
            if json_data.get("clear"):
                self.history.clear()
            for prompt_id in json_data.get("delete", []):
                self.history.pop(prompt_id, None)
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.Response:
        self.interrupts += 1
        try:
            json_data = await request.json()
        except ValueError:
            json_data = {}
        self.interrupt_bodies.append(json_data)
        prompt_id = json_data.get("prompt_id") if isinstance(json_data, dict) else None
        with self._cv:
            running = prompt_id is None or prompt_id in self._running
        if running:
            self._interrupt.set()
        return web.Response(status=200)

    async def post_free(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def post_upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        overwrite = post.get("overwrite")
        upload_type = post.get("type")
        if upload_type is None:
            upload_type = "input"
        upload_dir = os.path.abspath(self.dirs[str(upload_type)])
        if not (image and image.file):  # type: ignore[union-attr]
            return web.Response(status=400)
        filename = image.filename  # type: ignore[union-attr]
        if not filename:
            return web.Response(status=400)
        subfolder = str(post.get("subfolder", ""))
        folder = os.path.join(upload_dir, os.path.normpath(subfolder))
        filepath = os.path.abspath(os.path.join(folder, filename))
        if os.path.commonpath((upload_dir, filepath)) != upload_dir:
            return web.Response(status=400)
        os.makedirs(folder, exist_ok=True)
        data = image.file.read()  # type: ignore[union-attr]
        stem, ext = os.path.splitext(filename)
        duplicate = False
        replace = overwrite is not None and overwrite in ("true", "1")
        if not replace:
            i = 1
            while os.path.exists(filepath):
                with open(filepath, "rb") as f:
                    if hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest():
                        duplicate = True
                        break
                filename = f"{stem} ({i}){ext}"
                filepath = os.path.join(folder, filename)
                i += 1
        if not duplicate:
            with open(filepath, "wb") as f:
                f.write(data)
        self.uploads.append(Upload(filename, subfolder, str(upload_type), data, image.filename,  # type: ignore
                                   replace, duplicate))
        return web.json_response({"name": filename, "subfolder": subfolder, "type": upload_type})

    def annotated_path(self, name: str) -> Path:
        """Where a LoadImage/LoadAudio value (``sub/name.png``, ``name.png [output]``) points."""
        for kind in ("output", "input", "temp"):
            if name.endswith(f"[{kind}]"):
                return self.dirs[kind] / name[:-(len(kind) + 3)]
        return self.dirs["input"] / name

    async def get_view(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        if "filename" in query:
            filename = query["filename"]
            output_dir: str | None = None
            for kind in ("output", "input", "temp"):
                if filename.endswith(f"[{kind}]"):
                    filename, output_dir = filename[:-(len(kind) + 3)], str(self.dirs[kind].absolute())
                    break
            if not filename:
                return web.Response(status=400)
            if filename[0] == "/" or ".." in filename:
                return web.Response(status=400)
            if output_dir is None:
                kind = query.get("type", "output")
                output_dir = str(self.dirs[kind].absolute()) if kind in self.dirs else None
            if output_dir is None:
                return web.Response(status=400)
            if "subfolder" in query:
                full = os.path.join(output_dir, query["subfolder"])
                if os.path.commonpath((os.path.abspath(full), output_dir)) != output_dir:
                    return web.Response(status=403)
                output_dir = full
            filename = os.path.basename(filename)
            file = os.path.join(output_dir, filename)
            if os.path.isfile(file):
                content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
                if content_type in FORCE_DOWNLOAD:
                    content_type = "application/octet-stream"
                return web.FileResponse(file, headers={"Content-Disposition": f'filename="{filename}"',
                                                       "Content-Type": content_type})
        return web.Response(status=404)

    # ---------------------------------------------------------------- the worker

    def _work(self) -> None:
        while not self._stopping and not self._killed:
            with self._cv:
                while not self._pending and not self._stopping and not self._killed:
                    self._cv.wait(0.2)
                if self._stopping or self._killed:
                    return
                _, _, item = heapq.heappop(self._pending)
                self._running[item[1]] = item
            self.queue_updated()
            try:
                self._execute(item)
            except _Killed:
                return
            except Exception:  # a bug in the fake itself: keep serving, say why
                traceback.print_exc()
                with self._cv:
                    self._running.pop(item[1], None)

    def _signature(self, prompt: dict[str, Any], node_id: str, memo: dict[str, Any], visiting: set[str]) -> Any:
        if node_id in memo:
            return memo[node_id]
        if node_id in visiting or node_id not in prompt:
            return object()
        visiting.add(node_id)
        node = prompt[node_id]
        spec = self.nodes.get(node.get("class_type"))
        changed = spec.changed(self, node["inputs"]) if spec is not None and spec.changed else None
        if changed == ALWAYS:
            sig: Any = object()  # equal to nothing else: never a cache hit
        else:
            parts: list[Any] = [node.get("class_type"), changed]
            for name, value in sorted(node.get("inputs", {}).items()):
                if is_link(value):
                    parts.append((name, self._signature(prompt, value[0], memo, visiting), value[1]))
                else:
                    parts.append((name, json.dumps(value, sort_keys=True)))
            sig = tuple(parts)
        visiting.discard(node_id)
        memo[node_id] = sig
        return sig

    def _execute(self, item: tuple) -> None:
        number, prompt_id, prompt, extra_data, outputs = item
        self._interrupt.clear()
        client_id = extra_data.get("client_id")
        self._client_id = client_id
        ex = Execution(self, prompt_id, client_id)
        ex.add_message("execution_start", {"prompt_id": prompt_id})
        memo: dict[str, Any] = {}
        signatures = {nid: self._signature(prompt, nid, memo, set()) for nid in prompt}
        cached = [nid for nid in prompt if nid in self._cache and self._cache[nid].signature == signatures[nid]]
        ex.add_message("execution_cached", {"nodes": cached, "prompt_id": prompt_id})
        values = {nid: self._cache[nid].outputs for nid in cached}
        ui = {nid: self._cache[nid].ui for nid in cached if self._cache[nid].ui}
        plan = ExecutionList(prompt, self.nodes, set(cached))
        for o in outputs:
            plan.add_node(o)
        executed: list[str] = []
        failure: dict[str, Any] | None = None
        interrupted_at: str | None = None
        while plan.pending:
            node_id = plan.stage()
            if node_id in cached:
                ex.send("executed", {"node": node_id, "display_node": node_id,
                                     "output": ui.get(node_id), "prompt_id": prompt_id})
                ex.progress_finish(node_id)
            else:
                try:
                    self._execute_node(ex, prompt, node_id, values, ui)
                except InterruptProcessingException:
                    interrupted_at = node_id
                    break
                except _NodeFailed as nf:
                    failure = nf.details
                    break
            executed.append(node_id)
            plan.complete(node_id)
        self._last_node_id = None
        if interrupted_at is not None:
            ex.add_message("execution_interrupted", {
                "prompt_id": prompt_id, "node_id": interrupted_at, "node_type": prompt[interrupted_at]["class_type"],
                "executed": executed}, broadcast=True)
        elif failure is not None:
            ex.add_message("execution_error", {
                "prompt_id": prompt_id, "node_id": failure["node_id"],
                "node_type": prompt[failure["node_id"]]["class_type"], "executed": executed,
                "exception_message": failure["exception_message"], "exception_type": failure["exception_type"],
                "traceback": failure["traceback"], "current_inputs": failure["current_inputs"],
                "current_outputs": list(prompt)})
        else:
            ex.add_message("execution_success", {"prompt_id": prompt_id})
        self._cache = {nid: CacheEntry(signatures[nid], values[nid], ui.get(nid)) for nid in prompt if nid in values}
        history_outputs = {nid: ui[nid] for nid in prompt if nid in ui}
        ok = failure is None and interrupted_at is None
        entry = {"prompt": [number, prompt_id, prompt, extra_data, outputs], "outputs": history_outputs,
                 "status": {"status_str": "success" if ok else "error", "completed": ok, "messages": ex.messages},
                 "meta": {nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
                          for nid in history_outputs}}
        time.sleep(self.history_delay)  # execution_success/error goes out before the history entry exists
        if self._killed:
            raise _Killed()
        with self._cv:
            self.history[prompt_id] = entry
            self._running.pop(prompt_id, None)
        self.queue_updated()
        if client_id is not None:
            self.send_sync("executing", {"node": None, "prompt_id": prompt_id}, client_id)
        self._client_id = None

    def _execute_node(self, ex: Execution, prompt: dict[str, Any], node_id: str, values: dict[str, tuple],
                      ui: dict[str, Any]) -> None:
        node = prompt[node_id]
        spec = self.nodes[node["class_type"]]
        ex.progress_start(node_id)
        self._last_node_id = node_id
        ex.send("executing", {"node": node_id, "display_node": node_id, "prompt_id": ex.prompt_id})
        declared = spec.inputs(self)
        kwargs: dict[str, Any] = {}
        for name in [*declared["required"], *declared["optional"]]:
            if name not in node["inputs"]:
                continue
            value = node["inputs"][name]
            kwargs[name] = values[value[0]][value[1]] if is_link(value) else value
        ctx = NodeContext(ex, node_id)
        try:
            ctx.check_interrupt()
            result, ui_out = spec.run(ctx, **kwargs)
        except (InterruptProcessingException, _Killed):
            raise
        except Exception as exc:
            raise _NodeFailed({
                "node_id": node_id, "exception_message": f"{exc}\n", "exception_type": full_type_name(type(exc)),
                "traceback": traceback.format_tb(exc.__traceback__),
                "current_inputs": {k: [format_value(v)] for k, v in kwargs.items()}}) from None
        values[node_id] = result
        if ui_out:
            ui[node_id] = ui_out
            ex.send("executed", {"node": node_id, "display_node": node_id, "output": ui_out,
                                 "prompt_id": ex.prompt_id})
        ex.progress_finish(node_id)


class _NodeFailed(Exception):
    def __init__(self, details: dict[str, Any]):
        super().__init__(details["exception_message"])
        self.details = details


# --------------------------------------------------------------------------- a listening client (for the tests)


class Listener:
    """A websocket client of any ComfyUI (``/ws?clientId=...``) that keeps every text message, for tests that
    compare what a server sends with the recordings."""

    def __init__(self, url: str, client_id: str | None = None, timeout: float = 5.0):
        import websocket

        self.client_id = client_id or uuid.uuid4().hex
        self.ws = websocket.create_connection(url.replace("http://", "ws://", 1) + f"/ws?clientId={self.client_id}",
                                              timeout=timeout)
        self.messages: list[dict[str, Any]] = []

    def recv(self, timeout: float) -> dict[str, Any] | None:
        """The next text message, or None after ``timeout`` seconds without one."""
        import websocket

        self.ws.settimeout(timeout)
        while True:
            try:
                frame = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                return None
            if isinstance(frame, str):
                message = json.loads(frame)
                self.messages.append(message)
                return message

    def until_done(self, prompt_id: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Messages until ``executing {node: null}`` of ``prompt_id`` (all messages kept so far)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.recv(max(0.05, deadline - time.monotonic()))
            if m and m["type"] == "executing" and m["data"].get("node") is None \
                    and m["data"].get("prompt_id") == prompt_id:
                return self.messages
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout}s: {self.types()}")

    def drain(self, quiet: float = 0.3) -> list[dict[str, Any]]:
        """Read until nothing arrives for ``quiet`` seconds."""
        while self.recv(quiet) is not None:
            pass
        return self.messages

    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- as a separate process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fake_comfyui", description="A fake ComfyUI 0.3.64 server (tests/fake_comfyui.py).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-start", type=float, default=0.0, help="seconds before it listens")
    parser.add_argument("--exit-after-start", type=float, default=None,
                        help="exit (with --exit-code, default 1) this many seconds after the process started, "
                             "printing an error on stderr")
    parser.add_argument("--exit-code", type=int, default=None,
                        help="without --exit-after-start: print an error on stderr and exit with it at once")
    parser.add_argument("--never-healthy", action="store_true",
                        help="listen, but GET /system_stats fails (500)")
    parser.add_argument("--pid-file", help="write {pid, child_pid} here")
    parser.add_argument("--output-dir", help="the folder holding input/, output/, temp/ (default: a temp dir)")
    parser.add_argument("--child", action="store_true", help="start a child process (to check process groups)")
    parser.add_argument("--start-log", help="append one line per start (to count starts)")
    args = parser.parse_args(argv)

    print(f"fake ComfyUI {COMFYUI_VERSION} (tests/fake_comfyui.py), pid {os.getpid()}", flush=True)
    if args.start_log:
        with open(args.start_log, "a") as f:
            f.write(f"{os.getpid()}\n")
    child = None
    if args.child:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    if args.pid_file:
        Path(args.pid_file).write_text(json.dumps({"pid": os.getpid(), "child_pid": child.pid if child else None}))
    code = args.exit_code if args.exit_code is not None else 1
    fatal = f"ModuleNotFoundError: No module named 'torchvision' (fake ComfyUI exits with code {code})"
    if args.exit_code is not None and args.exit_after_start is None:
        print(fatal, file=sys.stderr, flush=True)
        return code
    if args.exit_after_start is not None:
        def die() -> None:
            print(fatal, file=sys.stderr, flush=True)
            os._exit(code)

        timer = threading.Timer(args.exit_after_start, die)
        timer.daemon = True
        timer.start()
    if args.delay_start:
        print(f"Starting in {args.delay_start:g}s", flush=True)
        time.sleep(args.delay_start)
    fake = FakeComfyUI(args.host, args.port, args.output_dir, never_healthy=args.never_healthy,
                       argv=["main.py", "--listen", args.host, "--port", str(args.port)])
    def die(exit_code: int) -> None:
        if fake._own_root:
            shutil.rmtree(fake.root, ignore_errors=True)
        os._exit(exit_code)

    fake.on_kill = die
    print("Starting server\n", flush=True)
    fake.serve_forever(on_ready=lambda: print(f"To see the GUI go to: {fake.url}", flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
