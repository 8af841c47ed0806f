"""The ``http`` and ``https`` asset sources: streaming downloads with requests.

Resumes with ``Range`` (+ ``If-Range`` when a validator is known) and starts over when the server answers
``200`` instead of ``206``. Failures are :class:`~vidax_core.errors.FetchError` with ``transient`` set for
what a retry may fix (connection errors, timeouts, 408, 429, 5xx).
"""

from __future__ import annotations

import threading
from typing import BinaryIO

import requests
import urllib3

import vidax_core
from vidax_core import hookimpl
from vidax_core.errors import FetchError
from vidax_core.urls import redact_url

CHUNK = 1 << 20
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


class HttpSource:
    schemes = ("http", "https")

    def __init__(self, session_factory=requests.Session):
        self._session_factory = session_factory
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._session_factory()
            s.headers["User-Agent"] = f"vidax/{vidax_core.__version__} (+https://vidax.dev)"
            # byte ranges and Content-Length must refer to the file itself, not a compressed transfer of it
            s.headers["Accept-Encoding"] = "identity"
            self._local.session = s
        return s

    def fetch(self, url: str, dest: BinaryIO, *, resume_from: int = 0, validator: str | None = None,
              headers=None, progress=None, on_validator=None) -> int:
        hdrs = dict(headers or {})
        if resume_from > 0:
            hdrs["Range"] = f"bytes={resume_from}-"
            if validator:
                hdrs["If-Range"] = validator
        try:
            resp = self.session.get(url, headers=hdrs, stream=True, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
        except requests.RequestException as exc:
            # requests' own message repeats the URL, query and all (a signed URL's token): name the kind only
            raise FetchError(f"{redact_url(url)}: {_kind(exc)}", transient=True) from None
        with resp:
            if resp.status_code == 416 and resume_from > 0:
                # the partial file is as long as the resource (or longer): let the caller verify it
                return resume_from
            if resp.status_code not in (200, 206):
                raise FetchError(f"{redact_url(url)}: HTTP {resp.status_code} {resp.reason}",
                                 transient=resp.status_code in TRANSIENT_STATUS, status=resp.status_code)
            if on_validator is not None:
                # a strong ETag, else Last-Modified: what If-Range needs to resume this very version later
                etag = resp.headers.get("ETag")
                on_validator(etag if etag and not etag.startswith("W/") else resp.headers.get("Last-Modified"))
            if resp.status_code == 200 or resume_from == 0:
                done = 0
                dest.seek(0)
                dest.truncate()
            else:
                done = resume_from
                dest.seek(resume_from)
                dest.truncate()
            length = resp.headers.get("Content-Length")
            total = done + int(length) if length and length.isdigit() else None
            try:
                for chunk in _chunks(resp):
                    dest.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                dest.flush()
                raise FetchError(f"{redact_url(url)}: connection lost after {done} bytes: {type(exc).__name__}",
                                 transient=True) from None
            if total is not None and done < total:
                dest.flush()
                raise FetchError(f"{redact_url(url)}: got {done} of {total} bytes", transient=True)
        return done


def _kind(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.ReadTimeout):
        return "no data in time (read timeout)"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed (refused, reset or host unreachable)"
    return type(exc).__name__


def _chunks(resp: requests.Response):
    """The body as it arrives. ``read1`` hands over whatever the socket has, so bytes received before a
    dropped connection are written (and resumed after) rather than lost inside a larger read."""
    raw = resp.raw
    if hasattr(raw, "read1") and not resp.headers.get("Content-Encoding"):
        while chunk := raw.read1(CHUNK):
            yield chunk
    else:  # compressed bodies: requests decodes them
        yield from resp.iter_content(64 * 1024)


@hookimpl
def register_asset_sources(register):
    register(HttpSource())
