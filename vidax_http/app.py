"""``create_app(core)``: the Falcon app over a :class:`vidax_core.Vidax`."""

from __future__ import annotations

import falcon

from . import errors
from .auth import ApiKeyAuth
from .openapi import build_openapi
from .resources.assets import Install
from .resources.assets import InstallStatus
from .resources.comfyui import ComfyUIHealth
from .resources.comfyui import ComfyUIStart
from .resources.health import Health
from .resources.jobs import Job
from .resources.jobs import Jobs
from .resources.jobs import UnknownRun
from .resources.meta import JobSchema
from .resources.meta import OpenApi


def create_app(core, api_key: str | None = None) -> falcon.App:
    """The WSGI app. ``api_key`` defaults to the core's settings (which must have one)."""
    app = falcon.App(middleware=[ApiKeyAuth(api_key or core.settings.require_api_key())])
    app.req_options.strip_url_path_trailing_slash = True
    errors.register(app)

    app.add_route("/health", Health())
    jobs, job = Jobs(core), Job(core)
    app.add_route("/jobs", jobs)
    app.add_route("/jobs/{run_id}", job)
    app.add_route("/jobs/{run_id}/start", job, suffix="start")
    app.add_route("/jobs/{run_id}/manifest", job, suffix="manifest")
    app.add_route("/jobs/{run_id}/logs", job, suffix="logs")
    app.add_route("/jobs/{run_id}/final.mp4", job, suffix="final")
    app.add_sink(UnknownRun(), prefix=r"^/jobs/")
    app.add_route("/install/status", InstallStatus(core))
    app.add_route("/install", Install(core))
    app.add_route("/comfyui/health", ComfyUIHealth(core))
    app.add_route("/comfyui/start", ComfyUIStart(core))
    app.add_route("/schema/job", JobSchema(core))
    app.add_route("/openapi.json", OpenApi(build_openapi(core.job_schema())))
    return app
