"""The published job schema: ``docs/job.schema.json`` = the package's copy = ``GET /schema/job``, and it agrees
with what validation accepts."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import falcon.testing
import jsonschema
import pytest
from helpers import simple_job

import vidax_core
from vidax_core.errors import ValidationError
from vidax_http import create_app

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "job.schema.json"
PACKAGE = Path(vidax_core.__file__).parent / "schemas" / "job.schema.json"
KEY = "test-key-0123456789"


def load(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def test_docs_schema_equals_the_package_schema():
    assert DOCS.is_file() and PACKAGE.is_file()
    assert load(DOCS) == load(PACKAGE)


def test_get_schema_job_serves_the_same_schema(inline_vidax):
    client = falcon.testing.TestClient(create_app(inline_vidax), headers={"X-API-Key": KEY})
    r = client.simulate_get("/schema/job")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json == load(DOCS)


def test_job_schema_from_the_core_is_a_copy(inline_vidax):
    schema = inline_vidax.job_schema()
    schema["properties"].clear()
    assert inline_vidax.job_schema() == load(DOCS)


def test_it_is_a_valid_json_schema():
    schema = load(DOCS)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    cls = jsonschema.validators.validator_for(schema)
    assert cls is jsonschema.Draft202012Validator
    cls.check_schema(schema)
    assert schema["required"] == ["inputs"]
    assert schema["properties"]["inputs"]["required"] == ["audio"]
    assert schema["additionalProperties"] is False


def _set(job, dotted, value):
    job = copy.deepcopy(job)
    *parents, last = dotted.split(".")
    node = job
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return job


BASE = simple_job()
VALID = [
    BASE,
    simple_job(image=None, video="clip.mp4"),
    _set(BASE, "inputs.prompt", "a calm news anchor"),
    _set(BASE, "inputs.video", None),
    _set(BASE, "encode", {}),
    _set(BASE, "encode", {"fps": 29.97, "crf": 0, "preset": "veryslow", "audio_bitrate": "1024k"}),
    _set(BASE, "comfyui", {"enable": False}),
    _set(BASE, "stabilize", {"enable": False, "method": "deshake", "smoothing": 0}),
    _set(BASE, "lipsync", {"enable": False}),
    _set(BASE, "metadata", {"any": {"thing": [1, 2]}}),
]
INVALID = [
    ({"inputs": {"image": "face.png"}}, "inputs.audio"),
    (_set(BASE, "colour", "red"), "colour"),
    (_set(BASE, "inputs.face", "face.png"), "inputs.face"),
    (_set(BASE, "inputs.audio", ""), "inputs.audio"),
    (_set(BASE, "encode.fps", 0), "encode.fps"),
    (_set(BASE, "encode.fps", 241), "encode.fps"),
    (_set(BASE, "encode.crf", 52), "encode.crf"),
    (_set(BASE, "encode.preset", "ludicrous"), "encode.preset"),
    (_set(BASE, "encode.audio_bitrate", "192"), "encode.audio_bitrate"),
    (_set(BASE, "stabilize", {"enable": False, "method": "wobble"}), "stabilize.method"),
    (_set(BASE, "stabilize", {"enable": False, "smoothing": -1}), "stabilize.smoothing"),
    (_set(BASE, "comfyui", {"enable": True}), "comfyui.workflow"),
    (_set(BASE, "comfyui", {"enable": False, "timeout_s": 0}), "comfyui.timeout_s"),
    (_set(BASE, "lipsync", {"allow_passthrough": True}), "lipsync.provider"),
    (_set(BASE, "metadata", []), "metadata"),
]


@pytest.fixture(scope="module")
def validator():
    return jsonschema.Draft202012Validator(load(DOCS))


@pytest.mark.parametrize("job", VALID)
def test_schema_valid_jobs_are_accepted(vidax, validator, job):
    assert list(validator.iter_errors(job)) == []
    vidax.validate(job)


@pytest.mark.parametrize("job, field", INVALID)
def test_schema_invalid_jobs_are_rejected_naming_the_field(vidax, validator, job, field):
    assert list(validator.iter_errors(job)) != []
    with pytest.raises(ValidationError) as ei:
        vidax.validate(job)
    assert field in [d["field"] for d in ei.value.details]


def test_schema_defaults_are_what_validation_fills_in(vidax):
    props = load(DOCS)["properties"]
    job = vidax.validate({"inputs": BASE["inputs"]})
    for key in ("fps", "crf", "preset", "audio_bitrate"):
        assert getattr(job.encode, key) == props["encode"]["properties"][key]["default"], key
    assert job.stabilize.method == props["stabilize"]["properties"]["method"]["default"]
    assert job.comfyui.timeout_s == props["comfyui"]["properties"]["timeout_s"]["default"]
