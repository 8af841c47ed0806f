"""One place where errors become responses: SPEC.md's ``{"ok": false, "error": {code, message, details?}}``.

Core errors map by their code through :data:`STATUS`; Falcon's own errors (404, 405, malformed bodies) keep
their status and get a code; anything else is a 500 ``INTERNAL_ERROR`` whose traceback goes to the server log
only.
"""

from __future__ import annotations

import logging

import falcon

from vidax_core.errors import VidaxError

log = logging.getLogger("vidax.http")

STATUS = {
    "VALIDATION_ERROR": 400,
    "AUTH_REQUIRED": 401,
    "AUTH_INVALID": 403,
    "RUN_NOT_FOUND": 404,
    "INPUT_NOT_FOUND": 404,
    "OUTPUT_WRITE_FAILED": 409,
    "RUN_IN_PROGRESS": 409,
    "UNSUPPORTED_FORMAT": 415,
    "COMFYUI_UNAVAILABLE": 424,
    "COMFYUI_TIMEOUT": 424,
    "COMFYUI_START_FAILED": 500,
    "INTERNAL_ERROR": 500,
}

FALCON_CODES = {
    400: "VALIDATION_ERROR",
    401: "AUTH_REQUIRED",
    403: "AUTH_INVALID",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    411: "VALIDATION_ERROR",
    413: "VALIDATION_ERROR",
    415: "UNSUPPORTED_FORMAT",
}


_MESSAGES = {
    404: "no route {method} {path}; GET /openapi.json lists the API",
    405: "method {method} is not allowed on {path}; allowed: {allow}",
}


class ApiError(falcon.HTTPError):
    """An HTTP error with SPEC.md's body."""

    def __init__(self, status: int, code: str, message: str, details=None, headers=None):
        super().__init__(falcon.code_to_http_status(status), title=code, description=message, headers=headers)
        self.code = code
        self.message = message
        self.details = details

    def to_dict(self, obj_type=dict):
        error = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return obj_type(ok=False, error=error)


def from_vidax_error(exc: VidaxError, status: int | None = None) -> ApiError:
    return ApiError(status or STATUS.get(exc.code, 500), exc.code, exc.message, exc.details)


def handle_vidax_error(req, resp, exc: VidaxError, params):
    raise from_vidax_error(exc)


def handle_unexpected(req, resp, exc: Exception, params):
    if isinstance(exc, falcon.HTTPError):  # Falcon's own (404, 405, bad media) go to the serializer
        raise exc
    log.exception("internal error on %s %s", req.method, req.path)
    raise ApiError(500, "INTERNAL_ERROR", "an internal error occurred; the server log has the details")


def serialize_error(req, resp, exc: falcon.HTTPError):
    """Every error body is JSON, whatever the client accepts."""
    if isinstance(exc, ApiError):
        body = exc.to_dict()
    else:
        status = int(exc.status_code)
        code = FALCON_CODES.get(status, "INTERNAL_ERROR" if status >= 500 else "VALIDATION_ERROR")
        message = exc.description or _MESSAGES.get(status, exc.title or falcon.code_to_http_status(status))
        message = message.format(method=req.method, path=req.path, allow=(exc.headers or {}).get("Allow", ""))
        body = {"ok": False, "error": {"code": code, "message": message}}
    resp.media = body
    resp.content_type = falcon.MEDIA_JSON
    for name in ("Allow",):  # keep the headers falcon's error set (405 names the allowed methods)
        if exc.headers and name in exc.headers:
            resp.set_header(name, exc.headers[name])


def register(app: falcon.App) -> None:
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(VidaxError, handle_vidax_error)
    app.set_error_serializer(serialize_error)
