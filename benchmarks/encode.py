"""An image + audio job end to end through VIDAX against the bare ffmpeg commands it runs.

VIDAX side (in-process): ``vidax_core.Vidax(settings, executor="inline")`` — ``create_run`` (validation, audio
probe, run folder), ``start_run`` (preflight, then the phases ``prepare`` and ``encode`` inside the call, since
the executor is inline), then ``status`` until the run has ended. The ``Vidax`` object is built once, outside
the timing (a server builds it once too). With ``--cli`` the real ``vidax run JOB.json`` is timed as well
(a fresh interpreter each time: imports, plugin loading and the same run).

Bare side: the very ffmpeg command lines the run executed — audio normalization, still image to
``prepare/source.mp4``, final encode — captured from a first (untimed) VIDAX run by wrapping
``subprocess.Popen`` inside ``vidax_core.media``, with the run folder's paths mapped to a scratch folder (the
temp output ``.X.part`` to ``X``). Nothing is copied by hand, so the flags cannot drift; the final encode's
command is also checked against ``vidax_plugins.encode.encode_args``.

Printed: median wall time of ``--repeat`` interleaved runs of each side, a per-phase breakdown, and the
ratio vidax/bare (goal <= 1.15).

    .venv/bin/python benchmarks/encode.py [--audio-seconds 20] [--fps 25] [--preset veryfast] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_settings_files  # noqa: E402
from _common import clean_env  # noqa: E402
from _common import machine_note  # noqa: E402
from _common import make_media  # noqa: E402
from _common import median  # noqa: E402
from _common import run_group  # noqa: E402
from _common import table  # noqa: E402
from _common import verdict  # noqa: E402
from _common import vidax_command  # noqa: E402

import vidax_core.media as vidax_media  # noqa: E402
from vidax_core import Vidax  # noqa: E402
from vidax_core.config import load_settings  # noqa: E402
from vidax_core.media import audio_duration  # noqa: E402
from vidax_core.media import probe  # noqa: E402
from vidax_plugins.encode import encode_args  # noqa: E402

GOAL = 1.15
RUN_TIMEOUT_S = 600.0
TMP_OUTPUT = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]+\.part$")  # ffmpeg_to_file's mkstemp name


class PopenRecorder:
    """Stands in for the ``subprocess`` module inside ``vidax_core.media``: records every command line."""

    def __init__(self):
        self.commands: list[list[str]] = []

    def __getattr__(self, name):
        return getattr(subprocess, name)

    def Popen(self, cmd, *args, **kwargs):  # noqa: N802 - the name it stands in for
        self.commands.append([str(c) for c in cmd])
        return subprocess.Popen(cmd, *args, **kwargs)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its waited-for descendants (ffmpeg, `vidax run`)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def build_job(wav: Path, png: Path, args) -> dict:
    encode = {"fps": args.fps, "preset": args.preset}
    if args.crf is not None:
        encode["crf"] = args.crf
    return {"inputs": {"audio": str(wav), "image": str(png)}, "encode": encode}


def run_vidax(vx: Vidax, job: dict) -> tuple[float, str, dict]:
    """Create, start and wait for one run: (seconds, run id, status)."""
    t0 = time.perf_counter()
    run_id = vx.create_run(job)["run_id"]
    vx.start_run(run_id)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    status = vx.status(run_id)
    for _ in range(int(RUN_TIMEOUT_S / 0.01)):  # inline: already over; bounded in count and in time anyway
        if status["run_status"] in ("completed", "failed") or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
        status = vx.status(run_id)
    seconds = time.perf_counter() - t0
    if status["run_status"] != "completed":
        raise RuntimeError(f"run {run_id} ended {status['run_status']}: {json.dumps(status, indent=2)[:3000]}")
    return seconds, run_id, status


def phase_seconds(workdir: Path) -> dict[str, float]:
    """Each completed phase's own seconds, from its ``phase.completed`` event."""
    out = {}
    for line in (workdir / "logs" / "events.jsonl").read_text().splitlines():
        ev = json.loads(line)
        if ev.get("event") == "phase.completed":
            out[ev["phase"]] = float(ev["data"]["seconds"])
    return out


def map_command(cmd: list[str], workdir: Path, scratch: Path) -> list[str]:
    """``cmd`` with paths inside the run folder moved to ``scratch``, and temp outputs to their final names."""
    prefix = str(workdir) + os.sep
    out = []
    for arg in cmd:
        if arg.startswith(prefix):
            rel = Path(arg[len(prefix):])
            m = TMP_OUTPUT.match(rel.name)
            if m:
                rel = rel.with_name(m.group("name"))
            arg = str(scratch / rel)
        out.append(arg)
    return out


def command_output(cmd: list[str]) -> str:
    return cmd[-1]


