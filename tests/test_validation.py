"""Validating jobs through ``Vidax.validate`` / ``Vidax.create_run``: every problem at once, each field named."""

from __future__ import annotations

import json
import os
import shutil

import jsonschema
import pytest
from helpers import simple_job

from vidax_core import Vidax
from vidax_core.errors import UnsupportedFormat
from vidax_core.errors import ValidationError
from vidax_core.plugins import get_plugin_manager
from vidax_core.schema import load_schema

WORKFLOW = {"3": {"class_type": "KSampler", "inputs": {"seed": "{{seed}}"}}}
# The builtins that provide prepare and encode (and the asset sources), and no other phase: the tests of
# "a phase no plugin provides" must not depend on which other builtins exist.
CORE_BUILTINS = ("vidax_plugins.prepare", "vidax_plugins.encode", "vidax_plugins.file_source",
                 "vidax_plugins.http_source")


def fields(exc: ValidationError) -> list[str]:
    return [d["field"] for d in exc.details]


def problem_of(exc: ValidationError, field: str) -> str:
    found = [d["problem"] for d in exc.details if d["field"] == field]
    assert found, f"{field} not reported: {exc.details}"
    return " ".join(found)


def rejected(vx, job) -> ValidationError:
    with pytest.raises(ValidationError) as ei:
        vx.validate(job)
    assert ei.value.code == "VALIDATION_ERROR"
    assert isinstance(ei.value.details, list) and ei.value.details
    return ei.value


def run_folders(settings) -> list[str]:
    d = settings.runs_dir
    return sorted(os.listdir(d)) if d.exists() else []


@pytest.fixture
def outside(tmp_path, media):
    """A real, decodable WAV outside every input root."""
    p = tmp_path / "outside" / "voice.wav"
    p.parent.mkdir()
    shutil.copyfile(media.wav, p)
    return p


@pytest.fixture
def core_only(settings):
    """A Vidax whose only phases are prepare and encode."""
    vx = Vidax(settings, plugin_manager=get_plugin_manager(builtins=CORE_BUILTINS, env={}), executor="inline")
    provided = {name for name, phase in vx.registry.pipeline() if phase is not None}
    assert provided == {"prepare", "encode"}
    yield vx
    vx.close()


@pytest.fixture
def second_root(settings):
    root = settings.input_roots[1]
    root.mkdir(parents=True, exist_ok=True)
    return root


# --------------------------------------------------------------------------- every problem at once


def test_every_problem_is_reported_at_once(vidax, outside):
    job = {
        "inputs": {"audio": "missing.wav", "image": str(outside), "colour": "red"},
        "encode": {"fps": "fast", "crf": 99, "container": "mkv"},
        "stabilize": {"method": "wobble"},
        "extra": True,
    }
    exc = rejected(vidax, job)
    assert set(fields(exc)) >= {"inputs.audio", "inputs.image", "inputs.colour", "encode.fps", "encode.crf",
                                "encode.container", "stabilize.method", "extra"}
    assert "file not found" in problem_of(exc, "inputs.audio")
    assert "outside" in problem_of(exc, "inputs.image")
    assert "more" in exc.message  # the summary says there is more than it shows


def test_unprovided_phase_is_reported_together_with_other_problems(core_only):
    exc = rejected(core_only, simple_job(audio="missing.wav", stabilize={}))
    assert "inputs.audio" in fields(exc)
    assert "stabilize" in fields(exc)


@pytest.mark.parametrize("where", ["", "inputs", "comfyui", "stabilize", "lipsync", "encode"])
def test_unknown_keys_are_reported_by_name_everywhere(vidax, where):
    job = simple_job(comfyui={"enable": False}, stabilize={"enable": False}, lipsync={"enable": False})
    target = job if not where else job[where]
    target["frobnicate"] = 1
    target["zzz_extra"] = 2
    exc = rejected(vidax, job)
    prefix = f"{where}." if where else ""
    assert sorted(fields(exc)) == [f"{prefix}frobnicate", f"{prefix}zzz_extra"]
    assert problem_of(exc, f"{prefix}frobnicate") == "unknown key"


