"""URLs in jobs and manifests: recognizing them, and showing them without secrets."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

URL_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")


def is_url(value: str) -> bool:
    """Whether ``value`` is a URL (``scheme://...``) rather than a path."""
    return bool(URL_RE.match(value))


def scheme_of(value: str) -> str | None:
    m = URL_RE.match(value)
    return m.group("scheme").lower() if m else None


def redact_url(url: str) -> str:
    """The URL without user info, query or fragment (they may carry tokens), for messages and logs."""
    p = urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host += f":{p.port}"
    return f"{p.scheme}://{host}{p.path}"