def run_bare(commands: list[list[str]], scratch: Path) -> tuple[float, list[float]]:
    """Run the commands one after another, as the run did: (total seconds, seconds of each)."""
    for cmd in commands:  # fresh outputs each time, as a new run has
        Path(command_output(cmd)).unlink(missing_ok=True)
    each = []
    t0 = time.perf_counter()
    for cmd in commands:
        c0 = time.perf_counter()
        proc = run_group(cmd, timeout=RUN_TIMEOUT_S)
        each.append(time.perf_counter() - c0)
        if proc.returncode != 0:
            raise RuntimeError(f"bare ffmpeg failed ({proc.returncode}): {' '.join(cmd)}\n"
                               f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return time.perf_counter() - t0, each


def run_cli(job_file: Path, env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = run_group([*vidax_command(), "run", str(job_file), "--quiet"], env=env, cwd=cwd, timeout=RUN_TIMEOUT_S)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"vidax run exited {proc.returncode}:\n{proc.stdout.decode(errors='replace')[-2000:]}\n"
                           f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--audio-seconds", type=float, default=20.0, help="length of the test audio (default 20)")
    p.add_argument("--size", default="512x512", help="size of the still image (default 512x512)")
    p.add_argument("--fps", type=float, default=25.0, help="encode.fps (default 25)")
    p.add_argument("--preset", default="veryfast", help="encode.preset (default veryfast)")
    p.add_argument("--crf", type=int, default=None, help="encode.crf (default: the job default)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs of each side (median reported, default 5)")
    p.add_argument("--cli", action="store_true", help="also time the real `vidax run JOB.json` (fresh process)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after the timing, profile one more VIDAX run with cProfile and print the top N functions")
    p.add_argument("--keep", action="store_true", help="keep the temp folder and print its path")
    args = p.parse_args(argv)
    if not 1 <= args.repeat <= 50:
        p.error("--repeat must be 1..50")
    if not 0 < args.audio_seconds <= 600:
        p.error("--audio-seconds must be in (0, 600]")

    tmp = Path(tempfile.mkdtemp(prefix="vidax-bench-encode-"))
    vx = None
    try:
        media = tmp / "media"
        wav, png = make_media(media, audio_seconds=args.audio_seconds, size=args.size)
        env = clean_env(bench_settings_files(tmp / "vidax", media))
        settings = load_settings(env=env, cwd=tmp)
        vx = Vidax(settings, executor="inline")
        job = build_job(wav, png, args)

        # 1. an untimed run that records the ffmpeg command lines (and warms caches)
        recorder = PopenRecorder()
        real_subprocess = vidax_media.subprocess
        vidax_media.subprocess = recorder
        try:
            _, run_id, _ = run_vidax(vx, job)
        finally:
            vidax_media.subprocess = real_subprocess
        workdir = vx.store.workdir(run_id)
        ffmpeg_cmds = [c for c in recorder.commands if Path(c[0]).name.startswith("ffmpeg")]
        if len(ffmpeg_cmds) != len(recorder.commands):
            print(f"# note: the run started {len(recorder.commands) - len(ffmpeg_cmds)} non-ffmpeg process(es)")

        # the final encode must be what encode_args() builds for this run
        run_job = vx.store.load_job(run_id)
        expected = encode_args(["-i", str(workdir / "prepare" / "source.mp4")], str(workdir / "inputs" / "audio.wav"),
                               audio_duration(workdir / "inputs" / "audio.wav"), run_job.encode)
        last = ffmpeg_cmds[-1]
        matches = any(last[i:i + len(expected)] == expected for i in range(len(last) - len(expected) + 1))

        scratch = tmp / "bare"
        bare_cmds = [map_command(c, workdir, scratch) for c in ffmpeg_cmds]
        written = {command_output(c) for c in bare_cmds}
        for cmd in bare_cmds:
            Path(command_output(cmd)).parent.mkdir(parents=True, exist_ok=True)
            for arg in cmd[1:-1]:  # inputs the run had copied into its folder (the image): copy them untimed
                if arg.startswith(str(scratch) + os.sep) and arg not in written:
                    src = workdir / Path(arg).relative_to(scratch)
                    if src.is_file() and not Path(arg).exists():
                        Path(arg).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(src, arg)
        run_bare(bare_cmds, scratch)  # untimed: check that the replay works, warm caches
        vidax_final, bare_final = probe(workdir / "final.mp4"), probe(command_output(bare_cmds[-1]))
        shutil.rmtree(workdir)

        job_file = tmp / "job.json"
        job_file.write_text(json.dumps(job))

        print(f"# {machine_note()}")
        print(f"# job: {args.audio_seconds:g}s audio, {args.size} still image, fps {args.fps:g}, "
              f"preset {args.preset}, crf {run_job.encode.crf}, audio {run_job.encode.audio_bitrate}")
        print("# vidax: in-process Vidax(settings, executor='inline'): create_run + start_run + status until done"
              + ("; plus `vidax run JOB.json --quiet` in a fresh process" if args.cli else ""))
        print(f"# bare: the {len(bare_cmds)} ffmpeg command lines the run executed (captured), run in sequence:")
        for cmd in bare_cmds:
            print("#   " + " ".join(_short(a, tmp) for a in cmd))
        print(f"# final encode == encode_args(...) of the run: {'yes' if matches else 'NO (check the capture)'}")
        print(f"# outputs: vidax {vidax_final.width}x{vidax_final.height} {vidax_final.fps:g} fps "
              f"{vidax_final.duration:.3f}s | bare {bare_final.width}x{bare_final.height} {bare_final.fps:g} fps "
              f"{bare_final.duration:.3f}s")

        times: dict[str, list[float]] = {"vidax": [], "bare": [], "cli": []}
        cpu: dict[str, list[float]] = {"vidax": [], "bare": [], "cli": []}
        phases: dict[str, list[float]] = {}
        bare_steps: list[list[float]] = []
        sides = ["vidax", "bare"] + (["cli"] if args.cli else [])
        for rep in range(args.repeat):
            order = sides[rep % len(sides):] + sides[:rep % len(sides)]
            for side in order:
                cpu0 = cpu_seconds()
                if side == "vidax":
                    seconds, run_id, _ = run_vidax(vx, job)
                    for name, s in phase_seconds(vx.store.workdir(run_id)).items():
                        phases.setdefault(name, []).append(s)
                    shutil.rmtree(vx.store.workdir(run_id))
                elif side == "bare":
                    seconds, each = run_bare(bare_cmds, scratch)
                    bare_steps.append(each)
                else:
                    seconds = run_cli(job_file, env, tmp)
                    for run_dir in (tmp / "vidax" / "runs").iterdir():
                        if run_dir.is_dir():
                            shutil.rmtree(run_dir)
                times[side].append(seconds)
                cpu[side].append(cpu_seconds() - cpu0)
                print(f"  rep {rep + 1}: {side:<5} {seconds:7.3f} s wall  {cpu[side][-1]:7.3f} s CPU", flush=True)

        bare, bare_cpu = median(times["bare"]), median(cpu["bare"])
        labels = {"bare": f"bare ffmpeg ({len(bare_cmds)} commands)", "vidax": "vidax in-process",
                  "cli": "vidax run (CLI process)"}
        rows = []
        for side in ["bare", "vidax"] + (["cli"] if args.cli else []):
            rows.append([labels[side], f"{median(times[side]):.3f}", _spread(times[side]),
                         f"{median(times[side]) / bare:.3f}", f"{median(cpu[side]):.3f}",
                         f"{median(cpu[side]) / bare_cpu:.3f}"])
        print()
        print(table(["case", "wall s (median)", "wall min..max", "wall vs bare", "CPU s (median)", "CPU vs bare"],
                    rows))

        step_med = [median([s[i] for s in bare_steps]) for i in range(len(bare_cmds))]
        print()
        print("where the time goes (medians, s):")
        detail = []
        n_prepare = len(bare_cmds) - 1
        detail.append(["prepare phase", f"{median(phases.get('prepare', [])):.3f}",
                       f"{sum(step_med[:n_prepare]):.3f}", "ffmpeg commands 1.." + str(n_prepare)])
        detail.append(["encode phase", f"{median(phases.get('encode', [])):.3f}", f"{step_med[-1]:.3f}",
                       f"ffmpeg command {len(bare_cmds)}"])
        per_run_phases = [sum(p) for p in zip(*phases.values(), strict=True)]
        outside = median([t - p for t, p in zip(times["vidax"], per_run_phases, strict=True)])
        detail.append(["outside the phases", f"{outside:.3f}", "0", "create_run, start_run, manifest, status"])
        print(table(["part", "vidax", "bare", "bare counterpart"], detail))

        ratio = median(times["vidax"]) / bare
        per_rep = [v / b for v, b in zip(times["vidax"], times["bare"], strict=True)]
        print()
        print(f"ratio vidax/bare (wall, medians) {ratio:.3f}  (per repetition "
              f"{', '.join(f'{x:.3f}' for x in per_rep)})  goal <= {GOAL}: {verdict(ratio <= GOAL)}")
        print(f"ratio vidax/bare (wall, fastest runs) {min(times['vidax']) / min(times['bare']):.3f}   "
              f"(CPU, medians) {median(cpu['vidax']) / bare_cpu:.3f}")
        if args.cli:
            print(f"ratio vidax-run-CLI/bare (wall) {median(times['cli']) / bare:.3f}  (includes interpreter start, "
                  f"imports and plugin loading; no goal)")

        if args.profile:
            import cProfile
            import io
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            _, run_id, _ = run_vidax(vx, job)
            prof.disable()
            shutil.rmtree(vx.store.workdir(run_id))
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(args.profile)
            print()
            print("cProfile of one more VIDAX run (main thread; waiting on ffmpeg shows as reads of its pipe):")
            print(out.getvalue())
        if args.keep:
            print(f"# temp folder kept: {tmp}")
        return 0
    finally:
        if vx is not None:
            vx.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _spread(values: list[float]) -> str:
    return f"{min(values):.3f}..{max(values):.3f}"


def _short(arg: str, tmp: Path) -> str:
    return arg.replace(str(tmp), "$TMP") if str(tmp) in arg else (Path(arg).name if arg.startswith("/") else arg)


if __name__ == "__main__":
    sys.exit(main())