def test_free_form_sections_accept_any_key(vidax):
    job = simple_job(metadata={"customer": {"id": 7}, "anything": [1]},
                     lipsync={"enable": False, "options": {"any": 1}})
    job["comfyui"] = {"enable": False, "params": {"whatever": True}, "workflow": {"9": {"x": 1}}}
    vidax.validate(job)


def test_missing_audio(vidax):
    exc = rejected(vidax, {"inputs": {"image": "face.png"}})
    assert fields(exc) == ["inputs.audio"]
    assert "required" in problem_of(exc, "inputs.audio")


def test_missing_inputs_section(vidax):
    exc = rejected(vidax, {"encode": {"fps": 25}})
    assert "inputs" in fields(exc)


@pytest.mark.parametrize("job", [[], "a job", None, 42])
def test_a_job_that_is_not_an_object(vidax, job):
    exc = rejected(vidax, job)
    assert fields(exc) == ["(root)"]


@pytest.mark.parametrize("dotted, value", [
    ("encode.fps", float("nan")),
    ("comfyui.timeout_s", float("nan")),
    ("metadata.x", float("nan")),
    ("metadata.x", float("inf")),
])
def test_non_finite_numbers_are_rejected(vidax, settings, dotted, value):
    job = simple_job(comfyui={"enable": False})
    section, key = dotted.split(".")
    job.setdefault(section, {})[key] = value
    with pytest.raises(ValidationError) as ei:
        vidax.create_run(job)
    assert dotted in fields(ei.value)
    assert run_folders(settings) == []


@pytest.mark.parametrize("path, value", [
    (("inputs", "audio"), 5),
    (("inputs", "image"), ["face.png"]),
    (("inputs", "prompt"), 3),
    (("encode", "fps"), "fast"),
    (("encode", "crf"), 1.5),
    (("encode", "preset"), "warp-speed"),
    (("encode", "audio_bitrate"), 192),
    (("stabilize", "smoothing"), "lots"),
    (("stabilize", "allow_passthrough"), "yes"),
    (("lipsync", "options"), []),
    (("comfyui", "timeout_s"), "1h"),
    (("metadata",), []),
    (("inputs",), "voice.wav"),
])
def test_wrong_types_name_the_field(vidax, path, value):
    job = simple_job(stabilize={"enable": False}, lipsync={"enable": False}, comfyui={"enable": False})
    target = job
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    exc = rejected(vidax, job)
    assert ".".join(path) in fields(exc)


@pytest.mark.parametrize("name, value", [("audio", "nope.wav"), ("image", "nope.png"), ("video", "nope.mp4")])
def test_missing_files_name_the_field(vidax, name, value):
    job = simple_job(**{name: value}) if name != "audio" else simple_job(audio=value)
    exc = rejected(vidax, job)
    assert f"inputs.{name}" in fields(exc)
    assert "not found" in problem_of(exc, f"inputs.{name}")


def test_a_folder_is_not_a_file(vidax, media, second_root):
    (second_root / "folder.wav").mkdir()
    exc = rejected(vidax, simple_job(audio=str(second_root / "folder.wav")))
    assert "not a file" in problem_of(exc, "inputs.audio")


# --------------------------------------------------------------------------- input roots


def test_relative_dotdot_escaping_the_first_root(vidax, media, outside):
    rel = os.path.relpath(outside, media.dir)
    assert rel.startswith("..")
    exc = rejected(vidax, simple_job(audio=rel))
    assert "outside the allowed input roots" in problem_of(exc, "inputs.audio")


def test_absolute_dotdot_escaping_a_root(vidax, media, outside, second_root):
    sneaky = f"{second_root}/../outside/voice.wav"
    assert os.path.isfile(sneaky)
    exc = rejected(vidax, simple_job(audio=sneaky))
    assert "outside" in problem_of(exc, "inputs.audio")


def test_symlink_inside_a_root_pointing_outside(vidax, outside, second_root):
    link = second_root / "link.wav"
    link.symlink_to(outside)
    exc = rejected(vidax, simple_job(audio=str(link)))
    assert "outside" in problem_of(exc, "inputs.audio")


def test_symlinked_folder_inside_a_root_pointing_outside(vidax, outside, second_root):
    (second_root / "escape").symlink_to(outside.parent, target_is_directory=True)
    exc = rejected(vidax, simple_job(image=str(second_root / "escape" / "voice.wav")))
    assert "outside" in problem_of(exc, "inputs.image")


