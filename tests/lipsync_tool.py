"""A small real "lip-sync" program for the tests of the ``command`` provider type.

It stands in for Wav2Lip & co.: it reads a face video and an audio file and writes a video, with ffmpeg (the
one imageio-ffmpeg ships). The "lip-sync" is a solid colour box drawn over the middle of the face video, so a
test can see in ``final.mp4`` that the tool's output was used.

    python lipsync_tool.py --face V --audio A --outfile O [--color 0x00ff00]

Switches that make it behave like the tools VIDAX has to cope with:

* ``--fail-code N --message TEXT``: print TEXT on stderr and exit with N (before writing anything);
* ``--sleep S --pid-file F``: start a child process that sleeps too, write ``{"child": pid, "tool": pid}`` to
  F, then sleep S seconds (a tool that hangs, with a worker of its own);
* ``--write-temp``: write ``./temp/<pid>`` relative to the working directory and fail when ``./temp`` holds a
  file of another run (tools with a fixed temp folder);
* ``--rendezvous DIR --count N``: wait (up to 20 s) until N tools have checked in to DIR, so two runs provably
  overlap;
* ``--need PATH``: fail unless PATH (relative to the working directory) is readable; its text is recorded;
* ``--out-dir D --ext avi|mkv``: name the output file itself (``D/result_<pid>.<ext>``, video only);
* ``--config C``: read ``key: value`` lines (YAML-ish, ``#`` comments, ``[sections]`` ignored) for face, audio,
  outfile, out_dir, color; what it read is recorded;
* ``--record FILE``: append one JSON line: argv, cwd, pid, what it saw of its inputs, the config it read.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--face")
    p.add_argument("--audio")
    p.add_argument("--outfile")
    p.add_argument("--color")
    p.add_argument("--fail-code", type=int)
    p.add_argument("--message", default="")
    p.add_argument("--sleep", type=float)
    p.add_argument("--pid-file")
    p.add_argument("--write-temp", action="store_true")
    p.add_argument("--rendezvous")
    p.add_argument("--count", type=int, default=2)
    p.add_argument("--need")
    p.add_argument("--out-dir")
    p.add_argument("--ext", default="avi", choices=["avi", "mkv"])
    p.add_argument("--config")
    p.add_argument("--record")
    return p.parse_args(argv)


def read_config(path):
    values = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(("#", ";", "[")):
                continue
            sep = ":" if ":" in line and ("=" not in line or line.index(":") < line.index("=")) else "="
            key, _, value = line.partition(sep)
            values[key.strip()] = value.strip().strip('"')
    return values


def media_facts(path):
    """What the tool sees of a media file (PyAV: frame rate, frames, size, sample rate, channels)."""
    import av

    out = {"path": path, "exists": os.path.isfile(path)}
    if not out["exists"]:
        return out
    with av.open(path) as c:
        out["format"] = c.format.name
        if c.streams.video:
            v = c.streams.video[0]
            rate = v.average_rate or v.guessed_rate
            out["fps"] = float(rate) if rate else None
            out["width"], out["height"] = v.codec_context.width, v.codec_context.height
            out["frames"] = sum(1 for _ in c.decode(video=0))
        elif c.streams.audio:
            a = c.streams.audio[0]
            out["sample_rate"] = a.codec_context.sample_rate
            out["channels"] = a.codec_context.channels
            out["codec"] = a.codec_context.name
    return out


def ffmpeg(*args):
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"lipsync_tool: ffmpeg failed: {proc.stderr[-1500:]}", file=sys.stderr)
        sys.exit(70)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    record = {"argv": [sys.argv[0], *argv], "cwd": os.getcwd(), "pid": os.getpid(), "started": time.time()}
    try:
        record["exit"] = code = run(args, record)
    finally:
        record["finished"] = time.time()
        if args.record:
            with open(args.record, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
    return code


def run(args, record):

    if args.sleep is not None:
        child = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({args.sleep!r})"])
        if args.pid_file:
            tmp = args.pid_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"child": child.pid, "tool": os.getpid()}, f)
            os.replace(tmp, args.pid_file)
        time.sleep(args.sleep)

    if args.fail_code is not None:
        print(args.message, file=sys.stderr, flush=True)
        return args.fail_code

    config = {}
    if args.config:
        config = read_config(args.config)
        record["config"] = config
    face = args.face or config.get("face")
    audio = args.audio or config.get("audio")
    outfile = args.outfile or config.get("outfile")
    out_dir = args.out_dir or config.get("out_dir")
    color = args.color or config.get("color") or "0x00ff00"

    if args.need:
        try:
            with open(args.need, "rb") as f:
                record["need"] = f.read(200).decode("utf-8", "replace")
        except OSError as exc:
            print(f"lipsync_tool: cannot read {args.need}: {exc.strerror}", file=sys.stderr)
            return 3

    if args.rendezvous:
        os.makedirs(args.rendezvous, exist_ok=True)
        open(os.path.join(args.rendezvous, str(os.getpid())), "w").close()
        deadline = time.monotonic() + 20
        while len(os.listdir(args.rendezvous)) < args.count:
            if time.monotonic() > deadline:
                print("lipsync_tool: the other runs never came", file=sys.stderr)
                return 4
            time.sleep(0.05)
        record["met"] = sorted(os.listdir(args.rendezvous))

    if args.write_temp:
        os.makedirs("temp", exist_ok=True)
        others = [n for n in os.listdir("temp") if n != str(os.getpid())]
        if others:
            print(f"lipsync_tool: ./temp holds files of another run: {others}", file=sys.stderr)
            return 5
        with open(os.path.join("temp", str(os.getpid())), "w") as f:
            f.write("scratch")
        time.sleep(0.3)  # the other run (if it shares ./temp) writes meanwhile
        others = [n for n in os.listdir("temp") if n != str(os.getpid())]
        if others:
            print(f"lipsync_tool: another run wrote into ./temp: {others}", file=sys.stderr)
            return 5
        record["temp"] = os.path.realpath("temp")

    if not face or not audio or not (outfile or out_dir):
        print("lipsync_tool: --face, --audio and --outfile (or --out-dir) are required", file=sys.stderr)
        return 2
    record["face"] = media_facts(face)
    record["audio"] = media_facts(audio)
    if not record["face"]["exists"] or not record["audio"]["exists"]:
        print(f"lipsync_tool: input missing: {face} / {audio}", file=sys.stderr)
        return 6

    box = f"drawbox=x=iw/4:y=ih/4:w=iw/2:h=ih/2:color={color}:t=fill"
    if out_dir:
        target = os.path.join(out_dir, f"result_{os.getpid()}.{args.ext}")
        codec = ["-c:v", "mpeg4", "-q:v", "2"] if args.ext == "avi" else ["-c:v", "ffv1"]
        ffmpeg("-i", face, "-map", "0:v:0", "-vf", box, *codec, target)
    else:
        target = outfile
        ffmpeg("-i", face, "-i", audio, "-map", "0:v:0", "-map", "1:a:0", "-vf", f"{box},format=yuv420p",
               "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", target)
    record["wrote"] = target
    print(f"lipsync_tool: wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
