"""The Falcon app over a real core: auth, JSON errors, the job endpoints, and what never leaks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import attrs
import falcon
import falcon.inspect
import falcon.testing
import pytest
from helpers import simple_job

from vidax_core.errors import ConfigError
from vidax_core.locks import FileRunLocks
from vidax_http import create_app

KEY = "test-key-0123456789"  # tests/conftest.py settings
RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{10}$")
UNKNOWN_RUN = "20260101T000000Z-0000000000"


@pytest.fixture
def app(inline_vidax):
    return create_app(inline_vidax)


@pytest.fixture
def client(app):
    return falcon.testing.TestClient(app, headers={"X-API-Key": KEY})


@pytest.fixture
def anon(app):
    return falcon.testing.TestClient(app)


@pytest.fixture
def run_id(client):
    r = client.simulate_post("/jobs", json=simple_job())
    assert r.status_code == 202, r.text
    return r.json["run_id"]


def assert_error(r, status, code):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json
    assert body["ok"] is False
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert set(body) == {"ok", "error"}
    assert set(body["error"]) <= {"code", "message", "details"}
    return body["error"]


def routes(app, run_id):
    """Every (method, path) the app serves, from falcon's own route table."""
    out = []
    for route in falcon.inspect.inspect_routes(app):
        path = route.path.replace("{run_id}", run_id)
        for m in route.methods:
            if not m.internal:
                out.append((m.method, path))
    return out


def call(client, method, path, **kw):
    return client.simulate_request(method, path, **kw)


# --------------------------------------------------------------------------- auth


def test_every_route_requires_the_key(app, anon, run_id, inline_vidax):
    targets = routes(app, run_id) + [("GET", "/nope"), ("DELETE", "/health"), ("GET", f"/jobs/{run_id}/x/y"),
                                     ("OPTIONS", "/health"), ("GET", "/"), ("POST", "/jobs/../../etc")]
    assert ("GET", "/health") in targets and ("POST", f"/jobs/{run_id}/start") in targets
    for method, path in targets:
        r = call(anon, method, path, json=simple_job())
        err = assert_error(r, 401, "AUTH_REQUIRED")
        assert "X-API-Key" in err["message"]
        r = call(anon, method, path, headers={"X-API-Key": ""})
        assert_error(r, 401, "AUTH_REQUIRED")
        for wrong in ("wrong", KEY + "x", KEY[:-1], KEY.upper(), KEY.replace("-", "_")):
            r = call(anon, method, path, headers={"X-API-Key": wrong}, json=simple_job())
            assert_error(r, 403, "AUTH_INVALID")
    # nothing was created or started by those requests
    assert inline_vidax.store.list_runs() == [run_id]
    assert inline_vidax.status(run_id)["run_status"] == "queued"


def test_health(client):
    r = client.simulate_get("/health")
    assert r.status_code == 200
    assert r.json == {"ok": True}


def test_create_app_without_a_key_refuses(inline_vidax, settings):
    keyless = attrs.evolve(settings, api_key=None)
    inline_vidax.settings = keyless
    with pytest.raises(ConfigError) as ei:
        create_app(inline_vidax)
    assert "VIDAX_API_KEY" in ei.value.message and "apiKey" in ei.value.message


# --------------------------------------------------------------------------- 404 / 405 / 400


@pytest.mark.parametrize("path", ["/nope", "/", "/jobsx", "/schema", "/health/extra"])
def test_unknown_route_is_json_404(client, path):
    err = assert_error(client.simulate_get(path), 404, "NOT_FOUND")
    assert path in err["message"]


@pytest.mark.parametrize("method, path, allowed", [
    ("DELETE", "/health", "GET"),
    ("GET", "/jobs", "POST"),
    ("PUT", "/jobs/{id}", "GET"),
    ("GET", "/jobs/{id}/start", "POST"),
    ("POST", "/jobs/{id}/manifest", "GET"),
    ("PATCH", "/openapi.json", "GET"),
])
def test_wrong_method_is_json_405(client, run_id, method, path, allowed):
    r = call(client, method, path.replace("{id}", run_id))
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    assert allowed in r.headers["allow"]


