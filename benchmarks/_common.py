"""Helpers shared by the benchmarks (not a test module, never imported by the tests).

* :class:`ProcessGroup`: start a command in its own process group (a gunicorn master and its workers), wait
  until it answers on loopback, and stop the whole group (SIGTERM, then SIGKILL) however the benchmark ends;
* :func:`http_load`: a bounded multi-threaded HTTP load generator over ``http.client`` keep-alive connections,
  reporting requests/s and p50/p99 latency;
* :func:`median`, :func:`repeat_median`: the median of N repetitions;
* :func:`make_media`: test audio and a still image made with imageio-ffmpeg's ffmpeg;
* :func:`bench_settings_files`: an isolated VIDAX configuration (config file, runs folder, input root).

Everything here talks to 127.0.0.1 only, and every loop is bounded in count and in time.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
API_KEY = "bench-key-0123456789abcdef"
VENV_BIN = Path(sys.executable).parent

# --------------------------------------------------------------------------- processes

_live_groups: list[ProcessGroup] = []


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the caller retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def vidax_command() -> list[str]:
    """The real ``vidax`` console script of this venv (falling back to ``python -m vidax_core.cli``)."""
    exe = VENV_BIN / "vidax"
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    return [sys.executable, "-m", "vidax_core.cli"]


class ProcessGroup:
    """A command run as the leader of a new process group, its output going to ``log_path``.

    ``stop()`` signals the whole group, so gunicorn workers (and anything they started) go with the master.
    It is also registered with :mod:`atexit` and runs on SIGINT/SIGTERM of the benchmark.
    """

    def __init__(self, argv: Sequence[str], *, log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None, name: str = "server"):
        self.name = name
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, cwd=cwd, start_new_session=True)
        self.pgid = self.proc.pid  # start_new_session: the child leads its own group
        _live_groups.append(self)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group, wait up to ``timeout`` s, then SIGKILL what is left of it."""
        if self in _live_groups:
            _live_groups.remove(self)
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                break
            if self._wait_gone(wait):
                break
        try:
            self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()

    def _wait_gone(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        for _ in range(int(seconds / 0.05) + 1):  # bounded in count and in time
            if self.proc.poll() is not None and not _group_exists(self.pgid):
                return True
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        return False

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_all_groups() -> None:
    for group in list(_live_groups):
        group.stop(timeout=5.0)


def _on_signal(signum, frame):  # pragma: no cover - interactive interruption
    stop_all_groups()
    raise SystemExit(128 + signum)


atexit.register(stop_all_groups)
for _sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_sig, _on_signal)


def run_group(argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None,
              capture: bool = True) -> subprocess.CompletedProcess:
    """Run ``argv`` to completion as the leader of its own process group (bounded by ``timeout``).

    If it overruns, or the benchmark is interrupted, the group gets SIGINT (so ``vidax run`` can stop the ffmpeg
    it started and record the interruption), then SIGTERM, then SIGKILL.
    """
    pipe = subprocess.PIPE if capture else subprocess.DEVNULL
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=pipe, stderr=pipe, env=env, cwd=cwd,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        end_group(proc, ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)))
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def end_group(proc: subprocess.Popen, steps: Sequence[tuple[int, float]]) -> None:
    """Send each signal of ``steps`` (``(signal, seconds to wait)``, ...) to the process group ``proc`` leads
    (its own session: the group id is its pid), until ``proc`` has exited."""
    for sig, wait in steps:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def http_get(port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 5.0,
             method: str = "GET", body: bytes | None = None) -> tuple[int, bytes]:
    """One request on a fresh connection to 127.0.0.1:``port``: (status, body)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_ready(group: ProcessGroup, port: int, path: str = "/health", headers: dict[str, str] | None = None,
               timeout: float = 30.0) -> float:
    """Poll ``path`` until it answers 200; returns the seconds it took.

    :raises RuntimeError: the process exited, or it did not answer within ``timeout`` (the log tail is shown).
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    last = "no answer"
    for _ in range(int(timeout / 0.1) + 1):  # bounded in count and in time
        if time.monotonic() >= deadline:
            break
        if not group.alive():
            raise RuntimeError(f"{group.name} exited with {group.proc.returncode} before it was ready:\n"
                               f"{group.log_tail()}")
        try:
            status, body = http_get(port, path, headers, timeout=2.0)
            if status == 200:
                return time.monotonic() - t0
            last = f"HTTP {status}: {body[:200]!r}"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    raise RuntimeError(f"{group.name} was not ready on port {port} within {timeout:.0f}s ({last}):\n"
                       f"{group.log_tail()}")


