"""Asset checks and downloads of VIDAX against the plain tools, on one large file.

Three figures, each a ratio against a baseline measured in the same run (the machine is small and noisy, so
absolute numbers mean little; the figures are never asserted by the tests):

(a) first check: ``AssetManager(...).status()`` on a manifest with one ``--size-mib`` asset and its sha256,
    with no hash-cache sidecar, against ``sha256sum`` of the same file; both with the file in the page cache.
    Ratio VIDAX MB/s / sha256sum MB/s, goal >= 0.9.
(b) second check: the same ``status()`` again on the unchanged file (the sidecar is there now) against the
    first check. Speed-up first seconds / second seconds, goal >= 100x.
(c) download over loopback: ``AssetManager(...).install()`` with the asset missing (stream, hash, verify size
    and sha256, fsync, rename) against ``curl -s -o FILE URL`` of the same file from the same server.
    Ratio curl seconds / VIDAX seconds (= VIDAX throughput / curl throughput), goal >= 0.8.

The server for (c) is chosen by measurement: a small threaded ``socket.sendfile`` server (zero-copy) and
``python -m http.server`` are both timed with ``curl -o /dev/null`` (no disk write, so this is the most a
client could get from each), and their CPU time per GiB is read from /proc; the faster one serves (c) (within
10% of each other, the one that burns less CPU, since on 2 cores the server competes with the client). Its
capacity is printed next to the client figures, so one can see it is not the bottleneck. Without ``curl`` on
the PATH, (c) is skipped.

Rows marked "info" are not goals: ``openssl dgst -sha256`` next to (a) (coreutils' sha256sum may be built
without libcrypto, and then it does not use the CPU's SHA instructions that hashlib uses), and ``curl`` followed
by ``fsync`` next to (c) (the durability VIDAX's install provides and plain curl does not). ``--profile`` runs
the VIDAX side once more under cProfile and prints where its time goes.

Every repetition is interleaved (VIDAX and baseline alternate, in rotating order) and the median of
``--repeat`` is reported. Traffic is loopback only (127.0.0.1). Everything lives in one temporary folder that is
removed at the end, and the server processes are stopped by their pid, however the benchmark ends.

    .venv/bin/python benchmarks/assets.py [--size-mib 1024] [--repeat 3] [--only a|b|c] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import os
import pstats
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import end_group  # noqa: E402
from _common import machine_note  # noqa: E402
from _common import table  # noqa: E402

from vidax_core.assets import AssetManager
from vidax_core.assets import HashCache
from vidax_core.plugins import Registry
from vidax_core.plugins import get_plugin_manager

HOST = "127.0.0.1"
MIB = 1 << 20
MB = 1e6  # throughputs are in MB/s of 10^6 bytes
GOAL_A = 0.9
GOAL_B = 100.0
GOAL_C = 0.8
MAX_REPEAT = 25
SERVER_MAX_SECONDS = 3 * 3600  # a server that outlives its parent or this gives up by itself

# A small threaded HTTP/1.1 file server: GET/HEAD of files in one folder, zero-copy with socket.sendfile,
# Content-Length, ETag, Last-Modified and single "bytes=N-" / "bytes=N-M" ranges; one request per connection.
SENDFILE_SERVER = textwrap.dedent('''\
    import email.utils, os, socket, sys, threading, time

    root, port_file, parent, max_seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])

    def answer(conn, status, headers, body=b""):
        head = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers.items()] + ["", ""]
        conn.sendall("\\r\\n".join(head).encode("latin-1") + body)

    def handle(conn):
        try:
            conn.settimeout(60)
            data = b""
            while b"\\r\\n\\r\\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            lines = data.split(b"\\r\\n\\r\\n", 1)[0].decode("latin-1").split("\\r\\n")
            method, target = lines[0].split(" ")[:2]
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            name = os.path.basename(target.split("?", 1)[0])
            path = os.path.join(root, name)
            if method not in ("GET", "HEAD"):
                answer(conn, "405 Method Not Allowed", {"Content-Length": "0", "Connection": "close"})
                return
            if not name or not os.path.isfile(path):
                answer(conn, "404 Not Found", {"Content-Length": "0", "Connection": "close"})
                return
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                size = st.st_size
                etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
                start, end, status = 0, size - 1, "200 OK"
                rng = headers.get("range", "")
                if_range = headers.get("if-range")
                if rng.startswith("bytes=") and "," not in rng and (if_range is None or if_range == etag):
                    a, _, b = rng[len("bytes="):].partition("-")
                    if a.isdigit():
                        start = int(a)
                        end = min(int(b), size - 1) if b.isdigit() else size - 1
                        if start >= size:
                            answer(conn, "416 Range Not Satisfiable",
                                   {"Content-Range": f"bytes */{size}", "Content-Length": "0",
                                    "Connection": "close"})
                            return
                        status = "206 Partial Content"
                out = {"Content-Type": "application/octet-stream", "Content-Length": str(end - start + 1),
                       "Accept-Ranges": "bytes", "ETag": etag,
                       "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True), "Connection": "close"}
                if status.startswith("206"):
                    out["Content-Range"] = f"bytes {start}-{end}/{size}"
                answer(conn, status, out)
                if method == "GET":
                    conn.sendfile(f, start, end - start + 1)
        except (OSError, ValueError, IndexError):
            pass
        finally:
            try:
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            conn.close()

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    srv.settimeout(0.5)
    with open(port_file + ".tmp", "w") as pf:
        pf.write(str(srv.getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline and os.getppid() == parent:
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        threading.Thread(target=handle, args=(conn,), daemon=True).start()
''')


# --------------------------------------------------------------------------- small helpers


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def mbps(size: int, seconds: float) -> float:
    return size / seconds / MB if seconds > 0 else float("nan")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def say(msg: str) -> None:
    print(msg, flush=True)


def make_file(path: Path, size: int) -> str:
    """``size`` random bytes at ``path``, written and synced; returns their sha256."""
    h = hashlib.sha256()
    block = 8 * MIB
    with open(path, "wb") as f:
        left = size
        while left > 0:
            data = os.urandom(min(block, left))
            h.update(data)
            f.write(data)
            left -= len(data)
        f.flush()
        os.fsync(f.fileno())
    return h.hexdigest()


def read_through(path: Path) -> None:
    """Read the whole file once, so it is in the page cache."""
    buf = bytearray(4 * MIB)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def drop_dirty() -> None:
    """Write back dirty pages (earlier downloads), so no measurement pays for another one's writeback."""
    os.sync()