@pytest.mark.parametrize("body", ["", "   ", "not json", "{", '{"inputs": }', b"\xff\xfe\x00", "{'inputs': 1}"])
def test_body_not_json_is_400(client, inline_vidax, body):
    err = assert_error(client.simulate_post("/jobs", body=body), 400, "VALIDATION_ERROR")
    assert err["details"][0]["field"] == "(body)"
    assert inline_vidax.store.list_runs() == []


def test_nan_and_infinity_are_not_json(client, inline_vidax):
    for constant in ("NaN", "Infinity", "-Infinity"):
        body = json.dumps(simple_job()).replace('"fps": 25', f'"fps": {constant}')
        assert constant in body
        assert_error(client.simulate_post("/jobs", body=body), 400, "VALIDATION_ERROR")
    assert inline_vidax.store.list_runs() == []


def test_deeply_nested_body_is_400_not_500(client):
    body = '{"inputs": {"audio": "voice.wav"}, "metadata": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    assert_error(client.simulate_post("/jobs", body=body), 400, "VALIDATION_ERROR")


def test_number_overflowing_a_float_is_400(client, inline_vidax):
    body = json.dumps(simple_job(metadata={"big": "BIG"})).replace('"BIG"', "1e999")
    assert_error(client.simulate_post("/jobs", body=body), 400, "VALIDATION_ERROR")
    assert inline_vidax.store.list_runs() == []