@pytest.mark.parametrize("path", ["/etc/hostname", "/etc/passwd", "/dev/null"])
def test_absolute_paths_outside_the_roots(vidax, path):
    exc = rejected(vidax, simple_job(image=path))
    assert "outside" in problem_of(exc, "inputs.image")


def test_outside_the_roots_is_a_400_whatever_the_extension(vidax, tmp_path, media):
    odd = tmp_path / "voice.xyz"
    shutil.copyfile(media.wav, odd)
    exc = rejected(vidax, simple_job(audio=str(odd)))  # 400, not the 415 of an unsupported extension
    assert "outside" in problem_of(exc, "inputs.audio")


def test_relative_paths_resolve_against_the_first_root_only(vidax, media, second_root):
    shutil.copyfile(media.png, second_root / "only-here.png")
    exc = rejected(vidax, simple_job(image="only-here.png"))
    assert "not found" in problem_of(exc, "inputs.image")
    job = vidax.validate(simple_job(image=str(second_root / "only-here.png")))
    assert job.inputs.image == str((second_root / "only-here.png").resolve())


def test_symlink_inside_a_root_to_a_file_inside_is_accepted_and_resolved(vidax, media, second_root):
    link = second_root / "alias.wav"
    link.symlink_to(media.wav)
    job = vidax.validate(simple_job(audio=str(link)))
    assert job.inputs.audio == str(media.wav.resolve())


def test_nul_in_a_path_is_a_validation_error(vidax):
    exc = rejected(vidax, simple_job(image="face\x00.png"))
    assert "inputs.image" in fields(exc)


def test_overlong_path_is_a_validation_error(vidax):
    exc = rejected(vidax, simple_job(audio="a" * 300 + ".wav"))
    assert "inputs.audio" in fields(exc)


@pytest.mark.parametrize("url, words", [
    ("ftp://example.org/voice.wav", "ftp"),
    ("file:///etc/passwd", "file://"),
])
def test_url_inputs_of_unsupported_schemes(vidax, url, words):
    exc = rejected(vidax, simple_job(audio=url))
    assert words in problem_of(exc, "inputs.audio")


# --------------------------------------------------------------------------- audio formats


@pytest.mark.parametrize("attr", ["wav", "mp3", "flac", "stereo_wav"])
def test_supported_audio_is_accepted(vidax, media, attr):
    job = vidax.validate(simple_job(audio=getattr(media, attr).name))
    assert job.inputs.audio == str(getattr(media, attr).resolve())


@pytest.mark.parametrize("attr, words", [("xyz", ".xyz"), ("garbage_wav", "garbage.wav")])
def test_unsupported_audio_is_415(vidax, settings, media, attr, words):
    with pytest.raises(UnsupportedFormat) as ei:
        vidax.create_run(simple_job(audio=getattr(media, attr).name))
    assert ei.value.code == "UNSUPPORTED_FORMAT"
    assert words in ei.value.message
    assert "inputs.audio" in ei.value.message
    assert run_folders(settings) == []


def test_text_file_with_an_audio_extension_is_415(vidax, media, second_root):
    fake = second_root / "notes.mp3"
    shutil.copyfile(media.text, fake)
    with pytest.raises(UnsupportedFormat):
        vidax.validate(simple_job(audio=str(fake)))


def test_video_without_audio_as_audio_is_415(vidax, media, second_root):
    silent = second_root / "silent.m4a"
    shutil.copyfile(media.mp4, silent)  # an MP4 container with video only
    with pytest.raises(UnsupportedFormat):
        vidax.validate(simple_job(audio=str(silent)))


def test_bad_audio_and_a_400_problem_is_a_400(vidax, media):
    # 400 problems are reported first; the audio is probed only for a job free of them
    exc = rejected(vidax, simple_job(audio=media.xyz.name, image="missing.png"))
    assert fields(exc) == ["inputs.image"]


# --------------------------------------------------------------------------- image / video / phases


def test_image_or_video_required_without_comfyui(vidax):
    exc = rejected(vidax, simple_job(image=None))
    assert "inputs.image" in fields(exc)
    assert "inputs.video" in problem_of(exc, "inputs.image")


