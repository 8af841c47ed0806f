"""A real HTTP file server on 127.0.0.1 whose misbehaviour the tests switch on per path.

:class:`AssetServer` serves files from a dict (``add(path, data)``) and, for paths not in it, from an optional
folder. ``GET`` and ``HEAD``; ``Range: bytes=A-`` / ``bytes=A-B`` answered with ``206`` (or ``416`` past the
end), honouring ``If-Range`` against the file's strong ``ETag`` (or its ``Last-Modified``).

Per path (``add(..., **behaviour)`` or ``configure(path, **behaviour)``), see :class:`Behaviour`:

* ``ranges=False``: ignore ``Range`` and always answer ``200`` with the whole file;
* ``drop_after=N``: send the headers (full ``Content-Length``) and ``N`` body bytes, then cut the connection;
  ``drop_times`` is how many responses do so (``1``: only the first; ``None``: every one);
* ``corrupt=True``: flip bytes of the body (same length); ``corrupt_times`` as above;
* ``fail_status=503`` with ``fail_times=k``: answer that status ``k`` times, then serve normally
  (``fail_times=None``: always; use it for 401/403/404);
* ``chunk_size`` / ``chunk_delay``: write the body in chunks with a sleep before each (a slow server).

Every request is recorded (:class:`Request`: method, path, ``Range``, ``If-Range`` and all headers);
:meth:`AssetServer.count` counts them per path. The ``asset_server`` fixture starts one server per test and
stops it afterwards.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from attrs import define
from attrs import field

RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")
LAST_MODIFIED = email.utils.formatdate(1_700_000_000, usegmt=True)


@define
class Behaviour:
    """How one path misbehaves (defaults: a well-behaved server)."""

    ranges: bool = True
    drop_after: int | None = None
    drop_times: int | None = 1
    corrupt: bool = False
    corrupt_times: int | None = None
    fail_status: int | None = None
    fail_times: int | None = None
    chunk_size: int = 64 * 1024
    chunk_delay: float = 0.0
    etag: str | None = None  # default: derived from the content
    # how often each misbehaviour has happened so far
    dropped: int = 0
    corrupted: int = 0
    failed: int = 0


@define
class Request:
    method: str
    path: str
    range: str | None
    if_range: str | None
    headers: dict[str, str] = field(factory=dict)
    status: int | None = None


class AssetServer:
    """The server; ``url(path)`` is what a manifest points at."""

    def __init__(self, folder: Path | None = None):
        self.files: dict[str, bytes] = {}
        self.folder = Path(folder) if folder else None
        self.behaviour: dict[str, Behaviour] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.asset_server = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="asset-server", daemon=True)

    # ---------------------------------------------------------------- control

    def start(self) -> AssetServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def add(self, path: str, data: bytes, **behaviour: Any) -> str:
        """Serve ``data`` at ``path`` (replacing what was there: a new version, a new ETag); returns its URL."""
        path = "/" + path.lstrip("/")
        with self.lock:
            self.files[path] = bytes(data)
            self.behaviour[path] = Behaviour(**behaviour)
        return self.url(path)

    def configure(self, path: str, **behaviour: Any) -> None:
        """Change how ``path`` behaves from now on (counters of earlier misbehaviour are reset)."""
        path = "/" + path.lstrip("/")
        with self.lock:
            self.behaviour[path] = Behaviour(**behaviour)

    def etag(self, path: str) -> str:
        path = "/" + path.lstrip("/")
        b = self.behaviour.get(path)
        if b is not None and b.etag:
            return b.etag
        data = self._content(path)
        assert data is not None, path
        return '"' + hashlib.sha256(data).hexdigest()[:20] + '"'

    # ---------------------------------------------------------------- inspection

    def requests_for(self, path: str, method: str | None = "GET") -> list[Request]:
        path = "/" + path.lstrip("/")
        with self.lock:
            return [r for r in self.requests if r.path == path and (method is None or r.method == method)]

    def count(self, path: str | None = None, method: str | None = "GET") -> int:
        """Requests so far (to ``path``, or to any path; of ``method``, or any with ``None``)."""
        with self.lock:
            return sum(1 for r in self.requests
                       if (path is None or r.path == "/" + path.lstrip("/")) and (method is None or r.method == method))

    # ---------------------------------------------------------------- internals

    def _content(self, path: str) -> bytes | None:
        if path in self.files:
            return self.files[path]
        if self.folder is not None:
            candidate = (self.folder / path.lstrip("/")).resolve()
            if self.folder.resolve() in candidate.parents and candidate.is_file():
                return candidate.read_bytes()
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AssetServer/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:  # ConnectionError, TimeoutError
            pass  # a client that went away (killed process, closed session)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        srv: AssetServer = self.server.asset_server  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        record = Request(method=self.command, path=path, range=self.headers.get("Range"),
                         if_range=self.headers.get("If-Range"), headers=dict(self.headers.items()))
        with srv.lock:
            srv.requests.append(record)
            data = srv._content(path)
            b = srv.behaviour.setdefault(path, Behaviour())
            fail = b.fail_status is not None and (b.fail_times is None or b.failed < b.fail_times)
            if fail:
                b.failed += 1
        if fail:
            record.status = b.fail_status
            self._empty(b.fail_status)
            return
        if data is None:
            record.status = 404
            self._empty(404)
            return
        etag = srv.etag(path)
        total = len(data)
        start, end, status = 0, total - 1, 200
        rng = RANGE_RE.match(record.range or "")
        if_range_ok = record.if_range is None or record.if_range in (etag, LAST_MODIFIED)
        if b.ranges and rng and if_range_ok:
            start = int(rng.group(1))
            end = min(int(rng.group(2)), total - 1) if rng.group(2) else total - 1
            if start >= total or start > end:
                record.status = 416
                self._empty(416, {"Content-Range": f"bytes */{total}"})
                return
            status = 206
        body = data[start:end + 1]
        with srv.lock:
            corrupt = b.corrupt and (b.corrupt_times is None or b.corrupted < b.corrupt_times)
            if corrupt and not head:
                b.corrupted += 1
            drop = b.drop_after is not None and (b.drop_times is None or b.dropped < b.drop_times)
            if drop and not head:
                b.dropped += 1
        if corrupt and body:
            mid = len(body) // 2
            body = body[:mid] + bytes(x ^ 0xFF for x in body[mid:mid + 16]) + body[mid + 16:]
        record.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", LAST_MODIFIED)
        if b.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        if drop and not head:
            self.send_header("Connection", "close")
        self.end_headers()
        if head:
            return
        limit = min(len(body), b.drop_after) if drop and b.drop_after is not None else len(body)
        sent = 0
        try:
            while sent < limit:
                if b.chunk_delay:
                    time.sleep(b.chunk_delay)
                n = min(b.chunk_size, limit - sent)
                self.wfile.write(body[sent:sent + n])
                self.wfile.flush()
                sent += n
        except (ConnectionError, OSError):
            self.close_connection = True
            return
        if drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        body = f'{{"status": {status}}}'.encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


@pytest.fixture
def asset_server() -> Iterator[AssetServer]:
    server = AssetServer().start()
    try:
        yield server
    finally:
        server.stop()