def write_manifest(folder: Path, name: str, url: str, path: Path, sha256: str, size: int) -> Path:
    manifest = folder / f"{name}.assets.json"
    manifest.write_text(json.dumps({"assets": [{
        "name": name, "url": url, "path": str(path), "sha256": sha256, "size": size,
        "on_missing": "download", "on_hash_mismatch": "fail",
    }]}))
    return manifest


def build_registry() -> Registry:
    """The builtin plugins only (no third-party entry points, no VIDAX_* of the caller's shell)."""
    return Registry.build(get_plugin_manager(entry_points=False, env={}))


def profile_call(label: str, fn: Callable[[], Any], top: int = 18) -> None:
    prof = cProfile.Profile()
    prof.enable()
    try:
        fn()
    finally:
        prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    say(f"\n--- cProfile of {label} (by own time) ---")
    say(out.getvalue().strip())


# --------------------------------------------------------------------------- servers


class Server:
    """A loopback HTTP server process serving one folder, started and stopped by its pid (own session)."""

    def __init__(self, kind: str, root: Path, work: Path):
        self.kind = kind
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self._log = open(work / f"server-{kind}.log", "wb")
        if kind == "sendfile":
            script = work / "sendfile_server.py"
            script.write_text(SENDFILE_SERVER)
            port_file = work / "sendfile_server.port"
            self.proc = subprocess.Popen(
                [sys.executable, str(script), str(root), str(port_file), str(os.getpid()),
                 str(SERVER_MAX_SECONDS)],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not port_file.exists() and self.proc.poll() is None:
                time.sleep(0.05)
            if not port_file.exists():
                self.stop()
                raise RuntimeError(f"the sendfile server did not start: {self.log_tail()}")
            self.port = int(port_file.read_text())
        elif kind == "http.server":
            for _ in range(3):  # bounded: a port taken between choosing and binding it
                self.port = free_port()
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "http.server", "--bind", HOST, "--directory", str(root), str(self.port)],
                    stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
                if self._wait_listening(15):
                    break
                self.stop(close_log=False)
            else:
                raise RuntimeError(f"python -m http.server did not start: {self.log_tail()}")
        else:
            raise ValueError(kind)
        if not self._wait_listening(15):
            self.stop()
            raise RuntimeError(f"the {kind} server does not answer: {self.log_tail()}")

    @property
    def label(self) -> str:
        return {"sendfile": "threaded socket.sendfile server (benchmarks/assets.py)",
                "http.server": "python -m http.server (ThreadingHTTPServer)"}[self.kind]

    def url(self, name: str) -> str:
        return f"http://{HOST}:{self.port}/{name}"

    def _wait_listening(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (all its threads)."""
        if self.proc is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self) -> str:
        try:
            self._log.flush()
            return Path(self._log.name).read_text(errors="replace")[-2000:]
        except (OSError, ValueError):
            return "(no log)"

    def stop(self, close_log: bool = True) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            end_group(proc, ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)))
        if close_log:
            self._log.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def run_curl(url: str, out: str, timeout: float) -> float:
    """Seconds for ``curl -s -o out url`` (raises on failure)."""
    t0 = time.perf_counter()
    proc = subprocess.run(["curl", "-s", "-S", "-f", "-o", out, url], capture_output=True, timeout=timeout)
    secs = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"curl {url} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return secs


# --------------------------------------------------------------------------- the figures


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path):
        self.args = args
        self.work = work
        self.size = args.size_mib * MIB
        self.repeat = args.repeat
        self.timeout = max(120.0, self.size / (20 * MB))  # generous: 20 MB/s would be absurdly slow
        self.served = work / "served"
        self.served.mkdir()
        self.source = self.served / "asset.bin"
        self.registry = build_registry()
        self.results: list[tuple[str, str, str, str, str, str, str]] = []
        self.details: list[str] = []
        self.sha256 = ""
        self.capacity = float("nan")

    def prepare(self) -> None:
        t0 = time.perf_counter()
        self.sha256 = make_file(self.source, self.size)
        read_through(self.source)
        say(f"test file: {self.source} ({self.size} bytes, sha256 {self.sha256[:16]}...), "
            f"made in {time.perf_counter() - t0:.1f}s and read once into the page cache")

    # ----------------------------------------------------------------- (a) and (b)

    def checks(self, want_a: bool, want_b: bool) -> None:
        manifest = write_manifest(self.work, "bench_check", self.served_url_placeholder(), self.source,
                                  self.sha256, self.size)
        cache = HashCache()
        AssetManager(manifest, self.registry)  # imports the installer module once, outside the timings
        read_through(self.source)
        drop_dirty()

        def status() -> float:
            t0 = time.perf_counter()
            result = AssetManager(manifest, self.registry).status()
            secs = time.perf_counter() - t0
            state = result["assets"]["bench_check"]
            if not result["ok"] or state["status"] != "ok":
                raise RuntimeError(f"status() did not find the asset ok: {result}")
            return secs

        def external(argv: list[str]) -> float:
            """Seconds for a hashing command on the file; its output must contain the right digest."""
            t0 = time.perf_counter()
            proc = subprocess.run([*argv, str(self.source)], capture_output=True, timeout=self.timeout)
            secs = time.perf_counter() - t0
            if proc.returncode != 0 or self.sha256 not in proc.stdout.decode(errors="replace").lower():
                raise RuntimeError(f"{argv[0]} failed: {proc.stdout[:200]!r} {proc.stderr[-500:]!r}")
            return secs

        # sha256sum is the baseline of (a); openssl (if installed) is shown for information: coreutils may be
        # built without libcrypto, and then sha256sum does not use the CPU's SHA instructions while hashlib does
        baselines: dict[str, list[str]] = {}
        if want_a:
            if shutil.which("sha256sum"):
                baselines["sha256sum"] = ["sha256sum"]
                if shutil.which("openssl"):
                    baselines["openssl"] = ["openssl", "dgst", "-sha256"]
            else:
                say("(a) skipped: sha256sum is not installed")
                want_a = False

        first: list[float] = []
        second: list[float] = []
        base: dict[str, list[float]] = {k: [] for k in baselines}
        names = ["vidax", *baselines]
        for i in range(self.repeat):
            for who in names[i % len(names):] + names[:i % len(names)]:  # rotating order
                if who != "vidax":
                    base[who].append(external(baselines[who]))
                    continue
                cache.forget(self.source)
                if cache.sidecar(self.source).exists():
                    raise RuntimeError("the hash-cache sidecar could not be removed")
                first.append(status())
                if not cache.sidecar(self.source).exists():
                    raise RuntimeError("the first check wrote no hash-cache sidecar")
                second.append(status())
        cache.forget(self.source)
        self.details.append("first check  s: " + " ".join(f"{s:.3f}" for s in first)
                            + "\nsecond check s: " + " ".join(f"{s * 1e3:.2f}ms" for s in second))
        for who, values in base.items():
            self.details.append(f"{who:12s} s: " + " ".join(f"{s:.3f}" for s in values))

        t_first, t_second = median(first), median(second)
        if want_a:
            v, b = mbps(self.size, t_first), mbps(self.size, median(base["sha256sum"]))
            ratio = v / b
            self.results.append(("(a) first check (no sidecar)", f"{v:.0f} MB/s", f"{b:.0f} MB/s (sha256sum)",
                                 f"{ratio:.2f}", f">= {GOAL_A}", verdict(ratio >= GOAL_A),
                                 "VIDAX MB/s / sha256sum MB/s"))
            if "openssl" in base:
                o = mbps(self.size, median(base["openssl"]))
                self.results.append(("    (info) vs openssl dgst", f"{v:.0f} MB/s", f"{o:.0f} MB/s (openssl)",
                                     f"{v / o:.2f}", "-", "info", "VIDAX MB/s / openssl MB/s"))
        if want_b:
            speedup = t_first / t_second
            self.results.append(("(b) second check (sidecar)", f"{t_second * 1e3:.2f} ms",
                                 f"{t_first * 1e3:.0f} ms (1st check)", f"{speedup:.0f}x", f">= {GOAL_B:.0f}x",
                                 verdict(speedup >= GOAL_B), "first s / second s"))
        if self.args.profile:
            cache.forget(self.source)
            profile_call("a first check (AssetManager.status, no sidecar)",
                         lambda: AssetManager(manifest, self.registry).status())
            profile_call("a second check (AssetManager.status, sidecar present)",
                         lambda: AssetManager(manifest, self.registry).status())
            cache.forget(self.source)

    def served_url_placeholder(self) -> str:
        # status() never downloads; the URL only has to have a scheme an asset source handles
        return f"http://{HOST}:9/asset.bin"

    # ----------------------------------------------------------------- (c)

    def pick_server(self) -> Server:
        """Time ``curl -o /dev/null`` from each candidate (median of --repeat) and keep the fastest running;
        within 10% of each other, the one that burns less CPU (on 2 cores the server competes with the
        client for CPU)."""
        capacity: dict[str, float] = {}
        cpu: dict[str, float] = {}
        servers: dict[str, Server] = {}
        try:
            for kind in ("sendfile", "http.server"):
                servers[kind] = Server(kind, self.served, self.work)
            times: dict[str, list[float]] = {k: [] for k in servers}
            cpu_secs: dict[str, float] = dict.fromkeys(servers, 0.0)
            for i in range(self.repeat):
                kinds = list(servers) if i % 2 == 0 else list(reversed(servers))
                for kind in kinds:
                    before = servers[kind].cpu_seconds()
                    times[kind].append(run_curl(servers[kind].url(self.source.name), os.devnull, self.timeout))
                    cpu_secs[kind] += servers[kind].cpu_seconds() - before
            for kind, values in times.items():
                capacity[kind] = mbps(self.size, median(values))
                cpu[kind] = cpu_secs[kind] / len(values) / (self.size / 2**30)
            fastest = max(capacity.values())
            close = [k for k in servers if capacity[k] >= 0.9 * fastest]
            best = min(close, key=cpu.__getitem__)
        except BaseException:
            for s in servers.values():
                s.stop()
            raise
        for kind, s in servers.items():
            if kind != best:
                s.stop()
        rows = [(servers[k].label, f"{capacity[k]:.0f} MB/s", f"{cpu[k]:.2f} s/GiB",
                 "<- serves (c)" if k == best else "") for k in servers]
        say("\nserver choice for (c): curl -o /dev/null (no disk write), median of "
            f"{self.repeat}; server CPU per GiB sent\n" + table(["server", "capacity", "server CPU", ""], rows))
        self.capacity = capacity[best]
        return servers[best]

    def download(self) -> None:
        if shutil.which("curl") is None:
            say("\n(c) skipped: curl is not installed (`which curl` found nothing)")
            self.results.append(("(c) loopback download", "-", "-", "-", f">= {GOAL_C}", "SKIP",
                                 "curl is not installed"))
            return
        free = shutil.disk_usage(self.work).free
        if free < 2 * self.size + 256 * MIB:
            raise SystemExit(f"(c) needs {2 * self.size + 256 * MIB} free bytes in {self.work}, {free} free")
        server = self.pick_server()
        try:
            self._download_with(server)
        finally:
            server.stop()

    def _download_with(self, server: Server) -> None:
        url = server.url(self.source.name)
        dl = self.work / "dl"
        dl.mkdir()
        target = dl / "vidax.bin"
        curl_out = dl / "curl.bin"
        manifest = write_manifest(self.work, "bench_download", url, target, self.sha256, self.size)
        cache = HashCache()

        def clean() -> None:
            for p in (target, curl_out, cache.sidecar(target), target.with_name(f".{target.name}.vidax-part"),
                      target.with_name(f".{target.name}.vidax-part.json")):
                p.unlink(missing_ok=True)

        def vidax() -> float:
            clean()
            drop_dirty()
            t0 = time.perf_counter()
            result = AssetManager(manifest, self.registry).install()
            secs = time.perf_counter() - t0
            state = result["assets"]["bench_download"]
            if not result["ok"] or state.get("action") != "downloaded" or target.stat().st_size != self.size:
                raise RuntimeError(f"install() did not download the asset: {result}")
            clean()
            return secs

        def curl() -> float:
            clean()
            drop_dirty()
            secs = run_curl(url, str(curl_out), self.timeout)
            if curl_out.stat().st_size != self.size:
                raise RuntimeError(f"curl wrote {curl_out.stat().st_size} bytes, expected {self.size}")
            clean()
            return secs

        def curl_fsync() -> float:
            """Information only: curl, then fsync of its file (the durability VIDAX's install provides)."""
            clean()
            drop_dirty()
            t0 = time.perf_counter()
            run_curl(url, str(curl_out), self.timeout)
            fd = os.open(curl_out, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            secs = time.perf_counter() - t0
            clean()
            return secs

        fns = {"vidax": vidax, "curl": curl, "curl+fsync": curl_fsync}
        names = list(fns)
        times: dict[str, list[float]] = {k: [] for k in names}
        try:
            for i in range(self.repeat):
                order = names[i % len(names):] + names[:i % len(names)]  # rotating order
                for who in order:
                    times[who].append(fns[who]())
            if self.args.profile:
                clean()
                drop_dirty()
                profile_call("c download (AssetManager.install, asset missing)",
                             lambda: AssetManager(manifest, self.registry).install())
        finally:
            clean()
        tv, tc = median(times["vidax"]), median(times["curl"])
        v, c = mbps(self.size, tv), mbps(self.size, tc)
        ratio = tc / tv
        self.details.append("download vidax s: " + " ".join(f"{s:.3f}" for s in times["vidax"])
                            + "\ndownload curl  s: " + " ".join(f"{s:.3f}" for s in times["curl"])
                            + "\ncurl + fsync   s: " + " ".join(f"{s:.3f}" for s in times["curl+fsync"]))
        self.results.append(("(c) loopback download", f"{v:.0f} MB/s", f"{c:.0f} MB/s (curl)", f"{ratio:.2f}",
                             f">= {GOAL_C}", verdict(ratio >= GOAL_C), "curl s / VIDAX s"))
        tf = median(times["curl+fsync"])
        self.results.append(("    (info) vs curl + fsync", f"{v:.0f} MB/s",
                             f"{mbps(self.size, tf):.0f} MB/s (curl+fsync)", f"{tf / tv:.2f}", "-", "info",
                             "curl+fsync s / VIDAX s"))
        note = (f"server {server.label}: capacity {self.capacity:.0f} MB/s, "
                f"{self.capacity / max(v, c):.1f}x the faster client")
        if self.capacity < 1.2 * max(v, c):
            note += " -- WARNING: the server may be limiting the clients"
        self.details.append(note)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, default=1024, help="size of the test asset in MiB (default 1024)")
    p.add_argument("--repeat", type=int, default=3, help=f"median of N runs (default 3, at most {MAX_REPEAT})")
    p.add_argument("--only", choices=("a", "b", "c"), help="measure only this figure")
    p.add_argument("--profile", action="store_true",
                   help="also run the VIDAX side once under cProfile and print where the time goes")
    p.add_argument("--tmp-dir", default=None, help="where the temporary folder goes (default: the system's)")
    args = p.parse_args(argv)
    if args.size_mib < 1:
        p.error("--size-mib must be at least 1")
    if not 1 <= args.repeat <= MAX_REPEAT:
        p.error(f"--repeat must be between 1 and {MAX_REPEAT}")
    return args


def _terminate(signum, frame):  # pragma: no cover - interactive interruption
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    want = {"a", "b", "c"} if args.only is None else {args.only}
    work = Path(tempfile.mkdtemp(prefix="vidax-bench-assets-", dir=args.tmp_dir))
    need = args.size_mib * MIB * (3 if "c" in want else 1) + 256 * MIB
    free = shutil.disk_usage(work).free
    say(f"VIDAX asset benchmark: {args.size_mib} MiB asset, median of {args.repeat}; {machine_note()}")
    say(f"work folder {work} ({free / 2**30:.1f} GiB free, about {need / 2**30:.1f} GiB needed)")
    if free < need:
        shutil.rmtree(work, ignore_errors=True)
        say(f"not enough disk space in {work.parent}: use a smaller --size-mib or another --tmp-dir")
        return 2
    try:
        bench = Bench(args, work)
        bench.prepare()
        if want & {"a", "b"}:
            bench.checks("a" in want, "b" in want)
        if "c" in want:
            bench.download()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    say("\nper-run values:\n" + "\n".join(bench.details))
    say("\n" + table(["figure", "VIDAX", "baseline", "ratio", "goal", "result", "ratio is"], bench.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
