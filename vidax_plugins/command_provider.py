"""The ``command`` lip-sync provider type: run an external program (Wav2Lip, SadTalker, LatentSync, MuseTalk...).

An entry of the providers file::

    "wav2lip": {
      "type": "command",
      "command": ["python", "inference.py", "--checkpoint_path", "checkpoints/wav2lip_gan.pth",
                  "--face", "{video}", "--audio", "{audio}", "--outfile", "{output}",
                  "--pads", "0", "{pad_bottom}", "0", "0"],
      "cwd": "/opt/Wav2Lip", "env": {"CUDA_VISIBLE_DEVICES": "0"}, "timeout_s": 1800,
      "requires_assets": ["wav2lip_gan"], "video_fps": 25, "options": {"pad_bottom": "10"}
    }

Placeholders in ``command`` (and in a rendered ``config_template``): ``{video}`` the face video (re-timed to
``video_fps`` when set), ``{audio}`` the prepared WAV, ``{audio_16k}`` a 16 kHz mono WAV, ``{image}`` the job's
image (for image-driven tools such as SadTalker), ``{output}``
(``lipsync/output.mp4``), ``{output_dir}`` (a folder for tools that name their own file; the output is then
found by ``output_glob``), ``{fps}``, ``{workdir}``, ``{scratch}``, ``{config}`` (the rendered config file) and
every option (``options`` gives the defaults and the names a job may set in ``lipsync.options``).

The program runs in a per-run scratch folder. With ``isolate`` (the default) that folder mirrors ``cwd`` with a
symlink per entry, except the ``scratch_dirs`` (``temp``, ``results``, ...), which are fresh and empty: a tool
that writes a fixed ``temp/`` therefore never collides with itself across runs. ``timeout_s`` kills the whole
process group. Known stderr patterns map to error codes (no face found, out of memory), extendable per provider
with ``error_patterns``. Available when the program is found and the ``requires_assets`` are present.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from vidax_core import hookimpl
from vidax_core.errors import PhaseFailed
from vidax_core.errors import Problem
from vidax_core.errors import UnsupportedFormat
from vidax_core.errors import ValidationError
from vidax_core.lipsync import entry_problems
from vidax_core.lipsync import missing_assets
from vidax_core.media import EVEN_YUV420
from vidax_core.media import ffmpeg_to_file
from vidax_core.media import probe

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
BUILTIN_NAMES = ("video", "audio", "audio_16k", "image", "output", "output_dir", "fps", "workdir", "scratch", "config")
DEFAULT_SCRATCH_DIRS = ("temp", "tmp", "results", "result", "output", "outputs")
DEFAULT_ERROR_PATTERNS = (
    {"pattern": r"(?i)(face not detected|no face|could not find (a |any )?face|faces? (were|was) not detected)",
     "code": "LIPSYNC_NO_FACE", "message": "no face was found in the video"},
    {"pattern": r"(?i)(out of memory|OutOfMemoryError|CUDA error: out of memory|cannot allocate memory)",
     "code": "LIPSYNC_OUT_OF_MEMORY", "message": "the lip-sync tool ran out of memory"},
)
STDERR_TAIL = 40

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type", "command"],
    "properties": {
        "type": {"const": "command"},
        "description": {"type": "string"},
        "command": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "cwd": {"type": "string", "minLength": 1},
        "env": {"type": "object", "additionalProperties": {"type": "string"}},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0},
        "requires_assets": {"type": "array", "items": {"type": "string"}},
        "video_fps": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "output_glob": {"type": "string", "minLength": 1},
        "config_template": {"type": "string", "minLength": 1},
        "config_file": {"type": "string", "pattern": "^[^/]+$"},
        "isolate": {"type": "boolean"},
        "scratch_dirs": {"type": "array", "items": {"type": "string", "pattern": "^[^/]+$"}},
        "error_patterns": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["pattern", "code"],
            "properties": {"pattern": {"type": "string"}, "code": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"},
                           "message": {"type": "string"}}}},
        "options": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
        "keep_scratch": {"type": "boolean"},
    },
}


def _render(text: str, values: dict[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: values[m.group(1)] if m.group(1) in values else m.group(0), text)


class CommandProvider:
    """A provider that runs an external program."""

    def __init__(self, name: str, entry: dict[str, Any], ctx):
        problems = entry_problems(SCHEMA, entry, name)
        base = ctx.base_dir
        options = {k: _text(v) for k, v in (entry.get("options") or {}).items()}
        known = set(BUILTIN_NAMES) | set(options)
        for i, arg in enumerate(entry.get("command") or []):
            for ph in PLACEHOLDER.findall(arg):
                if ph not in known:
                    problems.append(Problem(f"providers.{name}.command[{i}]",
                                            f"unknown placeholder {{{ph}}} (known: {', '.join(sorted(known))})"))
        for i, pat in enumerate(entry.get("error_patterns") or []):
            try:
                re.compile(pat.get("pattern", ""))
            except re.error as exc:
                problems.append(Problem(f"providers.{name}.error_patterns[{i}].pattern", f"not a regex: {exc}"))
        template = entry.get("config_template")
        if template and not (base / template).is_file():
            problems.append(Problem(f"providers.{name}.config_template", f"file not found: {base / template}"))
        if problems:
            raise ValidationError.from_problems(problems, f"lip-sync provider {name!r}")
        self.name = name
        self.command = list(entry["command"])
        self.cwd = (base / entry["cwd"]).resolve() if entry.get("cwd") else None
        self.env = dict(entry.get("env") or {})
        self.timeout_s = float(entry.get("timeout_s", 1800))
        self.requires_assets = tuple(entry.get("requires_assets") or ())
        self.video_fps = entry.get("video_fps")
        self.output_glob = entry.get("output_glob")
        self.config_template = (base / template) if template else None
        self.config_file = entry.get("config_file") or "config.yaml"
        self.isolate = entry.get("isolate", True)
        self.scratch_dirs = tuple(entry.get("scratch_dirs") or DEFAULT_SCRATCH_DIRS)
        self.error_patterns = [*(entry.get("error_patterns") or []), *DEFAULT_ERROR_PATTERNS]
        self.options = options
        self.keep_scratch = bool(entry.get("keep_scratch", False))
        self._assets = ctx.assets

    # ---------------------------------------------------------------- checks

    def validate_options(self, options: dict[str, Any]) -> list[Problem]:
        problems = []
        for k, v in options.items():
            if k not in self.options:
                known = ", ".join(sorted(self.options)) or "none"
                problems.append(Problem(f"lipsync.options.{k}",
                                        f"provider {self.name!r} has no option {k!r} (it has: {known})"))
            elif not isinstance(v, (str, int, float, bool)):
                problems.append(Problem(f"lipsync.options.{k}", "must be a string, number or boolean (it goes on "
                                                                "the tool's command line)"))
        return problems

    def program(self) -> str | None:
        """The resolved executable, or None when it cannot be found."""
        prog = self.command[0]
        if os.sep in prog:
            path = Path(prog) if os.path.isabs(prog) else (self.cwd or Path.cwd()) / prog
            return str(path) if path.is_file() and os.access(path, os.X_OK) else None
        return shutil.which(prog, path=self._env().get("PATH"))

    def availability(self) -> tuple[bool, str | None]:
        if self.cwd is not None and not self.cwd.is_dir():
            return False, f"its folder {self.cwd} does not exist"
        if self.program() is None:
            return False, f"program {self.command[0]!r} not found (cwd {self.cwd or '.'}, PATH of its env)"
        if self._assets is not None:
            reason = missing_assets(self._assets, self.requires_assets)
            if reason:
                return False, reason
        return True, None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        for k, v in self.env.items():
            env[k] = os.path.expandvars(v)
        return env

    # ---------------------------------------------------------------- run

    def run(self, ctx, video: Path, audio: Path, output: Path) -> None:
        scratch = ctx.output("scratch")
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True)
        out_dir = scratch / "out"
        out_dir.mkdir()
        values = self._inputs(ctx, scratch, video, audio, output, out_dir)
        if self.config_template is not None:
            cfg = scratch / self.config_file
            cfg.write_text(_render(self.config_template.read_text(encoding="utf-8"), values), encoding="utf-8")
            values["config"] = str(cfg)
        argv = [_render(a, values) for a in self.command]
        if os.sep not in argv[0] or not os.path.isabs(argv[0]):
            argv[0] = self.program() or argv[0]
        cwd = self._workspace(scratch)
        ctx.event("lipsync.command", f"running {Path(argv[0]).name}", {"argv": argv, "cwd": str(cwd)})
        self._execute(ctx, argv, cwd, scratch / "tool.log")
        try:
            if self.output_glob:
                found = sorted(out_dir.rglob(self.output_glob), key=lambda p: p.stat().st_mtime)
                if not found:
                    raise PhaseFailed(f"the tool wrote nothing matching {self.output_glob!r} into {{output_dir}}",
                                      code="LIPSYNC_FAILED")
                self._to_mp4(ctx, found[-1], output, audio)
            elif output.is_file():
                info = probe(output)
                if not info.has_video:
                    raise PhaseFailed(f"lip-sync provider {self.name!r} wrote a file without video",
                                      code="LIPSYNC_FAILED")
                if info.vcodec != "h264" or "mp4" not in info.format:
                    tmp = output.with_name("tool-output" + output.suffix)
                    os.replace(output, tmp)
                    self._to_mp4(ctx, tmp, output, audio)
        except (UnsupportedFormat, PhaseFailed) as exc:
            if exc.code == "LIPSYNC_FAILED":
                raise
            output.unlink(missing_ok=True)
            what = "a file without video" if isinstance(exc, PhaseFailed) else "an unreadable video"
            raise PhaseFailed(f"lip-sync provider {self.name!r} wrote {what}: {exc.message}", code="LIPSYNC_FAILED",
                              details=exc.details) from None
        if not self.keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)

    def _inputs(self, ctx, scratch: Path, video: Path, audio: Path, output: Path, out_dir: Path) -> dict[str, str]:
        info = probe(video)
        face = video
        fps = info.fps or ctx.job.encode.fps
        if self.video_fps and abs(fps - float(self.video_fps)) > 0.01:
            face = scratch / "face.mp4"
            ffmpeg_to_file(face, ["-i", str(video), "-map", "0:v:0", "-vf", f"fps={self.video_fps:g}",
                                  "-c:v", "libx264", "-preset", "veryfast", "-crf", "14", "-pix_fmt", "yuv420p"],
                           ffmpeg=ctx.ffmpeg, fmt="mp4", what=f"re-timing the video to {self.video_fps:g} fps")
            fps = float(self.video_fps)
        values = {"video": str(face), "audio": str(audio), "output": str(output), "output_dir": str(out_dir),
                  "fps": f"{fps:g}", "workdir": str(ctx.workdir), "scratch": str(scratch), "config": ""}
        if any("{audio_16k}" in a for a in self.command) or self.config_template is not None:
            a16 = scratch / "audio_16k.wav"
            ffmpeg_to_file(a16, ["-i", str(audio), "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le"],
                           ffmpeg=ctx.ffmpeg, fmt="wav", what="16 kHz mono audio")
            values["audio_16k"] = str(a16)
        image = ctx.inputs.get("image")
        if image is not None:
            values["image"] = str(image)
        elif any("{image}" in a for a in self.command):
            raise PhaseFailed(f"provider {self.name!r} needs {{image}} (inputs.image), which the job does not give",
                              code="LIPSYNC_UNAVAILABLE")
        values.update(self.options)
        values.update({k: _text(v) for k, v in ctx.job.lipsync.options.items()})
        return values

    def _workspace(self, scratch: Path) -> Path:
        """The folder the tool runs in: ``cwd`` mirrored into the scratch folder (``isolate``), or ``cwd``."""
        if self.cwd is None:
            return scratch
        if not self.isolate:
            return self.cwd
        work = scratch / "work"
        work.mkdir()
        for entry in self.cwd.iterdir():
            if entry.name in self.scratch_dirs:
                continue
            os.symlink(entry, work / entry.name)
        for name in self.scratch_dirs:
            (work / name).mkdir(exist_ok=True)
        return work

    def _execute(self, ctx, argv: list[str], cwd: Path, log_path: Path) -> None:
        t0 = time.monotonic()
        with open(log_path, "wb") as log:
            try:
                proc = subprocess.Popen(argv, cwd=cwd, env=self._env(), stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                raise PhaseFailed(f"cannot run {argv[0]}: {exc.strerror or exc}", code="LIPSYNC_UNAVAILABLE") from None
            try:
                proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise PhaseFailed(f"the lip-sync tool ran past timeout_s ({self.timeout_s:g}s) and was stopped",
                                  code="LIPSYNC_TIMEOUT") from None
            except BaseException:
                _kill_group(proc)
                raise
            finally:
                # whatever it left running in its group (workers, servers) goes with it
                _kill_group(proc, wait=False)
        text = log_path.read_text(encoding="utf-8", errors="replace")
        tail = text.splitlines()[-STDERR_TAIL:]
        ctx.event("lipsync.exited", f"exit code {proc.returncode}",
                  {"returncode": proc.returncode, "seconds": round(time.monotonic() - t0, 2)})
        if proc.returncode != 0:
            code, why = "LIPSYNC_FAILED", f"the lip-sync tool exited with code {proc.returncode}"
            for pat in self.error_patterns:
                if re.search(pat["pattern"], text):
                    code, why = pat["code"], pat.get("message") or why
                    break
            stderr = "\n".join(tail)
            raise PhaseFailed(f"{why}: {' '.join(argv[:3])}...\n{stderr}", code=code,
                              details={"argv": argv, "returncode": proc.returncode, "output_tail": tail})

    def _to_mp4(self, ctx, source: Path, output: Path, audio: Path) -> None:
        """The tool's file as H.264 MP4 with the audio (tools write AVI, MKV, or video without sound)."""
        ffmpeg_to_file(output, ["-i", str(source), "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0",
                                "-vf", EVEN_YUV420,
                                "-c:v", "libx264", "-preset", "veryfast", "-crf", "16", "-c:a", "aac",
                                "-shortest", "-movflags", "+faststart"],
                       ffmpeg=ctx.ffmpeg, fmt="mp4", what=f"converting the tool's {source.name} to MP4")


def _kill_group(proc: subprocess.Popen, wait: bool = True) -> None:
    """SIGKILL the tool's whole process group (its own session), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if wait:
        proc.wait()


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@hookimpl
def register_lipsync_provider_types(register):
    register("command", CommandProvider)