def test_video_alone_is_enough_without_comfyui(vidax, media):
    job = vidax.validate(simple_job(image=None, video=media.mp4.name))
    assert job.inputs.video == str(media.mp4.resolve())
    assert job.inputs.image is None


def test_disabled_comfyui_still_requires_image_or_video(vidax):
    exc = rejected(vidax, simple_job(image=None, comfyui={"enable": False, "workflow": WORKFLOW}))
    assert "inputs.image" in fields(exc)


@pytest.mark.parametrize("section, body", [
    ("comfyui", {"workflow": WORKFLOW, "params": {"seed": 7}}),
    ("comfyui", {"enable": True, "workflow": "workflows/img2video.json"}),
    ("stabilize", {}),
    ("stabilize", {"enable": True, "method": "deshake"}),
    ("lipsync", {"provider": "wav2lip", "allow_passthrough": True}),
])
def test_enabling_a_phase_no_plugin_provides_names_the_phase(core_only, settings, section, body):
    with pytest.raises(ValidationError) as ei:
        core_only.create_run(simple_job(**{section: body}))
    assert fields(ei.value) == [section]
    assert section in problem_of(ei.value, section)
    assert run_folders(settings) == []


def test_comfyui_job_needs_no_image_but_its_phase(core_only):
    exc = rejected(core_only, {"inputs": {"audio": "voice.wav", "prompt": "a calm anchor"},
                           "comfyui": {"workflow": WORKFLOW}})
    assert fields(exc) == ["comfyui"]


@pytest.mark.parametrize("section", ["comfyui", "lipsync"])
def test_enabled_section_requires_its_key(vidax, section):
    key = {"comfyui": "workflow", "lipsync": "provider"}[section]
    exc = rejected(vidax, simple_job(**{section: {"enable": True}}))
    assert f"{section}.{key}" in fields(exc)


def test_disabled_phases_are_accepted(vidax):
    vidax.validate(simple_job(comfyui={"enable": False}, stabilize={"enable": False},
                              lipsync={"enable": False, "provider": "wav2lip"}))


# --------------------------------------------------------------------------- what an accepted job becomes


def test_rejected_job_leaves_no_run_folder(vidax, settings, outside):
    for job in ({"inputs": {}}, simple_job(audio=str(outside)), simple_job(image=None), [1]):
        with pytest.raises(ValidationError):
            vidax.create_run(job)
    assert run_folders(settings) == []


def test_job_json_is_normalized(vidax, media, second_root):
    link = second_root / "face-link.png"
    link.symlink_to(media.png)
    created = vidax.create_run({"inputs": {"audio": "./voice.mp3", "image": str(link)},
                                "stabilize": {"enable": False, "method": "deshake"},
                                "metadata": {"ticket": 12}})
    with open(os.path.join(created["workdir"], "job.json")) as f:
        job = json.load(f)
    assert job["inputs"] == {"audio": str(media.mp3.resolve()), "image": str(media.png.resolve()),
                             "video": None, "prompt": None}
    assert os.path.isabs(job["inputs"]["audio"])
    # absent sections are disabled, present ones keep what they say
    assert job["comfyui"]["enable"] is False
    assert job["lipsync"]["enable"] is False
    assert job["stabilize"] == {"enable": False, "method": "deshake", "smoothing": 10, "allow_passthrough": False}
    # defaults filled in
    assert job["encode"] == {"fps": 25, "crf": 18, "preset": "medium", "audio_bitrate": "192k"}
    assert job["metadata"] == {"ticket": 12}
    with open(created["manifest"]) as f:
        manifest = json.load(f)
    assert manifest["job"] == job


def test_job_json_validates_against_the_job_schema(vidax, media):
    created = vidax.create_run(simple_job(video=media.mp4.name, image=None))
    with open(os.path.join(created["workdir"], "job.json")) as f:
        job = json.load(f)
    schema = load_schema("job")
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(job))
    assert errors == []
    vidax.validate(job)  # an accepted job stays acceptable as written


def test_validate_returns_the_normalized_job_without_creating_a_run(vidax, settings, media):
    job = vidax.validate(simple_job(fps=30))
    assert job.encode.fps == 30
    assert job.inputs.image == str(media.png.resolve())
    assert job.comfyui.enable is False and job.stabilize.enable is False and job.lipsync.enable is False
    assert run_folders(settings) == []
