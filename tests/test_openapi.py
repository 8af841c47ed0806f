"""``GET /openapi.json`` stays true to the app: every route with its methods, and nothing that is not a route."""

from __future__ import annotations

import re

import falcon.inspect
import falcon.testing
import jsonschema
import pytest
from helpers import simple_job

from vidax_core.schema import load_schema
from vidax_core.store import is_run_id
from vidax_http import create_app

KEY = "test-key-0123456789"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture
def app(inline_vidax):
    return create_app(inline_vidax)


@pytest.fixture
def doc(app):
    r = falcon.testing.TestClient(app, headers={"X-API-Key": KEY}).simulate_get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    return r.json


def app_routes(app) -> dict[str, set[str]]:
    """{path: {METHOD}} of the app's responders, suffixed ones (``on_post_start``) included."""
    out: dict[str, set[str]] = {}
    for route in falcon.inspect.inspect_routes(app):
        methods = {m.method for m in route.methods if not m.internal}
        assert methods, route.path
        out.setdefault(route.path, set()).update(methods)
    return out


def doc_routes(doc) -> dict[str, set[str]]:
    return {path: {m.upper() for m in item if m in HTTP_METHODS} for path, item in doc["paths"].items()}


def operations(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                yield path, method, op


def resolve(doc, ref: str):
    assert ref.startswith("#/"), ref
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def test_openapi_3_1(doc):
    assert doc["openapi"].startswith("3.1")
    assert doc["info"]["title"] and doc["info"]["version"]


def test_inspect_maps_suffixed_responders(app):
    routes = app_routes(app)
    assert routes["/jobs/{run_id}/start"] == {"POST"}
    assert routes["/jobs/{run_id}/manifest"] == {"GET"}
    assert routes["/jobs/{run_id}/logs"] == {"GET"}
    assert routes["/jobs"] == {"POST"}


def test_every_route_is_documented_with_its_methods(app, doc):
    routes = app_routes(app)
    documented = doc_routes(doc)
    missing = {p: m for p, m in routes.items() if documented.get(p) != m}
    assert missing == {}, f"routes not (or differently) documented: {missing}; doc has {documented}"


def test_no_documented_path_lacks_a_route(app, doc):
    routes = app_routes(app)
    extra = {p: m for p, m in doc_routes(doc).items() if p not in routes or not m <= routes[p]}
    assert extra == {}


def test_spec_endpoints_are_there(doc):
    documented = doc_routes(doc)
    for method, path in [("GET", "/health"), ("POST", "/jobs"), ("GET", "/jobs/{run_id}"),
                         ("POST", "/jobs/{run_id}/start"), ("GET", "/jobs/{run_id}/manifest"),
                         ("GET", "/jobs/{run_id}/logs"), ("GET", "/schema/job"), ("GET", "/openapi.json"),
                         ("GET", "/install/status"), ("POST", "/install")]:
        assert method in documented.get(path, set()), (method, path)


def test_api_key_security_scheme(doc):
    schemes = doc["components"]["securitySchemes"]
    api_key = [name for name, s in schemes.items()
               if s == {"type": "apiKey", "in": "header", "name": "X-API-Key"}]
    assert api_key, schemes
    required = [req for req in doc.get("security", [])]
    assert any(api_key[0] in req for req in required)
    for path, method, op in operations(doc):
        assert op.get("security", doc["security"]) == doc["security"], (method, path)  # no endpoint is exempt
        assert {"401", "403"} <= set(op["responses"]), (method, path)


def test_job_request_body_is_the_job_schema(doc):
    body = doc["paths"]["/jobs"]["post"]["requestBody"]
    assert body["required"] is True
    schema = body["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/Job"}
    embedded = resolve(doc, schema["$ref"])
    # the embedded copy may point its own refs at where it is embedded; pointed back, it is the job schema
    job = load_schema("job")
    for key in ("$schema", "$id"):
        job.pop(key, None)
    assert unbase(embedded, schema["$ref"]) == job


def unbase(node, base):
    if isinstance(node, dict):
        return {k: ("#" + v[len(base):] if k == "$ref" and isinstance(v, str) and v.startswith(base + "/")
                    else unbase(v, base)) for k, v in node.items()}
    if isinstance(node, list):
        return [unbase(v, base) for v in node]
    return node


@pytest.mark.parametrize("job, ok", [
    ({"inputs": {"audio": "voice.wav", "image": "face.png"}}, True),
    ({"inputs": {"audio": "voice.wav"}, "encode": {"fps": 30, "preset": "fast"}}, True),
    ({"inputs": {"audio": ""}}, False),
    ({"inputs": {"image": "face.png"}}, False),
    ({"inputs": {"audio": "voice.wav"}, "colour": 1}, False),
    ({"inputs": {"audio": "voice.wav"}, "comfyui": {"enable": True}}, False),
])
def test_documented_job_schema_validates_like_the_job_schema(doc, job, ok):
    as_documented = jsonschema.Draft202012Validator({**doc, "$ref": "#/components/schemas/Job"})
    published = jsonschema.Draft202012Validator(load_schema("job"))
    assert published.is_valid(job) is ok
    assert as_documented.is_valid(job) is ok


def test_documented_status_codes(doc):
    codes = {(m.upper(), p): set(op["responses"]) for p, m, op in operations(doc)}
    assert {"202", "400", "415"} <= codes[("POST", "/jobs")]
    assert {"202", "400", "404", "409", "415", "424"} <= codes[("POST", "/jobs/{run_id}/start")]
    for path in ("/jobs/{run_id}", "/jobs/{run_id}/manifest", "/jobs/{run_id}/logs"):
        assert {"200", "404"} <= codes[("GET", path)]
    assert codes[("GET", "/jobs/{run_id}/logs")] >= {"200"}
    logs_ok = doc["paths"]["/jobs/{run_id}/logs"]["get"]["responses"]["200"]["content"]
    assert "text/plain" in logs_ok
    for (method, path), got in codes.items():
        for code in got - {"200", "202"}:
            content = doc["paths"][path][method.lower()]["responses"][code]["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/Error"}, (method, path, code)


def answered(app, media):
    """(METHOD, documented path, status) of a battery of real requests."""
    client = falcon.testing.TestClient(app, headers={"X-API-Key": KEY})
    created = client.simulate_post("/jobs", json=simple_job())
    run_id = created.json["run_id"]
    unknown = "20260101T000000Z-0000000000"
    out = [("POST", "/jobs", created.status_code)]
    requests = [
        ("POST", "/jobs", {"body": "not json"}),
        ("POST", "/jobs", {"json": simple_job(audio=media.xyz.name)}),
        ("GET", "/jobs/{run_id}", {}),
        ("GET", "/jobs/" + unknown, {}),
        ("GET", "/jobs/{run_id}/manifest", {}),
        ("GET", "/jobs/" + unknown + "/manifest", {}),
        ("GET", "/jobs/{run_id}/logs", {}),
        ("GET", "/jobs/" + unknown + "/logs", {}),
        ("POST", "/jobs/" + unknown + "/start", {}),
        ("POST", "/jobs/{run_id}/start", {}),
        ("POST", "/jobs/{run_id}/start", {}),  # final.mp4 exists now: 409
        ("GET", "/health", {}),
        ("GET", "/schema/job", {}),
        ("GET", "/openapi.json", {}),
    ]
    for method, path, kw in requests:
        r = client.simulate_request(method, path.replace("{run_id}", run_id), **kw)
        template = path.replace(unknown, "{run_id}")
        out.append((method, template, r.status_code))
    for method, path, _ in list(out):
        anon = falcon.testing.TestClient(app)
        out.append((method, path, anon.simulate_request(method, path.replace("{run_id}", run_id)).status_code))
        out.append((method, path, anon.simulate_request(method, path.replace("{run_id}", run_id),
                                                        headers={"X-API-Key": "nope"}).status_code))
    return out


def test_statuses_the_app_answers_are_documented(app, doc, media):
    seen = answered(app, media)
    assert {s for _, _, s in seen} >= {200, 202, 400, 401, 403, 404, 409, 415}
    for method, path, status in seen:
        assert str(status) in doc["paths"][path][method.lower()]["responses"], (method, path, status)


def test_body_too_large_is_documented(app, doc):
    client = falcon.testing.TestClient(app, headers={"X-API-Key": KEY})
    r = client.simulate_post("/jobs", body=b"{}", headers={"Content-Length": str(17 * 1024 * 1024)})
    assert r.status_code in (400, 413)
    assert r.json["error"]["code"] == "VALIDATION_ERROR"
    assert str(r.status_code) in doc["paths"]["/jobs"]["post"]["responses"]


def test_run_id_parameter_pattern_matches_the_store(doc):
    samples = ["20261130T001502Z-9f3a1c2be4", "x20261130T001502Z-9f3a1c2be4",
               "20261130T001502Z-9f3a1c2be4x", "..", "", "20261130T001502Z-9F3A1C2BE4"]
    for path, method, op in operations(doc):
        if "{run_id}" in path:
            params = [p for p in op.get("parameters", []) + doc["paths"][path].get("parameters", [])
                      if p.get("name") == "run_id"]
            assert params and params[0]["in"] == "path" and params[0]["required"] is True, (method, path)
            pattern = re.compile(params[0]["schema"]["pattern"])
            for s in samples:  # JSON Schema patterns are unanchored searches
                assert (pattern.search(s) is not None) == is_run_id(s), (path, s)


def test_operation_ids_are_unique(doc):
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids))


def test_every_ref_resolves_inside_the_document(doc):
    for ref in sorted(set(refs(doc))):
        resolve(doc, ref)


def test_validates_with_openapi_spec_validator(doc):
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(doc)
