"""``X-API-Key`` on every request, compared in constant time. The key is never logged or echoed."""

from __future__ import annotations

import hmac

from .errors import ApiError

HEADER = "X-API-Key"


class ApiKeyAuth:
    """Falcon middleware: 401 ``AUTH_REQUIRED`` without the header, 403 ``AUTH_INVALID`` with a wrong key."""

    def __init__(self, api_key: str):
        if not api_key:
            raise ValueError("an API key is required")
        self._key = api_key.encode("utf-8")

    def process_request(self, req, resp):
        given = req.get_header(HEADER)
        if given is None or given == "":
            raise ApiError(401, "AUTH_REQUIRED", f"the {HEADER} header is required",
                           headers={"WWW-Authenticate": f'ApiKey header="{HEADER}"'})
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._key):
            raise ApiError(403, "AUTH_INVALID", f"the {HEADER} header does not hold a valid key")
