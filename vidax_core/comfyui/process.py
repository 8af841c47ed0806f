"""The ComfyUI server as a supervised process.

``health()`` asks ``GET /system_stats`` and ``GET /queue`` with short timeouts. ``ensure()`` returns at once when
ComfyUI is healthy; otherwise, with ``auto_start`` on, it starts the configured command in a process group of
its own (``cwd``, ``env``, stdout+stderr to a log file, a pid file with pid, port, log path and start time)
and polls health while watching the child: an early exit is ``COMFYUI_START_FAILED`` with the log's tail, no
health within ``start_timeout_s`` is ``COMFYUI_TIMEOUT`` and the whole process group is stopped.

One process however many threads and gunicorn workers ask at once: starts are serialized by an ``flock`` on
a file beside the pid file, and whoever gets the lock second finds ComfyUI healthy (or a live process of
ours still starting, which it waits for) instead of starting another. ``stop()`` ends only a process VIDAX
started, recognised by the pid file's pid *and* start time (so a recycled pid is never killed).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from ..errors import ComfyUIStartFailed
from ..errors import ComfyUITimeout
from ..errors import ComfyUIUnavailable
from ..fsutil import atomic_write

log = logging.getLogger("vidax.comfyui")

__all__ = ["ComfyUIProcess", "ComfyUIStartFailed", "ComfyUITimeout", "ComfyUIUnavailable"]

HEALTH_TIMEOUT = (1.0, 3.0)
POLL_INTERVAL = 0.25
LOG_TAIL_LINES = 30


def _proc_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("latin-1")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if fields and fields[0] in ("Z", "X"):
        return None  # a zombie is as good as gone
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


class ComfyUIProcess:
    """Health, start and stop of the ComfyUI server of ``settings.comfyui``.

    :param config: :class:`vidax_core.config.ComfyUISettings`.
    :param state_dir: where the pid file, the start lock and the log go (``<runs_dir>/.comfyui``).
    """

    def __init__(self, config: Any, state_dir: Path, session: requests.Session | None = None):
        self.config = config
        self.url = config.url.rstrip("/")
        self.state_dir = Path(state_dir)
        self.pid_file = self.state_dir / "comfyui.pid.json"
        self.lock_file = self.state_dir / "comfyui.start.lock"
        self.log_file = self.state_dir / "comfyui.log"
        self._session = session or requests.Session()
        self._child: subprocess.Popen | None = None
        self._mutex = threading.Lock()

    # ---------------------------------------------------------------- health

    def health(self) -> dict[str, Any]:
        """``{"ok", "url", ...}``: version, devices and queue when reachable, a reason when not; and whether
        VIDAX started it (with its pid)."""
        out: dict[str, Any] = {"ok": False, "url": self.url}
        try:
            r = self._session.get(self.url + "/system_stats", timeout=HEALTH_TIMEOUT)
            r.raise_for_status()
            stats = r.json()
        except requests.RequestException as exc:
            out["reason"] = _reason(exc)
        except ValueError:
            out["reason"] = "GET /system_stats did not answer JSON: is this a ComfyUI server?"
        else:
            system = stats.get("system", {}) if isinstance(stats, dict) else {}
            out["ok"] = True
            out["version"] = system.get("comfyui_version")
            out["python_version"] = system.get("python_version")
            out["pytorch_version"] = system.get("pytorch_version")
            out["devices"] = [
                {k: d.get(k) for k in ("name", "type", "index", "vram_total", "vram_free")}
                for d in stats.get("devices", []) if isinstance(d, dict)
            ]
            try:
                q = self._session.get(self.url + "/queue", timeout=HEALTH_TIMEOUT).json()
                out["queue"] = {"running": len(q.get("queue_running", [])), "pending": len(q.get("queue_pending", []))}
                out["queue_length"] = out["queue"]["running"] + out["queue"]["pending"]
            except (requests.RequestException, ValueError, AttributeError):
                out["queue"] = None
        mine = self._our_process()
        out["started_by_vidax"] = mine is not None
        out["pid"] = mine["pid"] if mine else None
        if mine:
            out["log"] = mine.get("log")
            out["started_at"] = mine.get("started_at")
        return out

    def is_healthy(self) -> bool:
        try:
            r = self._session.get(self.url + "/system_stats", timeout=HEALTH_TIMEOUT)
            return r.status_code == 200
        except requests.RequestException:
            return False

    # ---------------------------------------------------------------- start

    def ensure(self) -> dict[str, Any]:
        """Healthy ComfyUI, started first when needed and allowed.

        :raises ComfyUIStartFailed: ``auto_start`` is off (with a reason why it is unreachable), there is no
            command, it cannot be executed, or it exited before it became healthy (with the log's tail).
        :raises ComfyUITimeout: it did not become healthy within ``start_timeout_s`` (it is stopped).
        """
        if self.is_healthy():
            return {"status": "ready", "url": self.url, "started": False}
        if not self.config.auto_start:
            reason = self.health().get("reason", "unreachable")
            raise ComfyUIStartFailed(f"ComfyUI at {self.url} is not reachable ({reason}) and auto_start is off; "
                                     "start it yourself or set comfyui.auto_start (VIDAX_COMFYUI_AUTO_START=1)")
        if not self.config.command:
            raise ComfyUIStartFailed(f"ComfyUI at {self.url} is not reachable and no comfyui.command is configured "
                                     "to start it")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + float(self.config.start_timeout_s)
        with self._mutex, _FileLock(self.lock_file, deadline + 5):
            if self.is_healthy():  # somebody else started it while we waited for the lock
                return {"status": "ready", "url": self.url, "started": False}
            mine = self._our_process()
            if mine is None:
                # the record of the child just started, not a fresh look-up: a command that fails at once is a
                # zombie before anyone looks, and must be reported as exited, not waited for
                mine = self._spawn()
            else:
                log.info("ComfyUI (pid %s) is starting already; waiting for it", mine["pid"])
            self._wait_healthy(mine, deadline)
        return {"status": "ready", "url": self.url, "started": True, "pid": mine["pid"]}

    def _spawn(self) -> dict[str, Any]:
        cmd = list(self.config.command)
        env = {**os.environ, **dict(self.config.env or {})}
        cwd = str(self.config.cwd) if self.config.cwd else None
        logf = open(self.log_file, "ab")
        logf.write(f"\n--- vidax starting ComfyUI at {time.strftime('%Y-%m-%dT%H:%M:%S')}: {cmd}\n".encode())
        logf.flush()
        try:
            child = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        except OSError as exc:
            raise ComfyUIStartFailed(f"cannot start ComfyUI: {cmd[0]}: {exc.strerror or exc}") from None
        finally:
            logf.close()
        self._child = child
        record = {"pid": child.pid, "start_time": _proc_start_time(child.pid), "port": urlsplit(self.url).port,
                  "url": self.url, "log": str(self.log_file), "command": cmd,
                  "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "started_by": {"pid": os.getpid(), "host": socket.gethostname()}}
        atomic_write(self.pid_file, json.dumps(record, indent=1).encode())
        log.info("started ComfyUI: pid %s, log %s", child.pid, self.log_file)
        return record

    def _wait_healthy(self, mine: dict[str, Any], deadline: float) -> None:
        pid = mine["pid"]
        while True:
            if self.is_healthy():
                log.info("ComfyUI at %s is healthy", self.url)
                return
            if not self._alive(pid):
                code = self._reap(pid)
                self._forget()
                raise ComfyUIStartFailed(
                    f"ComfyUI exited before it became healthy (exit code {code}); its log "
                    f"({self.log_file}) ends with:\n{self.log_tail()}", details={"log_tail": self.log_tail()})
            if time.monotonic() >= deadline:
                self._kill_group(pid)
                self._forget()
                raise ComfyUITimeout(
                    f"ComfyUI did not become healthy within {self.config.start_timeout_s:g}s (start_timeout_s); "
                    f"the process was stopped. Its log ends with:\n{self.log_tail()}")
            time.sleep(POLL_INTERVAL)

    # ---------------------------------------------------------------- stop

    def stop(self, timeout: float = 10.0) -> dict[str, Any]:
        """Stop the ComfyUI VIDAX started (its whole process group); never a server somebody else runs."""
        mine = self._our_process()
        if mine is None:
            return {"stopped": False, "reason": "no ComfyUI started by VIDAX is running"}
        self._kill_group(mine["pid"], timeout)
        self._forget()
        return {"stopped": True, "pid": mine["pid"]}

    def _kill_group(self, pid: int, timeout: float = 5.0) -> None:
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            except PermissionError:
                os.kill(pid, sig)
            end = time.monotonic() + wait
            while time.monotonic() < end:
                self._reap(pid)
                if not self._alive(pid):
                    return
                time.sleep(0.05)

    # ---------------------------------------------------------------- the pid file

    def _our_process(self) -> dict[str, Any] | None:
        """The pid file's record when its process is alive and is the one we started, else None."""
        try:
            record = json.loads(self.pid_file.read_text(encoding="utf-8"))
            pid = int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        start = _proc_start_time(pid)
        if start is None or (record.get("start_time") is not None and start != record["start_time"]):
            return None
        return record

    def _alive(self, pid: int) -> bool:
        if self._child is not None and self._child.pid == pid:
            return self._child.poll() is None
        return _proc_start_time(pid) is not None

    def _reap(self, pid: int) -> int | None:
        if self._child is not None and self._child.pid == pid:
            return self._child.poll()
        return None

    def _forget(self) -> None:
        try:
            self.pid_file.unlink()
        except FileNotFoundError:
            pass
        self._child = None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            with open(self.log_file, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class _FileLock:
    """An exclusive flock with a deadline (threads of one process are serialized by the caller's mutex)."""

    def __init__(self, path: Path, deadline: float):
        self.path = path
        self.deadline = deadline
        self.fd: int | None = None

    def __enter__(self) -> _FileLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() >= self.deadline:
                    os.close(self.fd)
                    raise ComfyUITimeout("another process has been starting ComfyUI for too long") from None
                time.sleep(0.1)

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.ConnectionError):
        return "connection refused or host unreachable"
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"GET /system_stats answered HTTP {exc.response.status_code}"
    return type(exc).__name__