def test_overlong_input_path_is_400_not_500(client):
    r = client.simulate_post("/jobs", json=simple_job(audio="a" * 300 + ".wav"))
    assert_error(r, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize("body", ["[]", '"job"', "null", "42"])
def test_json_that_is_not_an_object_is_400(client, body):
    assert_error(client.simulate_post("/jobs", body=body), 400, "VALIDATION_ERROR")


def test_validation_error_lists_every_problem(client):
    job = simple_job(audio="missing.wav", bogus=1)
    job["encode"]["fps"] = "fast"
    err = assert_error(client.simulate_post("/jobs", json=job), 400, "VALIDATION_ERROR")
    assert {d["field"] for d in err["details"]} >= {"inputs.audio", "bogus", "encode.fps"}
    for d in err["details"]:
        assert set(d) == {"field", "problem"}


# --------------------------------------------------------------------------- POST /jobs


def test_post_jobs_creates_a_queued_run(client, settings):
    r = client.simulate_post("/jobs", json=simple_job())
    assert r.status_code == 202
    body = r.json
    assert set(body) == {"run_id", "status", "manifest", "workdir"}
    assert RUN_ID.match(body["run_id"])
    assert body["status"] == "queued"
    wd = Path(body["workdir"])
    assert wd.is_absolute() and wd.is_dir()
    assert wd == settings.runs_dir / body["run_id"]
    assert body["manifest"] == str(wd / "manifest.json")
    assert Path(body["manifest"]).is_file()
    assert (wd / "job.json").is_file()
    assert (wd / "logs" / "events.jsonl").is_file()


def test_post_jobs_accepts_json_without_a_json_content_type(client):
    r = client.simulate_post("/jobs", body=json.dumps(simple_job()),
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 202


@pytest.mark.parametrize("attr", ["xyz", "garbage_wav"])
def test_post_jobs_unsupported_audio_is_415(client, inline_vidax, media, attr):
    r = client.simulate_post("/jobs", json=simple_job(audio=getattr(media, attr).name))
    err = assert_error(r, 415, "UNSUPPORTED_FORMAT")
    assert "inputs.audio" in err["message"]
    assert inline_vidax.store.list_runs() == []


# --------------------------------------------------------------------------- GET /jobs/{id} and its files


def test_get_job_fields(client, run_id, settings):
    r = client.simulate_get(f"/jobs/{run_id}")
    assert r.status_code == 200
    body = r.json
    assert {"ok", "run_id", "run_status", "exit_status", "phases", "manifest", "workdir", "final", "error",
            "created_at", "updated_at"} <= set(body)
    assert body["ok"] is True
    assert body["run_id"] == run_id
    assert body["run_status"] == "queued" and body["exit_status"] is None
    assert body["final"] is None and body["error"] is None
    assert body["workdir"] == str(settings.runs_dir / run_id)
    assert body["manifest"] == str(settings.runs_dir / run_id / "manifest.json")
    assert list(body["phases"]) == ["prepare", "comfyui", "stabilize", "lipsync", "encode"]
    for state in body["phases"].values():
        assert {"status", "started_at", "finished_at", "error"} <= set(state)
    assert body["phases"]["prepare"]["status"] == "queued"
    assert body["phases"]["comfyui"]["status"] == "skipped"
    assert body["created_at"].endswith("Z")


def test_start_then_get_shows_the_finished_run(client, run_id):
    r = client.simulate_post(f"/jobs/{run_id}/start")
    assert r.status_code == 202
    assert r.json == {"ok": True, "run_id": run_id, "run_status": "running"}
    body = client.simulate_get(f"/jobs/{run_id}").json
    assert body["run_status"] == "completed" and body["exit_status"] == "success"
    assert body["final"] and Path(body["final"]).is_file()
    assert body["phases"]["encode"]["status"] == "completed"
    # a second start is refused: final.mp4 is never overwritten
    assert_error(client.simulate_post(f"/jobs/{run_id}/start"), 409, "OUTPUT_WRITE_FAILED")


def test_start_while_held_elsewhere_is_409(client, run_id, settings):
    other = FileRunLocks(settings.runs_dir)
    assert other.acquire(run_id)
    try:
        assert_error(client.simulate_post(f"/jobs/{run_id}/start"), 409, "RUN_IN_PROGRESS")
    finally:
        other.release(run_id)


def test_start_with_the_audio_gone_is_404_input_not_found(client, settings, media, tmp_path):
    audio = settings.input_roots[1] / "gone.wav"
    audio.parent.mkdir(parents=True, exist_ok=True)
    audio.write_bytes(media.wav.read_bytes())
    rid = client.simulate_post("/jobs", json=simple_job(audio=str(audio))).json["run_id"]
    audio.unlink()
    assert_error(client.simulate_post(f"/jobs/{rid}/start"), 404, "INPUT_NOT_FOUND")


def test_start_with_the_audio_no_longer_decoding_is_415(client, settings, media):
    audio = settings.input_roots[1] / "later-garbage.wav"
    audio.parent.mkdir(parents=True, exist_ok=True)
    audio.write_bytes(media.wav.read_bytes())
    rid = client.simulate_post("/jobs", json=simple_job(audio=str(audio))).json["run_id"]
    audio.write_bytes(media.garbage_wav.read_bytes())
    assert_error(client.simulate_post(f"/jobs/{rid}/start"), 415, "UNSUPPORTED_FORMAT")
    body = client.simulate_get(f"/jobs/{rid}").json
    assert body["run_status"] == "queued"  # refused before anything started


def test_manifest_is_the_file_as_json(client, run_id, settings):
    r = client.simulate_get(f"/jobs/{run_id}/manifest")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.content == (settings.runs_dir / run_id / "manifest.json").read_bytes()
    assert r.json["run_id"] == run_id


def test_logs_are_the_events_file_as_text(client, run_id, settings):
    r = client.simulate_get(f"/jobs/{run_id}/logs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert r.content == (settings.runs_dir / run_id / "logs" / "events.jsonl").read_bytes()
    assert json.loads(r.text.splitlines()[0])["event"] == "run.created"


def test_missing_manifest_and_logs_are_404_input_not_found(client, run_id, settings):
    (settings.runs_dir / run_id / "logs" / "events.jsonl").unlink()
    assert_error(client.simulate_get(f"/jobs/{run_id}/logs"), 404, "INPUT_NOT_FOUND")
    (settings.runs_dir / run_id / "manifest.json").unlink()
    assert_error(client.simulate_get(f"/jobs/{run_id}/manifest"), 404, "INPUT_NOT_FOUND")


BAD_IDS = ["..%2F..%2Fetc", "%00", "x" * 300, "..", "%2e%2e", "20260101T000000Z-000000000G",
           "20260101T000000Z-0000000000%0A", "..%2F..%2Fetc%2Fpasswd", "20260101T000000Z-0000000000%2F..",
           UNKNOWN_RUN]


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize("method, suffix", [("GET", ""), ("POST", "/start"), ("GET", "/manifest"),
                                            ("GET", "/logs")])
def test_invalid_or_unknown_run_ids_are_404_run_not_found(client, settings, bad, method, suffix):
    r = call(client, method, f"/jobs/{bad}{suffix}")
    assert_error(r, 404, "RUN_NOT_FOUND")
    assert not settings.runs_dir.exists() or list(settings.runs_dir.iterdir()) == []


# --------------------------------------------------------------------------- 500 and leaks


@pytest.mark.parametrize("method, path, core_method", [
    ("GET", "/jobs/{id}", "status"),
    ("POST", "/jobs", "create_run"),
    ("POST", "/jobs/{id}/start", "start_run"),
    ("GET", "/jobs/{id}/manifest", "manifest_path"),
])
def test_unexpected_core_exception_is_500_without_traceback_or_key(client, inline_vidax, run_id, monkeypatch,
                                                                   method, path, core_method):
    def boom(*args, **kwargs):
        raise RuntimeError(f"database exploded; key={KEY}; File \"/srv/vidax/core.py\", line 1")

    monkeypatch.setattr(inline_vidax, core_method, boom)
    r = call(client, method, path.replace("{id}", run_id), json=simple_job())
    err = assert_error(r, 500, "INTERNAL_ERROR")
    for text in (r.text, json.dumps(dict(r.headers))):
        assert KEY not in text
        assert "Traceback" not in text
        assert "exploded" not in text
        assert "core.py" not in text
    assert "details" not in err


def test_api_key_never_appears_in_any_response(client, anon, app, run_id, media, settings):
    responses = []
    for method, path in routes(app, run_id):
        if path.startswith(("/install", "/comfyui")):
            continue  # they reach out to downloads and a ComfyUI server; their own tests cover them
        responses.append(call(client, method, path, json=simple_job()))
        responses.append(call(anon, method, path))
        responses.append(call(anon, method, path, headers={"X-API-Key": KEY + "-wrong"}))
    responses += [
        client.simulate_get("/nope"),
        client.simulate_delete("/health"),
        client.simulate_post("/jobs", body="not json"),
        client.simulate_post("/jobs", json=simple_job(audio=media.xyz.name)),
        client.simulate_post("/jobs", json={"inputs": {"audio": KEY + ".wav"}}),
        client.simulate_post(f"/jobs/{run_id}/start"),
    ]
    statuses = {r.status_code for r in responses}
    assert {200, 202, 400, 401, 403, 404, 405, 409, 415} <= statuses
    for r in responses:
        body = r.content.replace((KEY + ".wav").encode(), b"")  # the user's own file name may echo back
        assert KEY.encode() not in body, r.content[:500]
        for name, value in r.headers.items():
            assert KEY not in value, (name, value)


def test_final_mp4_can_be_downloaded(client, inline_vidax):
    """GET /jobs/{id}/final.mp4: 404 INPUT_NOT_FOUND before the run made it, then the file itself."""
    created = inline_vidax.create_run(simple_job())
    rid = created["run_id"]
    assert_error(client.simulate_get(f"/jobs/{rid}/final.mp4"), 404, "INPUT_NOT_FOUND")
    inline_vidax.start_run(rid)
    r = client.simulate_get(f"/jobs/{rid}/final.mp4")
    assert r.status_code == 200
    assert r.headers["content-type"] == "video/mp4"
    assert f'filename="{rid}.mp4"' in r.headers["content-disposition"]
    assert r.content == (Path(created["workdir"]) / "final.mp4").read_bytes()
    assert_error(client.simulate_get("/jobs/20200101T000000Z-00000000aa/final.mp4"), 404, "RUN_NOT_FOUND")
