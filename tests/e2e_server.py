"""A real ``vidax serve`` (gunicorn) on loopback, for the end-to-end tests.

:class:`VidaxServer` writes ``config/vidax.json`` into its own folder, starts ``vidax serve`` there as a
subprocess in a new session (so the whole process group — the gunicorn master and its workers — can be
signalled at once), waits for ``GET /health`` to answer and offers small request helpers.

The server's environment is this process's environment without any ``VIDAX_*`` variable, plus
``VIDAX_API_KEY`` and ``VIDAX_LOAD_PLUGINS=""``: the latter keeps third-party plugins that happen to be
installed in the venv (e.g. the example plugin other tests pip-install) out of the pipeline these tests check.

Nothing leaks: :meth:`VidaxServer.close` kills the process group and any process that escaped it while
working in the server's folder (ffmpeg runs in a session of its own), and the ``server`` fixture closes
every server it made.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

API_KEY = "e2e-key-5f2d9c0b7a"
VIDAX = Path(sys.executable).parent / "vidax"
READY_TIMEOUT = 45.0
HTTP_TIMEOUT = 30.0


def vidax_env(api_key: str | None = API_KEY, **extra: str) -> dict[str, str]:
    """This process's environment without any ``VIDAX_*`` variable, plus the key and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDAX_")}
    env["VIDAX_LOAD_PLUGINS"] = ""
    env["PYTHONUNBUFFERED"] = "1"
    if api_key is not None:
        env["VIDAX_API_KEY"] = api_key
    env.update(extra)
    return env


def write_config(base: Path, input_roots: list[Path], **extra: Any) -> Path:
    """``base/config/vidax.json`` with runs in ``base/runs`` and empty asset and provider files."""
    cfg_dir = base / "config"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    (cfg_dir / "assets.json").write_text('{"assets": []}\n')
    (cfg_dir / "lipsync.providers.json").write_text('{"providers": {}}\n')
    config = {
        "runs_dir": str(base / "runs"),
        "input_roots": [str(r) for r in input_roots],
        "assets_config": "assets.json",
        "lipsync_providers": "lipsync.providers.json",
        "executor": {"threads": 2},
        **extra,
    }
    path = cfg_dir / "vidax.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of ``pid``, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0], int(fields[2])


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def live_pids_in_group(pgid: int) -> list[int]:
    """Processes (not zombies) of process group ``pgid``."""
    out = []
    for pid in _pids():
        st = _proc_stat(pid)
        if st and st[1] == pgid and st[0] != "Z":
            out.append(pid)
    return out


def live_pids_mentioning(text: str) -> list[int]:
    """Processes (not zombies, not this one) whose command line mentions ``text``."""
    out = []
    for pid in _pids():
        if pid == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        st = _proc_stat(pid)
        if text in cmdline and st and st[0] != "Z":
            out.append(pid)
    return out


