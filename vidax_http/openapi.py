"""The OpenAPI 3.1 document of the API. ``tests/test_openapi.py`` keeps it true to the routes of the app."""

from __future__ import annotations

from typing import Any

import vidax_core

ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def _ok(description: str, schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


AUTH = {"401": _error("`X-API-Key` header missing (`AUTH_REQUIRED`)"),
        "403": _error("wrong API key (`AUTH_INVALID`)")}
RUN_ID = {"name": "run_id", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": r"^\d{8}T\d{6}Z-[0-9a-f]{10}$"},
          "description": "A run id as `POST /jobs` returned it; any other form is a 404 `RUN_NOT_FOUND`."}
NOT_FOUND = _error("unknown run, or not a valid run id (`RUN_NOT_FOUND`)")


def _rebase(node: Any, base: str) -> Any:
    """The schema with its local refs (``#/$defs/x``) pointing into the place it is embedded at."""
    if isinstance(node, dict):
        return {k: (base + v[1:] if k == "$ref" and isinstance(v, str) and v.startswith("#/") else _rebase(v, base))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rebase(v, base) for v in node]
    return node


def build_openapi(job_schema: dict[str, Any]) -> dict[str, Any]:
    """The document, with the job schema embedded as ``components.schemas.Job``."""
    job = _rebase({k: v for k, v in job_schema.items() if k not in ("$schema", "$id")},
                  "#/components/schemas/Job")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "VIDAX API",
            "version": vidax_core.__version__,
            "description": "Automated talking-head video generation around ComfyUI. Every endpoint requires "
                           "the `X-API-Key` header. Errors are JSON: `{\"ok\": false, \"error\": {\"code\", "
                           "\"message\", \"details\"?}}`.",
        },
        "security": [{"ApiKey": []}],
        "paths": {
            "/health": {"get": {
                "summary": "Readiness", "operationId": "health",
                "responses": {"200": _ok("the API answers", {"$ref": "#/components/schemas/Ok"}), **AUTH},
            }},
            "/jobs": {"post": {
                "summary": "Create a run from a job", "operationId": "createJob",
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}},
                "responses": {
                    "202": _ok("the run is created and queued", {"$ref": "#/components/schemas/Created"}),
                    "400": _error("not JSON, schema violation, missing or disallowed input (`VALIDATION_ERROR`;"
                                  " `details` lists every problem)"),
                    **AUTH,
                    "415": _error("the audio is not of a supported format or does not decode "
                                  "(`UNSUPPORTED_FORMAT`)"),
                },
            }},
            "/jobs/{run_id}": {"get": {
                "summary": "A run's status", "operationId": "getJob", "parameters": [RUN_ID],
                "responses": {"200": _ok("the run's status", {"$ref": "#/components/schemas/Status"}),
                              **AUTH, "404": NOT_FOUND},
            }},
            "/jobs/{run_id}/start": {"post": {
                "summary": "Start or resume a run", "operationId": "startJob", "parameters": [RUN_ID],
                "responses": {
                    "202": _ok("the run was handed to the executor", {"$ref": "#/components/schemas/Started"}),
                    "400": _error("an asset the run needs has a bad hash (`VALIDATION_ERROR`)"),
                    **AUTH,
                    "404": _error("unknown run (`RUN_NOT_FOUND`) or a missing asset or input "
                                  "(`INPUT_NOT_FOUND`)"),
                    "409": _error("`final.mp4` exists (`OUTPUT_WRITE_FAILED`) or the run is running "
                                  "(`RUN_IN_PROGRESS`)"),
                    "415": _error("the audio no longer decodes (`UNSUPPORTED_FORMAT`)"),
                    "424": _error("the run needs ComfyUI and cannot get it (`COMFYUI_UNAVAILABLE`, "
                                  "`COMFYUI_TIMEOUT`)"),
                },
            }},
            "/jobs/{run_id}/manifest": {"get": {
                "summary": "The run's manifest.json", "operationId": "getManifest", "parameters": [RUN_ID],
                "responses": {"200": _ok("the file", {"type": "object"}), **AUTH,
                              "404": _error("unknown run (`RUN_NOT_FOUND`) or no manifest (`INPUT_NOT_FOUND`)")},
            }},
            "/jobs/{run_id}/logs": {"get": {
                "summary": "The run's events (JSON lines)", "operationId": "getLogs", "parameters": [RUN_ID],
                "responses": {"200": _ok("logs/events.jsonl", {"type": "string"}, "text/plain"), **AUTH,
                              "404": _error("unknown run (`RUN_NOT_FOUND`) or no log (`INPUT_NOT_FOUND`)")},
            }},
            "/install/status": {"get": {
                "summary": "Every asset's status (never downloads)", "operationId": "installStatus",
                "responses": {"200": _ok("per-asset status; `ok` unless an asset is missing or mismatching",
                                         {"$ref": "#/components/schemas/Assets"}), **AUTH,
                              "400": _error("the asset manifest does not parse or validate (`VALIDATION_ERROR`)"),
                              "404": _error("no asset manifest (`INPUT_NOT_FOUND`)")},
            }},
            "/install": {"post": {
                "summary": "Install and verify every asset", "operationId": "install",
                "responses": {"200": _ok("every asset is present and verified",
                                         {"$ref": "#/components/schemas/Assets"}),
                              **AUTH,
                              "400": _error("an asset failed to download or verify, or the manifest is invalid "
                                            "(`VALIDATION_ERROR`; `details` has one entry per failed asset)"),
                              "404": _error("no asset manifest (`INPUT_NOT_FOUND`)")},
            }},
            "/comfyui/health": {"get": {
                "summary": "ComfyUI's health", "operationId": "comfyuiHealth",
                "responses": {"200": _ok("`ok` false with a `reason` when unreachable; version, devices and queue "
                                         "when reachable; whether VIDAX started it and its pid",
                                         {"$ref": "#/components/schemas/ComfyUIHealth"}), **AUTH},
            }},
            "/comfyui/start": {"post": {
                "summary": "Make ComfyUI ready (start it when auto_start is on)", "operationId": "comfyuiStart",
                "responses": {"202": _ok("ComfyUI is healthy", {"$ref": "#/components/schemas/ComfyUIReady"}),
                              **AUTH,
                              "500": _error("it did not become healthy in time (`COMFYUI_TIMEOUT`; the process "
                                            "VIDAX started is stopped) or could not be started, exited early or "
                                            "auto_start is off (`COMFYUI_START_FAILED`)")},
            }},
            "/jobs/{run_id}/final.mp4": {"get": {
                "summary": "The run's final.mp4", "operationId": "getFinal", "parameters": [RUN_ID],
                "responses": {"200": _ok("the video (H.264 + AAC, faststart)", {"type": "string", "format": "binary"},
                                         "video/mp4"), **AUTH,
                              "404": _error("unknown run (`RUN_NOT_FOUND`) or no final.mp4 yet (`INPUT_NOT_FOUND`)")},
            }},
            "/schema/job": {"get": {
                "summary": "The job JSON Schema", "operationId": "getJobSchema",
                "responses": {"200": _ok("docs/job.schema.json", {"type": "object"}), **AUTH},
            }},
            "/openapi.json": {"get": {
                "summary": "This document", "operationId": "getOpenApi",
                "responses": {"200": _ok("OpenAPI 3.1", {"type": "object"}), **AUTH},
            }},
        },
        "components": {
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "schemas": {
                "Job": job,
                "Ok": {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}},
                "Error": {
                    "type": "object", "required": ["ok", "error"],
                    "properties": {
                        "ok": {"const": False},
                        "error": {"type": "object", "required": ["code", "message"], "properties": {
                            "code": {"type": "string"}, "message": {"type": "string"},
                            "details": {"description": "validation problems (`[{field, problem}]`) or "
                                                       "per-asset results"}}},
                    },
                },
                "Asset": {"type": "object", "required": ["status", "path", "sha256"], "properties": {
                    "status": {"enum": ["ok", "missing", "hash_mismatch", "unknown", "failed"]},
                    "path": {"type": "string"}, "sha256": {"type": ["string", "null"]},
                    "actual_sha256": {"type": "string"}, "size": {"type": "integer"},
                    "action": {"enum": ["present", "downloaded", "failed"]}, "error": {"type": "string"}}},
                "Assets": {"type": "object", "required": ["ok", "assets"], "properties": {
                    "ok": {"type": "boolean"},
                    "assets": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Asset"}}}},
                "ComfyUIHealth": {"type": "object", "required": ["ok", "url"], "properties": {
                    "ok": {"type": "boolean"}, "url": {"type": "string"}, "reason": {"type": "string"},
                    "version": {"type": ["string", "null"]}, "devices": {"type": "array"},
                    "queue": {"type": ["object", "null"]}, "queue_length": {"type": "integer"},
                    "started_by_vidax": {"type": "boolean"}, "pid": {"type": ["integer", "null"]}}},
                "ComfyUIReady": {"type": "object", "required": ["ok", "status", "url"], "properties": {
                    "ok": {"const": True}, "status": {"const": "ready"}, "url": {"type": "string"},
                    "started": {"type": "boolean"}, "pid": {"type": ["integer", "null"]}}},
                "Created": {"type": "object", "required": ["run_id", "status", "manifest", "workdir"],
                            "properties": {"run_id": {"type": "string"}, "status": {"const": "queued"},
                                           "manifest": {"type": "string"}, "workdir": {"type": "string"}}},
                "Started": {"type": "object", "required": ["ok", "run_id", "run_status"],
                            "properties": {"ok": {"const": True}, "run_id": {"type": "string"},
                                           "run_status": {"const": "running"}}},
                "Phase": {"type": "object", "required": ["status", "started_at", "finished_at", "error"],
                          "properties": {
                              "status": {"enum": ["queued", "running", "skipped", "completed", "failed"]},
                              "started_at": {"type": ["string", "null"]},
                              "finished_at": {"type": ["string", "null"]},
                              "outputs": {"type": "object"},
                              "error": {"type": ["object", "null"]},
                              "provider": {"type": ["string", "null"]},
                              "reason": {"type": ["string", "null"]}}},
                "Status": {"type": "object",
                           "required": ["ok", "run_id", "run_status", "exit_status", "phases", "manifest",
                                        "workdir", "final", "error", "created_at", "updated_at"],
                           "properties": {
                               "ok": {"const": True}, "run_id": {"type": "string"},
                               "run_status": {"enum": ["queued", "running", "completed", "failed"]},
                               "exit_status": {"enum": ["success", "failed", "partial", None]},
                               "phases": {"type": "object",
                                          "additionalProperties": {"$ref": "#/components/schemas/Phase"}},
                               "manifest": {"type": "string"}, "workdir": {"type": "string"},
                               "final": {"type": ["string", "null"]}, "error": {"type": ["object", "null"]},
                               "attempt": {"type": "integer"}, "resumed": {"type": "boolean"},
                               "created_at": {"type": "string"}, "updated_at": {"type": "string"}}},
            },
        },
    }