def start_server(argv_for_port: Callable[[int], list[str]], *, name: str, log_dir: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None, ready_path: str = "/health",
                 headers: dict[str, str] | None = None, attempts: int = 3,
                 timeout: float = 30.0) -> tuple[ProcessGroup, int]:
    """Start ``argv_for_port(port)`` on a free loopback port and wait until it is ready.

    Retries on another port (at most ``attempts`` times) when the process dies early, e.g. because the port
    was taken between choosing it and binding it.
    """
    error: Exception | None = None
    for attempt in range(attempts):
        port = free_port()
        group = ProcessGroup(argv_for_port(port), log_path=log_dir / f"{name}-{attempt}.log", env=env, cwd=cwd,
                             name=name)
        try:
            wait_ready(group, port, ready_path, headers, timeout=timeout)
            return group, port
        except RuntimeError as exc:
            group.stop(timeout=5.0)
            error = exc
    raise RuntimeError(f"could not start {name}: {error}")


# --------------------------------------------------------------------------- load


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of ``pid`` from /proc, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid ... utime stime
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root_pid: int) -> float:
    """CPU seconds used so far by ``root_pid`` and its live descendants (a gunicorn master and its workers).

    Linux only (/proc); NaN elsewhere. Finished processes are not counted, so take both readings while the
    server runs.
    """
    if not Path("/proc").is_dir():
        return float("nan")
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _proc_stat(int(entry.name))
            if st is not None:
                stats[int(entry.name)] = st
    total, todo, seen = 0.0, [root_pid], set()
    while todo and len(seen) < 10_000:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo.extend(child for child, (ppid, _) in stats.items() if ppid == pid)
    return total


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies: list[float] = field(repr=False, default_factory=list)
    server_cpu: float = float("nan")  # CPU seconds the server used during the measured window

    @property
    def cpu_per_request(self) -> float:
        """Server CPU seconds per answered request in the measured window."""
        return self.server_cpu / self.requests if self.requests else float("nan")

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, p: float) -> float:
        """Latency percentile ``p`` (0..100) in seconds (nearest rank)."""
        if not self.latencies:
            return float("nan")
        data = sorted(self.latencies)
        k = max(0, min(len(data) - 1, int(round(p / 100.0 * len(data) + 0.5)) - 1))
        return data[k]

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p99(self) -> float:
        return self.percentile(99)