class VidaxServer:
    """``vidax serve`` in ``base`` (its config in ``base/config/vidax.json``, its runs in ``base/runs``)."""

    def __init__(self, base: Path, input_roots: list[Path], *, workers: int = 2, threads: int = 4,
                 api_key: str = API_KEY, config: dict[str, Any] | None = None):
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.workers, self.threads, self.api_key = workers, threads, api_key
        self.config_path = write_config(self.base, input_roots, **(config or {}))
        self.runs_dir = Path(json.loads(self.config_path.read_text())["runs_dir"])
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.starts = 0
        self.log_path: Path | None = None
        self.http = requests.Session()
        self.http.headers["X-API-Key"] = api_key

    # ------------------------------------------------------------ lifetime

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> VidaxServer:
        for _ in range(3):  # another process may grab the free port before gunicorn binds it
            self.starts += 1
            self.port = free_port()
            self.log_path = self.base / f"server-{self.starts}.log"
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [str(VIDAX), "serve", "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers),
                     "--threads", str(self.threads)],
                    cwd=self.base, env=vidax_env(self.api_key), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True)
            if self._wait_ready():
                return self
            if "in use" not in self.log_tail():
                break
        raise RuntimeError(f"vidax serve did not become ready:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reap_group()
                return False
            try:
                r = self.http.get(self.url + "/health", timeout=2)
                if r.status_code == 200 and r.json() == {"ok": True}:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"vidax serve did not answer /health within {READY_TIMEOUT}s:\n{self.log_tail()}")

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 20.0) -> None:
        """Send ``sig`` to the server's whole process group and wait until the group is gone."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._reap_group(timeout)

    def _reap_group(self, timeout: float = 10.0) -> None:
        pgid = self.proc.pid
        deadline = time.monotonic() + timeout
        while live_pids_in_group(pgid) and time.monotonic() < deadline:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        assert not live_pids_in_group(pgid), f"process group {pgid} survived SIGKILL"

    def escaped(self) -> dict[int, str]:
        """{pid: command line} of :meth:`escaped_pids`, for messages."""
        out = {}
        for pid in self.escaped_pids():
            try:
                out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                pass
        return out

    def escaped_pids(self) -> list[int]:
        """Processes outside the server's group still working in its folder (e.g. ffmpeg, own session)."""
        return live_pids_mentioning(str(self.base))

    def kill_escaped(self) -> list[int]:
        pids = self.escaped_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self.escaped_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        return pids

    def restart(self) -> VidaxServer:
        """Kill the server (if it runs) and start a new one on the same folder (same config and runs)."""
        self.kill()
        return self.start()

    def close(self) -> None:
        try:
            self.kill()
        finally:
            self.kill_escaped()
            self.http.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        """The end of the current server log (gunicorn + VIDAX), for assertion messages."""
        if self.log_path is None or not self.log_path.exists():
            return "(no server log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    # ------------------------------------------------------------ requests

    def get(self, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return self.http.get(self.url + path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", HTTP_TIMEOUT)
        headers = {"X-API-Key": self.api_key, **kw.pop("headers", {})}
        # a connection of its own: safe to call from many threads at once
        return requests.post(self.url + path, json=json, headers=headers, **kw)

    def status(self, run_id: str) -> dict[str, Any]:
        r = self.get(f"/jobs/{run_id}")
        assert r.status_code == 200, f"GET /jobs/{run_id}: {r.status_code} {r.text}\n{self.log_tail()}"
        return r.json()

    def wait_run(self, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Poll ``GET /jobs/{id}`` until the run is completed or failed."""
        deadline = time.monotonic() + timeout
        st: dict[str, Any] = {}
        while time.monotonic() < deadline:
            st = self.status(run_id)
            if st["run_status"] in ("completed", "failed"):
                return st
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} did not end within {timeout}s: {st}\n{self.log_tail()}")

    def wait_phase(self, run_id: str, phase: str, status: str, timeout: float = 60.0) -> dict[str, Any]:
        """Poll until ``phase`` of the run has ``status``."""
        deadline = time.monotonic() + timeout
        st: dict[str, Any] = {}
        while time.monotonic() < deadline:
            st = self.status(run_id)
            if st["phases"][phase]["status"] == status:
                return st
            if st["run_status"] in ("completed", "failed"):
                break
            time.sleep(0.05)
        raise AssertionError(f"run {run_id}: phase {phase} never {status}: {st}\n{self.log_tail()}")


@pytest.fixture
def server(tmp_path, media) -> Iterator:
    """A factory: ``server(workers=2, threads=4, base=None, config=None, roots=())`` starts a VidaxServer
    whose input roots are the media folder, ``tmp_path / "inputs"`` and ``roots``; every server made is closed
    at teardown."""
    made: list[VidaxServer] = []

    def make(*, base: Path | None = None, workers: int = 2, threads: int = 4, config=None, roots=(),
             start: bool = True) -> VidaxServer:
        inputs = tmp_path / "inputs"
        inputs.mkdir(exist_ok=True)
        srv = VidaxServer(base or tmp_path / f"server{len(made)}", [media.dir, inputs, *roots], workers=workers,
                          threads=threads, config=config)
        made.append(srv)
        return srv.start() if start else srv

    yield make
    for srv in made:
        srv.close()
