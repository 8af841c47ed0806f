"""A client for ComfyUI's HTTP and websocket API (as recorded from ComfyUI 0.3.64 in ``shared/comfyui``).

The life of one prompt::

    client = ComfyUIClient(url)
    name = client.upload(path, subfolder="vidax/RUN")          # POST /upload/image -> "vidax/RUN/face.png"
    with client.session_socket() as ws:                         # /ws?clientId=...  (opened before submit)
        prompt_id = client.submit(workflow, ws.client_id)       # POST /prompt
        entry = client.wait(prompt_id, ws, timeout_s=...)       # ws messages; /history polling as fallback
    outputs = client.outputs(entry)                             # every output item of every node
    client.download(item, dest)                                 # GET /view, streamed

``wait`` notices completion on the websocket (``execution_success``, then the history entry, which ComfyUI
writes a moment later), fails with ComfyUI's own exception text on ``execution_error``, falls back to polling
``/history/{id}`` when the socket cannot connect or drops, checks every few seconds that the server is still
alive (a crashed ComfyUI is ``COMFYUI_UNAVAILABLE`` within seconds, never a hang), and on ``timeout_s``
interrupts the prompt (``POST /interrupt``) and raises ``COMFYUI_TIMEOUT``.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

import requests
from attrs import frozen

from ..errors import PhaseFailed
from ..errors import ValidationError
from .process import ComfyUITimeout
from .process import ComfyUIUnavailable

log = logging.getLogger("vidax.comfyui")

HTTP_TIMEOUT = (5.0, 60.0)
LIVENESS_EVERY = 2.0  # is the server alive?
WATCH_EVERY = 1.0  # is the prompt still queued, or finished, whatever the websocket says?
SUCCESS_TO_DONE = 0.5  # after execution_success, how long to wait for the closing `executing` message
POLL_EVERY = 0.5
HISTORY_GRACE = 10.0  # execution_success arrives a moment before the history entry is written
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".gif", ".webp", ".apng", ".avi", ".m4v")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class ComfyUIExecutionError(PhaseFailed):
    """ComfyUI ran the prompt and a node failed (``execution_error``) or the prompt was interrupted."""

    code = "COMFYUI_EXECUTION_ERROR"


class ComfyUIPromptRejected(ValidationError):
    """ComfyUI refused the prompt (HTTP 400 with ``node_errors``)."""


@frozen
class OutputItem:
    """One file a node produced: ``kind`` is the output key (``images``, ``gifs``, ``videos``, ``audio``)."""

    node_id: str
    kind: str
    filename: str
    subfolder: str
    type: str
    animated: bool = False
    format: str | None = None

    @property
    def extension(self) -> str:
        return os.path.splitext(self.filename)[1].lower()

    @property
    def is_video(self) -> bool:
        if self.kind in ("gifs", "videos"):
            return True
        if self.format and self.format.startswith("video/"):
            return True
        # core nodes flag animations (SaveVideo, SaveWEBM, SaveAnimatedWEBP, SaveAnimatedPNG's .png) with animated
        return self.animated and (self.extension in VIDEO_EXTENSIONS or self.extension == ".png")

    @property
    def is_image(self) -> bool:
        return self.kind == "images" and not self.is_video and self.extension in IMAGE_EXTENSIONS


class _Socket:
    """A websocket to ``/ws?clientId=...``, or a stand-in that tells ``wait`` to poll instead."""

    def __init__(self, client_id: str, ws: Any | None, error: str | None = None):
        self.client_id = client_id
        self.ws = ws
        self.error = error

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:  # closing a dead socket is not worth an error
                pass
            self.ws = None

    def __enter__(self) -> _Socket:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ComfyUIClient:
    """HTTP + websocket client of one ComfyUI server."""

    def __init__(self, url: str, *, session: requests.Session | None = None, alive: Callable[[], bool] | None = None):
        self.url = url.rstrip("/")
        self.session = session or requests.Session()
        self._alive = alive or self.ping

    # ---------------------------------------------------------------- basics

    def ping(self) -> bool:
        """Whether the server answers ``GET /system_stats``."""
        try:
            return self.session.get(self.url + "/system_stats", timeout=(1.0, 3.0)).status_code == 200
        except requests.RequestException:
            return False

    def _request(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", HTTP_TIMEOUT)
        try:
            return self.session.request(method, self.url + path, **kw)
        except requests.ConnectionError as exc:
            raise ComfyUIUnavailable(f"ComfyUI at {self.url} is unreachable ({type(exc).__name__})") from None
        except requests.Timeout:
            raise ComfyUIUnavailable(f"ComfyUI at {self.url} did not answer {method} {path} in time") from None

    # ---------------------------------------------------------------- upload

    def upload(self, path: str | os.PathLike, *, subfolder: str = "", name: str | None = None,
               overwrite: bool = True) -> str:
        """Upload a file into ComfyUI's input folder; returns how a workflow references it (``subfolder/name``).

        ``POST /upload/image`` takes any file (audio and video too). With ``overwrite`` the same name is
        replaced; without it ComfyUI may rename (``name (1).ext``) and the returned name says so.
        """
        path = Path(path)
        name = name or path.name
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        data = {"type": "input", "subfolder": subfolder}
        if overwrite:
            data["overwrite"] = "true"
        with open(path, "rb") as f:
            r = self._request("POST", "/upload/image", files={"image": (name, f, ctype)}, data=data)
        if r.status_code != 200:
            raise PhaseFailed(f"ComfyUI refused the upload of {name}: HTTP {r.status_code} {r.text[:200]}",
                              code="COMFYUI_UPLOAD_FAILED")
        body = r.json()
        return f"{body['subfolder']}/{body['name']}" if body.get("subfolder") else body["name"]

    # ---------------------------------------------------------------- submit

    def session_socket(self, client_id: str | None = None, timeout: float = 5.0) -> _Socket:
        """Open the websocket a prompt's messages will arrive on (before submitting, so none is missed).

        When it cannot connect, the returned object has ``ws=None`` and ``wait`` polls ``/history``."""
        import websocket

        client_id = client_id or uuid.uuid4().hex
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        ws_url = urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", f"clientId={client_id}", ""))
        try:
            ws = websocket.create_connection(ws_url, timeout=timeout, enable_multithread=True)
        except Exception as exc:  # websocket-client raises many kinds; any of them means "poll instead"
            log.warning("ComfyUI websocket %s unavailable (%s); falling back to polling /history", ws_url, exc)
            return _Socket(client_id, None, f"{type(exc).__name__}: {exc}")
        return _Socket(client_id, ws)

    def submit(self, workflow: dict[str, Any], client_id: str, *, extra_data: dict[str, Any] | None = None) -> str:
        """``POST /prompt``; returns the prompt id.

        :raises ComfyUIPromptRejected: ComfyUI answered 400; the message names each node, its class and input.
        """
        body: dict[str, Any] = {"prompt": workflow, "client_id": client_id}
        if extra_data:
            body["extra_data"] = extra_data
        r = self._request("POST", "/prompt", json=body)
        if r.status_code == 200:
            answer = r.json()
            if answer.get("node_errors"):
                log.warning("ComfyUI accepted the prompt but dropped invalid outputs: %s",
                            describe_node_errors(answer["node_errors"], workflow))
            return answer["prompt_id"]
        try:
            answer = r.json()
        except ValueError:
            answer = None
        if r.status_code == 400 and isinstance(answer, dict):
            raise prompt_rejected(answer, workflow)
        raise PhaseFailed(f"ComfyUI answered POST /prompt with HTTP {r.status_code}: {r.text[:300]}",
                          code="COMFYUI_PROMPT_FAILED")

    # ---------------------------------------------------------------- wait

    def wait(self, prompt_id: str, sock: _Socket, *, timeout_s: float,
             on_progress: Callable[[float, dict[str, Any]], None] | None = None,
             total_nodes: int | None = None) -> dict[str, Any]:
        """Wait for the prompt to finish; returns its history entry.

        :raises ComfyUIExecutionError: a node failed or the prompt was interrupted (ComfyUI's message).
        :raises ComfyUITimeout: ``timeout_s`` passed; the prompt was interrupted.
        :raises ComfyUIUnavailable: the server went away.
        """
        deadline = time.monotonic() + timeout_s
        tracker = _Progress(total_nodes, on_progress)
        if sock.ws is not None:
            try:
                done = self._wait_ws(prompt_id, sock, deadline, tracker)
            except _SocketLost as exc:
                log.warning("ComfyUI websocket dropped (%s); polling /history for prompt %s", exc, prompt_id)
                sock.close()
                done = False
            if done:
                return self._history_after_done(prompt_id, deadline)
        return self._wait_poll(prompt_id, deadline)

    def _wait_ws(self, prompt_id: str, sock: _Socket, deadline: float, tracker: _Progress) -> bool:
        import websocket

        ws = sock.ws
        watch = _Watch()
        watch.last = time.monotonic()  # the socket speaks first; the server is asked only when it stays silent
        success_at = None
        while True:
            now = time.monotonic()
            if success_at is not None and now - success_at > SUCCESS_TO_DONE:
                return True  # the closing `executing` message did not come: the history will tell
            if now >= deadline:
                self._timeout(prompt_id, deadline)
            if now - watch.last >= WATCH_EVERY:
                # a socket can stay open and silent (half-open): the server's own record decides then
                if self._watch(prompt_id, watch) is not None:
                    return True
            limit = deadline - now if success_at is None else SUCCESS_TO_DONE - (now - success_at)
            ws.settimeout(max(0.05, min(1.0, limit)))
            try:
                frame = ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError) as exc:
                raise _SocketLost(f"{type(exc).__name__}: {exc}") from None
            if not isinstance(frame, str):
                continue  # binary preview images
            try:
                msg = json.loads(frame)
            except ValueError:
                continue
            kind, data = msg.get("type"), msg.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if kind == "execution_error" and data.get("prompt_id") == prompt_id:
                raise execution_error(data)
            if kind == "execution_interrupted" and data.get("prompt_id") == prompt_id:
                raise interrupted(data)
            if kind == "execution_success" and data.get("prompt_id") == prompt_id:
                # ComfyUI writes the history entry a moment *after* this message and then sends
                # `executing {node: null}`: waiting for that saves asking /history too early
                success_at = time.monotonic()
                continue
            if kind == "executing" and data.get("prompt_id") == prompt_id and data.get("node") is None:
                return True
            tracker.feed(kind, data)

    def _history_after_done(self, prompt_id: str, deadline: float) -> dict[str, Any]:
        end = min(deadline, time.monotonic() + HISTORY_GRACE)
        delay = 0.005
        while True:
            entry = self.history(prompt_id)
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                return self._check_entry(prompt_id, entry)
            if time.monotonic() >= end:
                return self._wait_poll(prompt_id, deadline)
            time.sleep(delay)
            delay = min(0.2, delay * 2)

    def _wait_poll(self, prompt_id: str, deadline: float) -> dict[str, Any]:
        watch = _Watch()
        while True:
            entry = self._watch(prompt_id, watch)
            if entry is not None:
                return self._check_entry(prompt_id, entry)
            now = time.monotonic()
            if now >= deadline:
                self._timeout(prompt_id, deadline)
            time.sleep(min(POLL_EVERY, max(0.0, deadline - now)))

    def _watch(self, prompt_id: str, watch: _Watch) -> dict[str, Any] | None:
        """One look at the server: the prompt's finished history entry, or None while it is queued or running.

        :raises ComfyUIUnavailable: the server does not answer.
        :raises ComfyUIExecutionError: the prompt is neither queued, running nor finished, twice in a row (it
            was deleted from the queue, or the server restarted and forgot it).
        """
        watch.last = time.monotonic()
        entry = self.history(prompt_id)
        if entry is not None and entry.get("status", {}).get("completed") is not None:
            return entry
        if watch.alive_due():
            self._check_alive()
        if watch.queue_due():
            if self.queued(prompt_id):
                watch.misses = 0
            else:
                watch.misses += 1
                if watch.misses >= 2:
                    raise ComfyUIExecutionError(
                        f"the prompt {prompt_id} is no longer queued or running, and ComfyUI has no result for it "
                        "(deleted from the queue, or the server restarted)", code="COMFYUI_PROMPT_LOST")
        return None

    def queued(self, prompt_id: str) -> bool:
        """Whether the prompt is running or waiting in ComfyUI's queue."""
        r = self._request("GET", "/queue")
        try:
            q = r.json()
            items = [*q.get("queue_running", []), *q.get("queue_pending", [])]
        except (ValueError, AttributeError):
            return True  # cannot tell: do not declare it lost
        return any(isinstance(i, list) and len(i) > 1 and i[1] == prompt_id for i in items)

    def _check_entry(self, prompt_id: str, entry: dict[str, Any]) -> dict[str, Any]:
        status = entry.get("status", {})
        if status.get("status_str") == "success":
            return entry
        for kind, data in status.get("messages", []):
            if kind == "execution_error":
                raise execution_error(data)
            if kind == "execution_interrupted":
                raise interrupted(data)
        raise ComfyUIExecutionError(f"ComfyUI ended prompt {prompt_id} with status {status.get('status_str')!r}")

    def _check_alive(self) -> None:
        if not self._alive():
            raise ComfyUIUnavailable(f"ComfyUI at {self.url} stopped answering while the prompt ran")

    def _timeout(self, prompt_id: str, deadline: float) -> None:
        self.cancel(prompt_id)
        raise ComfyUITimeout(f"the ComfyUI prompt {prompt_id} did not finish within comfyui.timeout_s; "
                             "it was interrupted")

    def cancel(self, prompt_id: str) -> None:
        """Stop a prompt: interrupt it if it runs, take it off the queue if it waits (best effort)."""
        for path, body in (("/interrupt", {"prompt_id": prompt_id}), ("/queue", {"delete": [prompt_id]})):
            try:
                self._request("POST", path, json=body, timeout=(2.0, 5.0))
            except ComfyUIUnavailable:
                return

    # ---------------------------------------------------------------- results

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The prompt's history entry, or None while ComfyUI has none (pending, running, unknown)."""
        r = self._request("GET", f"/history/{prompt_id}")
        if r.status_code != 200:
            raise PhaseFailed(f"ComfyUI answered GET /history/{prompt_id} with HTTP {r.status_code}",
                              code="COMFYUI_UNAVAILABLE")
        return r.json().get(prompt_id)

    @staticmethod
    def outputs(entry: dict[str, Any]) -> list[OutputItem]:
        """Every output file of a history entry, in node order: ``images`` (with ``animated``), ``gifs``,
        ``videos``, ``audio``."""
        items = []
        for node_id, out in (entry.get("outputs") or {}).items():
            if not isinstance(out, dict):
                continue
            animated = any(bool(a) for a in out.get("animated", []) or [])
            for kind in ("images", "gifs", "videos", "audio"):
                for it in out.get(kind) or []:
                    if isinstance(it, dict) and it.get("filename"):
                        items.append(OutputItem(node_id=str(node_id), kind=kind, filename=it["filename"],
                                                subfolder=it.get("subfolder", ""), type=it.get("type", "output"),
                                                animated=animated, format=it.get("format")))
        return items

    def download(self, item: OutputItem, dest: str | os.PathLike) -> Path:
        """``GET /view`` streamed into ``dest`` (via a temp file beside it)."""
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.part")
        params = {"filename": item.filename, "subfolder": item.subfolder, "type": item.type}
        try:
            with self.session.get(self.url + "/view", params=params, stream=True, timeout=HTTP_TIMEOUT) as r:
                if r.status_code != 200:
                    raise PhaseFailed(f"ComfyUI answered GET /view for {item.filename} with HTTP {r.status_code}",
                                      code="COMFYUI_OUTPUT_MISSING")
                with open(tmp, "wb") as f:
                    for chunk in r.iter_content(1 << 20):
                        f.write(chunk)
            os.replace(tmp, dest)
        except requests.RequestException as exc:
            raise ComfyUIUnavailable(f"downloading {item.filename} from ComfyUI failed: {exc}") from None
        finally:
            if tmp.exists():
                tmp.unlink()
        return dest


class _SocketLost(Exception):
    pass


class _Watch:
    """When the server was last looked at, and how often in a row the prompt was missing from its queue."""

    def __init__(self):
        self.last = 0.0
        self.misses = 0
        self._due = {"alive": 0.0, "queue": 0.0}

    def _every(self, what: str, seconds: float) -> bool:
        now = time.monotonic()
        if now - self._due[what] >= seconds:
            self._due[what] = now
            return True
        return False

    def alive_due(self) -> bool:
        return self._every("alive", LIVENESS_EVERY)

    def queue_due(self) -> bool:
        return self._every("queue", WATCH_EVERY)


class _Progress:
    """Turns ``executing``/``progress`` messages into an overall fraction for ``on_progress``."""

    def __init__(self, total: int | None, callback: Callable[[float, dict[str, Any]], None] | None):
        self.total = max(1, total or 1)
        self.callback = callback
        self.done: set[str] = set()
        self.current: str | None = None

    def feed(self, kind: str, data: dict[str, Any]) -> None:
        if self.callback is None:
            return
        if kind == "execution_cached":
            self.done.update(str(n) for n in data.get("nodes") or [])
        elif kind == "executing" and data.get("node") is not None:
            if self.current is not None:
                self.done.add(self.current)
            self.current = str(data["node"])
            self._emit(0.0, {"node": self.current})
        elif kind == "progress":
            value, maximum = data.get("value") or 0, data.get("max") or 1
            self._emit(float(value) / float(maximum), {"node": str(data.get("node")), "value": value,
                                                        "max": maximum})

    def _emit(self, node_fraction: float, info: dict[str, Any]) -> None:
        fraction = (len(self.done) + max(0.0, min(1.0, node_fraction))) / self.total
        self.callback(min(0.99, fraction), info)


def describe_node_errors(node_errors: dict[str, Any], workflow: dict[str, Any] | None = None) -> str:
    parts = []
    for node_id, info in node_errors.items():
        cls = info.get("class_type") or (workflow or {}).get(node_id, {}).get("class_type", "?")
        for err in info.get("errors", []):
            extra = err.get("extra_info") or {}
            inp = extra.get("input_name") or err.get("details") or ""
            where = f"node {node_id} ({cls})" + (f" input {inp!r}" if inp else "")
            parts.append(f"{where}: {err.get('message')}" + (f" [{err.get('type')}]" if err.get("type") else ""))
    return "; ".join(parts)


def prompt_rejected(answer: dict[str, Any], workflow: dict[str, Any]) -> ComfyUIPromptRejected:
    """A readable error from ComfyUI's 400 answer: its error message plus each node, class and input."""
    error = answer.get("error") or {}
    node_errors = answer.get("node_errors") or {}
    problems = []
    for node_id, info in node_errors.items():
        cls = info.get("class_type") or workflow.get(node_id, {}).get("class_type", "?")
        for err in info.get("errors", []):
            inp = (err.get("extra_info") or {}).get("input_name") or ""
            field = f"comfyui.workflow.{node_id}" + (f".inputs.{inp}" if inp else "")
            problems.append({"field": field, "problem": f"{cls}: {err.get('message')}"
                             + (f" ({err.get('details')})" if err.get("details") and err.get("details") != inp
                                else ""), "type": err.get("type")})
    message = error.get("message") or "ComfyUI rejected the workflow"
    if error.get("details"):
        message += f": {error['details']}"
    if problems:
        message += " — " + "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
    return ComfyUIPromptRejected(f"ComfyUI rejected the workflow ({error.get('type', 'invalid')}): {message}",
                                 details=problems or None)


def execution_error(data: dict[str, Any]) -> ComfyUIExecutionError:
    """ComfyUI's ``execution_error`` as a phase failure naming node, class, exception type and message."""
    message = (data.get("exception_message") or "").strip()
    return ComfyUIExecutionError(
        f"ComfyUI node {data.get('node_id')} ({data.get('node_type')}) failed: "
        f"{data.get('exception_type', 'Exception')}: {message}",
        details={"node_id": data.get("node_id"), "node_type": data.get("node_type"),
                 "exception_type": data.get("exception_type"), "exception_message": message},
    )


def interrupted(data: dict[str, Any]) -> ComfyUIExecutionError:
    """ComfyUI's ``execution_interrupted`` (somebody pressed cancel, or VIDAX's own timeout) as a phase failure."""
    return ComfyUIExecutionError(f"ComfyUI interrupted the prompt at node {data.get('node_id')} "
                                 f"({data.get('node_type')})", code="COMFYUI_INTERRUPTED")