def http_load(port: int, path: str, *, headers: dict[str, str] | None = None, concurrency: int = 16,
              seconds: float = 5.0, warmup: float = 0.5, max_requests: int = 2_000_000,
              max_errors: int = 100, expect_status: int = 200,
              cpu_probe: Callable[[], float] | None = None) -> LoadResult:
    """``concurrency`` threads, each on its own keep-alive ``http.client`` connection, send ``GET path`` in a
    closed loop for ``seconds`` (after ``warmup`` seconds that are not counted).

    Bounded: every thread stops at the deadline, after ``max_requests / concurrency`` requests, or once the
    threads together saw ``max_errors`` errors (a non-``expect_status`` answer or a connection error).

    ``cpu_probe`` (e.g. ``lambda: tree_cpu_seconds(server_pid)``) is read at the start and the end of the
    measured window; the difference is the result's ``server_cpu``.
    """
    headers = dict(headers or {})
    per_thread = max(1, max_requests // concurrency)
    lock = threading.Lock()
    counts = {"requests": 0, "errors": 0}
    all_latencies: list[float] = []
    start_barrier = threading.Barrier(concurrency + 1)
    times: dict[str, float] = {}
    ends: list[float] = []

    def worker() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        latencies: list[float] = []
        n = errors = 0
        last_end = 0.0
        try:
            start_barrier.wait(timeout=30)
            measure_from, stop_at = times["measure_from"], times["stop_at"]
            while n < per_thread:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    break
                try:
                    conn.request("GET", path, headers=headers)
                    resp = conn.getresponse()
                    resp.read()
                    ok = resp.status == expect_status
                except (OSError, http.client.HTTPException):
                    ok = False
                    conn.close()
                    conn = http.client.HTTPConnection(HOST, port, timeout=10)
                t1 = last_end = time.perf_counter()
                if t0 < measure_from:
                    continue  # warm-up
                n += 1
                if ok:
                    latencies.append(t1 - t0)
                else:
                    errors += 1
                    with lock:
                        counts["errors"] += 1
                        if counts["errors"] >= max_errors:
                            break
        except threading.BrokenBarrierError:
            pass
        finally:
            conn.close()
            with lock:
                counts["requests"] += n - errors
                all_latencies.extend(latencies)
                ends.append(last_end)

    threads = [threading.Thread(target=worker, name=f"load-{i}", daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    now = time.perf_counter()
    times["measure_from"] = now + warmup
    times["stop_at"] = now + warmup + seconds
    start_barrier.wait(timeout=30)
    cpu = float("nan")
    if cpu_probe is not None:
        time.sleep(max(0.0, times["measure_from"] - time.perf_counter()))
        cpu0 = cpu_probe()
        time.sleep(max(0.0, times["stop_at"] - time.perf_counter()))
        cpu = cpu_probe() - cpu0
    for t in threads:
        t.join(timeout=warmup + seconds + 30)
    # the measured window: from the end of the warm-up to the end of the last request
    elapsed = max(1e-9, max(ends, default=0.0) - times["measure_from"])
    return LoadResult(requests=counts["requests"], errors=counts["errors"], seconds=elapsed,
                      latencies=all_latencies, server_cpu=cpu)


# --------------------------------------------------------------------------- statistics and output


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def repeat_median(fn: Callable[[], float], repeat: int) -> tuple[float, list[float]]:
    """Call ``fn`` ``repeat`` times (bounded); its median and all the values."""
    values = [fn() for _ in range(max(1, repeat))]
    return median(values), values


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table, right-aligned numbers."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for k, row in enumerate(cells):
        pairs = enumerate(zip(row, widths, strict=True))
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def verdict(ok: bool) -> str:
    return "meets goal" if ok else "MISSES GOAL"


def machine_note() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")


# --------------------------------------------------------------------------- media and configuration


def ffmpeg_path() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg_cli(*args: str, timeout: float = 300.0) -> None:
    cmd = [ffmpeg_path(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, start_new_session=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")


def make_media(folder: Path, audio_seconds: float = 3.0, size: str = "512x512") -> tuple[Path, Path]:
    """A speech-like mono 48 kHz WAV of ``audio_seconds`` and a ``size`` PNG test picture in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    wav, png = folder / "voice.wav", folder / "face.png"
    # a tone amplitude-modulated at syllable rate plus a little noise: not silence, not a pure sine
    run_ffmpeg_cli("-f", "lavfi", "-i",
                   f"aevalsrc='0.4*sin(2*PI*220*t)*(0.6+0.4*sin(2*PI*4*t))+0.02*(random(0)-0.5)'"
                   f":s=48000:d={audio_seconds:g}",
                   "-ac", "1", "-c:a", "pcm_s16le", str(wav))
    run_ffmpeg_cli("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=1", "-frames:v", "1", str(png))
    return wav, png


def bench_settings_files(root: Path, media_dir: Path) -> dict[str, str]:
    """An isolated VIDAX configuration under ``root``: the environment to run VIDAX with.

    A config file of its own (so the repository's ``config/vidax.json`` does not apply), an empty asset
    manifest and providers file, a runs folder, and ``media_dir`` as the only input root.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "assets.json").write_text(json.dumps({"assets": []}))
    (root / "lipsync.providers.json").write_text(json.dumps({"providers": {}}))
    config = {
        "runs_dir": "runs",
        "input_roots": [str(media_dir)],
        "assets_config": "assets.json",
        "lipsync_providers": "lipsync.providers.json",
    }
    (root / "vidax.json").write_text(json.dumps(config, indent=2))
    return {
        "VIDAX_CONFIG": str(root / "vidax.json"),
        "VIDAX_API_KEY": API_KEY,
        "VIDAX_RUNS_DIR": str(root / "runs"),
        "VIDAX_INPUT_ROOTS": str(media_dir),
    }


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """``os.environ`` without any VIDAX_* of the caller's shell, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDAX_")}
    env.update(extra)
    return env
