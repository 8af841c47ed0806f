"""``/jobs`` and ``/jobs/{run_id}[/start|/manifest|/logs]``."""

from __future__ import annotations

import json
import math

import falcon

from vidax_core.errors import RunNotFound

from ..errors import ApiError

MAX_BODY = 16 * 1024 * 1024  # inline workflows can be large; anything bigger is not a job


def read_json(req):
    """The request body as JSON, whatever its Content-Type (``curl -d`` sends a form type)."""
    length = req.content_length
    too_large = ApiError(400, "VALIDATION_ERROR", f"the body is larger than {MAX_BODY} bytes",
                         [{"field": "(body)", "problem": f"larger than {MAX_BODY} bytes"}])
    if length is not None and length > MAX_BODY:
        raise too_large
    if length is None and "chunked" in (req.get_header("Transfer-Encoding") or "").lower():
        raw = req.stream.read(MAX_BODY + 1)  # the server de-chunks; there is no length to bound by
    else:
        raw = req.bounded_stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise too_large
    if not raw.strip():
        raise ApiError(400, "VALIDATION_ERROR", "the body is empty; send the job as JSON",
                       [{"field": "(body)", "problem": "is empty"}])
    try:
        return json.loads(raw, parse_constant=_no_constants, parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, json.JSONDecodeError):
            why = f"not valid JSON at line {exc.lineno} column {exc.colno}"
        elif isinstance(exc, RecursionError):
            why = "nested too deeply"
        else:
            why = f"not valid JSON: {exc}"
        raise ApiError(400, "VALIDATION_ERROR", f"the body is {why}", [{"field": "(body)", "problem": why}]) from None


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


class Jobs:
    """``POST /jobs``: validate and create a run."""

    def __init__(self, core):
        self._core = core

    def on_post(self, req, resp):
        resp.media = self._core.create_run(read_json(req))
        resp.status = falcon.HTTP_202


class Job:
    """``GET /jobs/{run_id}``: the run's status; ``POST .../start``; ``GET .../manifest``; ``GET .../logs``."""

    def __init__(self, core):
        self._core = core

    def on_get(self, req, resp, run_id):
        resp.media = self._core.status(run_id)

    def on_post_start(self, req, resp, run_id):
        resp.media = self._core.start_run(run_id)
        resp.status = falcon.HTTP_202

    def on_get_manifest(self, req, resp, run_id):
        _send_file(resp, self._core.manifest_path(run_id), falcon.MEDIA_JSON)

    def on_get_logs(self, req, resp, run_id):
        _send_file(resp, self._core.logs_path(run_id), "text/plain; charset=utf-8")

    def on_get_final(self, req, resp, run_id):
        _send_file(resp, self._core.final_path(run_id), "video/mp4")
        resp.downloadable_as = f"{run_id}.mp4"


def _send_file(resp, path, content_type):
    stream = open(path, "rb")  # falcon closes it once sent
    resp.content_type = content_type
    resp.set_stream(stream, path.stat().st_size)


class UnknownRun:
    """A sink for ``/jobs/...`` paths no route matched (an encoded ``/`` or ``..`` in the id, extra segments):
    404 ``RUN_NOT_FOUND``. The path arrives decoded, so ``/jobs/ID%2F..`` and ``/jobs/ID/..`` look alike; both
    name no run."""

    def __call__(self, req, resp, **kwargs):
        raise RunNotFound(f"no run at {req.path[:120]!r}; runs are at /jobs/{{run_id}}[/start|/manifest|/logs]")
