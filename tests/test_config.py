"""Settings: environment > config file > built-in default, path resolution, and errors that name what to fix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vidax_core.config import Settings
from vidax_core.config import load_settings
from vidax_core.errors import ConfigError


def write_config(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def norm(p) -> Path:
    return Path(os.path.normpath(p))


@pytest.fixture
def cwd(tmp_path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


# --------------------------------------------------------------------------- defaults


def test_defaults_without_any_config(cwd):
    s = load_settings(env={}, cwd=cwd)
    assert s.config_file is None
    assert s.api_key is None
    assert s.runs_dir == cwd / "runs"
    assert s.assets_config == cwd / "config" / "assets.json"
    assert s.lipsync_providers == cwd / "config" / "lipsync.providers.json"
    assert s.input_roots == (cwd,)
    assert s.comfyui.url == "http://127.0.0.1:8188"
    assert s.comfyui.auto_start is False
    assert s.comfyui.command is None
    assert s.comfyui.start_timeout_s == 120
    assert s.ffmpeg is None


def test_config_vidax_json_in_cwd_is_read_without_vidax_config(cwd):
    cfg = write_config(cwd / "config" / "vidax.json", {"runs_dir": "../elsewhere"})
    s = load_settings(env={}, cwd=cwd)
    assert s.config_file == cfg
    assert norm(s.runs_dir) == cwd / "elsewhere"


# --------------------------------------------------------------------------- precedence

FILE_VALUES = {
    "apiKey": "file-key",
    "runs_dir": "/file/runs",
    "assets_config": "/file/assets.json",
    "lipsync_providers": "/file/providers.json",
    "input_roots": ["/file/in1", "/file/in2"],
    "ffmpeg": "/file/bin/ffmpeg",
    "comfyui": {"url": "http://file.example:1", "auto_start": False},
}
ENV_VALUES = {
    "VIDAX_API_KEY": "env-key",
    "VIDAX_RUNS_DIR": "/env/runs",
    "VIDAX_ASSETS_CONFIG": "/env/assets.json",
    "VIDAX_LIPSYNC_PROVIDERS": "/env/providers.json",
    "VIDAX_INPUT_ROOTS": "/env/in1:/env/in2",
    "VIDAX_FFMPEG": "/env/bin/ffmpeg",
    "VIDAX_COMFYUI_URL": "http://env.example:2",
    "VIDAX_COMFYUI_AUTO_START": "true",
}
# (attribute getter, value from env, value from file, default relative to cwd or literal)
SETTINGS = {
    "api_key": (lambda s: s.api_key, "env-key", "file-key", lambda cwd: None),
    "runs_dir": (lambda s: s.runs_dir, Path("/env/runs"), Path("/file/runs"), lambda cwd: cwd / "runs"),
    "assets_config": (lambda s: s.assets_config, Path("/env/assets.json"), Path("/file/assets.json"),
                      lambda cwd: cwd / "config" / "assets.json"),
    "lipsync_providers": (lambda s: s.lipsync_providers, Path("/env/providers.json"), Path("/file/providers.json"),
                          lambda cwd: cwd / "config" / "lipsync.providers.json"),
    "input_roots": (lambda s: s.input_roots, (Path("/env/in1"), Path("/env/in2")),
                    (Path("/file/in1"), Path("/file/in2")), lambda cwd: (cwd,)),
    "ffmpeg": (lambda s: s.ffmpeg, "/env/bin/ffmpeg", "/file/bin/ffmpeg", lambda cwd: None),
    "comfyui.url": (lambda s: s.comfyui.url, "http://env.example:2", "http://file.example:1",
                    lambda cwd: "http://127.0.0.1:8188"),
    "comfyui.auto_start": (lambda s: s.comfyui.auto_start, True, False, lambda cwd: False),
}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_env_beats_file_beats_default(cwd, tmp_path, name):
    get, from_env, from_file, default = SETTINGS[name]
    cfg = write_config(tmp_path / "conf" / "vidax.json", FILE_VALUES)

    assert get(load_settings(env={}, cwd=cwd)) == default(cwd)
    assert get(load_settings(env={"VIDAX_CONFIG": str(cfg)}, cwd=cwd)) == from_file
    assert get(load_settings(env={"VIDAX_CONFIG": str(cfg), **ENV_VALUES}, cwd=cwd)) == from_env


def test_comfyui_auto_start_env_false_overrides_file_true(cwd):
    write_config(cwd / "config" / "vidax.json", {"comfyui": {"auto_start": True}})
    assert load_settings(env={}, cwd=cwd).comfyui.auto_start is True
    assert load_settings(env={"VIDAX_COMFYUI_AUTO_START": "0"}, cwd=cwd).comfyui.auto_start is False


@pytest.mark.parametrize("raw, expected", [
    ("1", True), ("true", True), ("YES", True), ("on", True), (" True ", True),
    ("0", False), ("false", False), ("No", False), ("off", False),
])
def test_comfyui_auto_start_env_values(cwd, raw, expected):
    assert load_settings(env={"VIDAX_COMFYUI_AUTO_START": raw}, cwd=cwd).comfyui.auto_start is expected


def test_comfyui_file_only_settings(cwd):
    write_config(cwd / "config" / "vidax.json", {"comfyui": {
        "url": "http://gpu.local:8188/", "command": ["python", "main.py", "--listen"], "cwd": "/opt/ComfyUI",
        "env": {"CUDA_VISIBLE_DEVICES": "1"}, "start_timeout_s": 30}})
    c = load_settings(env={}, cwd=cwd).comfyui
    assert c.url == "http://gpu.local:8188"  # no trailing slash: paths are appended to it
    assert c.command == ("python", "main.py", "--listen")
    assert c.cwd == Path("/opt/ComfyUI")
    assert dict(c.env) == {"CUDA_VISIBLE_DEVICES": "1"}
    assert c.start_timeout_s == 30.0


# --------------------------------------------------------------------------- relative paths


def test_relative_paths_in_config_file_resolve_against_its_folder(cwd, tmp_path):
    folder = tmp_path / "etc" / "vidax"
    cfg = write_config(folder / "custom.json", {
        "runs_dir": "runs",
        "assets_config": "sub/assets.json",
        "lipsync_providers": "../providers.json",
        "input_roots": ["media", "../shared"],
        "ffmpeg": "bin/ffmpeg",
        "comfyui": {"cwd": "comfy"},
    })
    s = load_settings(env={"VIDAX_CONFIG": str(cfg)}, cwd=cwd)
    assert norm(s.runs_dir) == folder / "runs"
    assert norm(s.assets_config) == folder / "sub" / "assets.json"
    assert norm(s.lipsync_providers) == tmp_path / "etc" / "providers.json"
    assert tuple(norm(p) for p in s.input_roots) == (folder / "media", tmp_path / "etc" / "shared")
    assert norm(s.ffmpeg) == folder / "bin" / "ffmpeg"
    assert norm(s.comfyui.cwd) == folder / "comfy"


def test_relative_paths_in_env_resolve_against_cwd_even_with_a_config_file(cwd, tmp_path):
    cfg = write_config(tmp_path / "etc" / "vidax.json", {"runs_dir": "file-runs"})
    s = load_settings(env={
        "VIDAX_CONFIG": str(cfg),
        "VIDAX_RUNS_DIR": "env-runs",
        "VIDAX_ASSETS_CONFIG": "conf/assets.json",
        "VIDAX_LIPSYNC_PROVIDERS": "../providers.json",
        "VIDAX_INPUT_ROOTS": "a:b/c",
        "VIDAX_FFMPEG": "tools/ffmpeg",
    }, cwd=cwd)
    assert norm(s.runs_dir) == cwd / "env-runs"
    assert norm(s.assets_config) == cwd / "conf" / "assets.json"
    assert norm(s.lipsync_providers) == tmp_path / "providers.json"
    assert tuple(norm(p) for p in s.input_roots) == (cwd / "a", cwd / "b" / "c")
    assert norm(s.ffmpeg) == cwd / "tools" / "ffmpeg"


def test_ffmpeg_bare_name_is_kept_for_a_path_lookup(cwd):
    assert load_settings(env={"VIDAX_FFMPEG": "ffmpeg"}, cwd=cwd).ffmpeg == "ffmpeg"


def test_vidax_config_relative_resolves_against_cwd(cwd):
    cfg = write_config(cwd / "deploy" / "prod.json", {"apiKey": "from-prod"})
    s = load_settings(env={"VIDAX_CONFIG": "deploy/prod.json"}, cwd=cwd)
    assert s.config_file == cfg
    assert s.api_key == "from-prod"


# --------------------------------------------------------------------------- VIDAX_INPUT_ROOTS


def test_input_roots_colon_separated_in_order_empty_parts_dropped(cwd, tmp_path):
    s = load_settings(env={"VIDAX_INPUT_ROOTS": f"{tmp_path}/z::rel:/abs/y:"}, cwd=cwd)
    assert s.input_roots == (tmp_path / "z", cwd / "rel", Path("/abs/y"))


def test_input_roots_env_naming_no_folder_is_an_error(cwd):
    with pytest.raises(ConfigError) as ei:
        load_settings(env={"VIDAX_INPUT_ROOTS": ":::"}, cwd=cwd)
    assert "VIDAX_INPUT_ROOTS" in ei.value.message


# --------------------------------------------------------------------------- invalid config files


def test_invalid_json_names_the_file(cwd):
    cfg = write_config(cwd / "config" / "vidax.json", '{"runs_dir": "runs",\n  oops}')
    with pytest.raises(ConfigError) as ei:
        load_settings(env={}, cwd=cwd)
    assert str(cfg) in ei.value.message
    assert "not valid JSON" in ei.value.message
    assert "line 2" in ei.value.message


@pytest.mark.parametrize("data, field", [
    ({"comfyui": {"start_timeout_s": "soon"}}, "comfyui.start_timeout_s"),
    ({"runs_folder": "runs"}, "runs_folder"),
    ({"comfyui": {"autostart": True}}, "comfyui.autostart"),
    ({"input_roots": "media"}, "input_roots"),
    ({"input_roots": []}, "input_roots"),
    ({"comfyui": {"url": "gpu.local:8188"}}, "comfyui.url"),
    ({"comfyui": {"auto_start": "yes"}}, "comfyui.auto_start"),
    ({"executor": {"threads": 0}}, "executor.threads"),
    ({"apiKey": ""}, "apiKey"),
])
def test_schema_violation_names_file_and_field(cwd, data, field):
    cfg = write_config(cwd / "config" / "vidax.json", data)
    with pytest.raises(ConfigError) as ei:
        load_settings(env={}, cwd=cwd)
    assert str(cfg) in ei.value.message
    assert f'"{field}"' in ei.value.message
    assert [d["field"] for d in ei.value.details] == [field]
    assert ei.value.details[0]["file"] == str(cfg)


def test_every_problem_of_a_config_file_is_named(cwd):
    write_config(cwd / "config" / "vidax.json",
                 {"bogus": 1, "comfyui": {"start_timeout_s": "soon"}, "runs_dir": 5})
    with pytest.raises(ConfigError) as ei:
        load_settings(env={}, cwd=cwd)
    assert {d["field"] for d in ei.value.details} == {"bogus", "comfyui.start_timeout_s", "runs_dir"}
    for field in ("bogus", "comfyui.start_timeout_s", "runs_dir"):
        assert field in ei.value.message


def test_config_file_that_is_not_an_object(cwd):
    cfg = write_config(cwd / "config" / "vidax.json", "[1, 2]")
    with pytest.raises(ConfigError) as ei:
        load_settings(env={}, cwd=cwd)
    assert str(cfg) in ei.value.message


def test_config_file_not_utf8(cwd):
    cfg = cwd / "config" / "vidax.json"
    cfg.parent.mkdir()
    cfg.write_bytes(b'{"apiKey": "\xff\xfe"}')
    with pytest.raises(ConfigError) as ei:
        load_settings(env={}, cwd=cwd)
    assert str(cfg) in ei.value.message


def test_vidax_config_pointing_at_a_missing_file_is_an_error(cwd):
    with pytest.raises(ConfigError) as ei:
        load_settings(env={"VIDAX_CONFIG": "nowhere/vidax.json"}, cwd=cwd)
    assert "VIDAX_CONFIG" in ei.value.message
    assert str(cwd / "nowhere" / "vidax.json") in ei.value.message


# --------------------------------------------------------------------------- invalid environment


@pytest.mark.parametrize("raw", ["maybe", "2", "enabled"])
def test_bad_auto_start_env_value_names_the_variable(cwd, raw):
    with pytest.raises(ConfigError) as ei:
        load_settings(env={"VIDAX_COMFYUI_AUTO_START": raw}, cwd=cwd)
    assert "VIDAX_COMFYUI_AUTO_START" in ei.value.message
    assert raw in ei.value.message


@pytest.mark.parametrize("raw", ["many", "0", "-1", "1.5"])
def test_bad_executor_threads_env_value_names_the_variable(cwd, raw):
    with pytest.raises(ConfigError) as ei:
        load_settings(env={"VIDAX_EXECUTOR_THREADS": raw}, cwd=cwd)
    assert "VIDAX_EXECUTOR_THREADS" in ei.value.message


def test_executor_threads_env_beats_file(cwd):
    write_config(cwd / "config" / "vidax.json", {"executor": {"threads": 3}})
    assert load_settings(env={}, cwd=cwd).executor_threads == 3
    assert load_settings(env={"VIDAX_EXECUTOR_THREADS": "5"}, cwd=cwd).executor_threads == 5


# --------------------------------------------------------------------------- the API key


def test_require_api_key_names_both_sources(cwd):
    s = load_settings(env={}, cwd=cwd)
    with pytest.raises(ConfigError) as ei:
        s.require_api_key()
    assert "VIDAX_API_KEY" in ei.value.message
    assert "apiKey" in ei.value.message


def test_require_api_key_names_the_config_file_in_use(cwd):
    cfg = write_config(cwd / "config" / "vidax.json", {"runs_dir": "runs"})
    with pytest.raises(ConfigError) as ei:
        load_settings(env={}, cwd=cwd).require_api_key()
    assert str(cfg) in ei.value.message


def test_require_api_key_returns_the_key_and_repr_hides_it(cwd):
    s = load_settings(env={"VIDAX_API_KEY": "sekrit-123456"}, cwd=cwd)
    assert s.require_api_key() == "sekrit-123456"
    assert "sekrit-123456" not in repr(s)


def test_empty_api_key_env_falls_back_to_the_file(cwd):
    write_config(cwd / "config" / "vidax.json", {"apiKey": "file-key"})
    assert load_settings(env={"VIDAX_API_KEY": ""}, cwd=cwd).api_key == "file-key"


def test_settings_are_immutable(cwd):
    s = load_settings(env={}, cwd=cwd)
    assert isinstance(s, Settings)
    with pytest.raises(AttributeError):
        s.api_key = "x"
