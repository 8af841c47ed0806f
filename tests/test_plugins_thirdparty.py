"""Third-party plugins as a user meets them: pip-installed packages found through the ``vidax`` entry-point
group by the real ``vidax`` command, in subprocesses (so entry points are loaded, unlike the in-process tests).

* every hook of ``vidax_core/hookspecs.py`` is documented in ``docs/plugins.md`` under ``### name(args)``;
* ``examples/vidax-example-plugin`` (provider type ``waveform``, asset source ``mirror://``) is installed with pip
  and used by a real run; ``VIDAX_DISABLED_PLUGINS=example`` switches it off;
* a broken plugin (ImportError) and one with a misspelled hook are reported and do not take the others down.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import assert_final_mp4
from helpers import read_events
from helpers import simple_job

from vidax_core import hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "plugins.md"
EXAMPLE = ROOT / "examples" / "vidax-example-plugin"
VIDAX = Path(sys.executable).parent / "vidax"
RUN_LINE = re.compile(r"^run (\S+)\s+workdir (.+)$", re.M)


# --------------------------------------------------------------------------- docs/plugins.md


def hook_signatures() -> dict[str, list[str]]:
    specs = {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
             if hasattr(fn, "vidax_spec")}
    return {name: list(inspect.signature(fn).parameters) for name, fn in specs.items()}


def test_every_hook_is_documented_with_its_arguments_in_docs_plugins_md():
    hooks = hook_signatures()
    assert {"register_phases", "before_phase", "after_phase", "register_asset_sources",
            "register_lipsync_provider_types"} <= set(hooks)
    assert DOC.is_file(), f"{DOC} does not exist: every hook must be documented there"
    text = DOC.read_text(encoding="utf-8")
    headings = {m.group(1): [a.strip() for a in m.group(2).split(",") if a.strip()]
                for m in re.finditer(r"^###\s+([A-Za-z_][A-Za-z0-9_]*)\(([^)]*)\)\s*$", text, re.M)}
    missing = [f"### {name}({', '.join(args)})" for name, args in sorted(hooks.items()) if headings.get(name) != args]
    assert not missing, f"docs/plugins.md lacks these headings (or has other arguments): {missing}"


# --------------------------------------------------------------------------- building and running


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any VIDAX_* variable or PYTHONPATH, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDAX_") and k != "PYTHONPATH"}
    env.update(extra)
    return env


def pip_install(target: Path, *packages: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
           "--disable-pip-version-check", "--no-input", "--quiet", "--target", str(target), *map(str, packages)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=clean_env())
    assert proc.returncode == 0, f"pip failed:\n{proc.stdout}\n{proc.stderr}"


def copy_example(dest: Path) -> Path:
    """The example plugin's source, without build leftovers (so the repository's copy is never written to)."""
    return Path(shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")))


def write_package(root: Path, dist: str, module: str, ep_name: str, code: str) -> Path:
    pkg = root / dist
    (pkg / module).mkdir(parents=True)
    (pkg / module / "__init__.py").write_text(textwrap.dedent(code))
    (pkg / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=69"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "0.0.1"

        [project.entry-points.vidax]
        {ep_name} = "{module}"

        [tool.setuptools]
        packages = ["{module}"]
        """))
    return pkg


def vidax(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(VIDAX), *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def example_target(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("example-plugin")
    target = d / "site"
    pip_install(target, copy_example(d / "src"))
    assert (target / "vidax_example_plugin" / "__init__.py").is_file()
    assert list(target.glob("vidax_example_plugin-*.dist-info/entry_points.txt"))
    return target


@pytest.fixture
def world(tmp_path, media):
    """A mirror holding the face image, a providers file with a waveform provider, a runs folder."""
    mirror = tmp_path / "mirror"
    (mirror / "faces").mkdir(parents=True)
    shutil.copy(media.png, mirror / "faces" / "anchor face.png")
    providers = tmp_path / "lipsync.providers.json"
    providers.write_text(json.dumps({"providers": {
        "wave": {"type": "waveform", "options": {"color": "red", "height": 0.3}}}}))
    work = tmp_path / "cwd"
    work.mkdir()
    return {"mirror": mirror, "providers": providers, "runs": tmp_path / "runs", "cwd": work,
            "media": media}


def world_env(world, target: Path, **extra: str) -> dict[str, str]:
    return clean_env(PYTHONPATH=str(target), VIDAX_MIRROR_ROOT=str(world["mirror"]),
                     VIDAX_LIPSYNC_PROVIDERS=str(world["providers"]), VIDAX_RUNS_DIR=str(world["runs"]),
                     VIDAX_INPUT_ROOTS=str(world["media"].dir), **extra)


def write_job(world, job: dict) -> Path:
    path = world["cwd"] / "job.json"
    path.write_text(json.dumps(job))
    return path


def mirror_job(world) -> dict:
    return simple_job(audio=str(world["media"].wav), image="mirror://faces/anchor%20face.png",
                      lipsync={"provider": "wave", "options": {"height": 0.25}})


# --------------------------------------------------------------------------- the example plugin


def test_vidax_plugins_lists_the_installed_example(example_target, world):
    proc = vidax("plugins", "--json", env=world_env(world, example_target), cwd=world["cwd"])
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["failures"] == []
    example = [p for p in info["plugins"] if p["name"] == "example"]
    assert example, info["plugins"]
    assert example[0]["package"] == "vidax-example-plugin 0.1.0"
    assert example[0]["hooks"] == ["register_asset_sources", "register_lipsync_provider_types"]
    assert "asset source for scheme mirror" in example[0]["registers"]
    assert "lip-sync provider type waveform" in example[0]["registers"]
    assert "mirror" in info["asset_schemes"] and {"http", "https", "file"} <= set(info["asset_schemes"])
    assert {"command", "comfyui", "waveform"} <= set(info["lipsync_provider_types"])
    assert info["phases"][:5] == ["prepare", "comfyui", "stabilize", "lipsync", "encode"]


def test_vidax_run_uses_the_mirror_source_and_the_waveform_provider(example_target, world):
    job = write_job(world, mirror_job(world))
    proc = vidax("run", str(job), env=world_env(world, example_target), cwd=world["cwd"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = RUN_LINE.search(proc.stdout)
    assert m, proc.stdout
    workdir = Path(m.group(2).strip())
    assert workdir.parent == world["runs"]
    manifest = json.loads((workdir / "manifest.json").read_text())
    assert manifest["run_status"] == "completed" and manifest["exit_status"] == "success", manifest
    lip = manifest["phases"]["lipsync"]
    assert lip["status"] == "completed" and lip["provider"] == "wave", lip
    assert lip["outputs"]["video"] == "lipsync/output.mp4"
    assert manifest["phases"]["encode"]["outputs"]["source"] == "lipsync/output.mp4"
    # the image came through the mirror:// source into inputs/
    image = manifest["phases"]["prepare"]["outputs"]["image"]
    assert image.startswith("inputs/") and image.endswith(".png"), image
    assert (workdir / image).read_bytes() == (world["mirror"] / "faces" / "anchor face.png").read_bytes()
    fetching = [e for e in read_events(workdir) if e["event"] == "input.fetching"]
    assert fetching and fetching[0]["data"]["url"].startswith("mirror://")
    assert manifest["outputs"]["final"] == str(workdir / "final.mp4")
    assert f"final: {workdir / 'final.mp4'}" in proc.stdout
    assert_final_mp4(workdir / "final.mp4", 3.0, fps=25)


def test_disabled_example_plugin_makes_the_mirror_job_invalid(example_target, world):
    job = write_job(world, mirror_job(world))
    env = world_env(world, example_target, VIDAX_DISABLED_PLUGINS="example")
    proc = vidax("run", str(job), env=env, cwd=world["cwd"])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "VALIDATION_ERROR" in proc.stderr
    assert "inputs.image" in proc.stderr and "mirror://" in proc.stderr
    assert not world["runs"].exists() or not [p for p in world["runs"].iterdir() if not p.name.startswith(".")]
    # and `vidax plugins` no longer lists it
    listed = json.loads(vidax("plugins", "--json", env=env, cwd=world["cwd"]).stdout)
    assert "example" not in [p["name"] for p in listed["plugins"]]
    assert "mirror" not in listed["asset_schemes"]
    assert "waveform" not in listed["lipsync_provider_types"]


# --------------------------------------------------------------------------- broken plugins


@pytest.fixture(scope="module")
def broken_target(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("broken-plugins")
    broken = write_package(d / "src", "vidax-broken-plugin", "vidax_broken_plugin", "broken", """\
        raise ImportError("No module named 'torch' (vidax_broken_plugin needs it)")
        """)
    typo = write_package(d / "src", "vidax-typo-plugin", "vidax_typo_plugin", "typo", """\
        from vidax_core import hookimpl


        @hookimpl
        def register_phasez(register):
            raise AssertionError("never called")
        """)
    target = d / "site"
    pip_install(target, broken, typo, copy_example(d / "src" / "example"))
    return target


def test_vidax_plugins_reports_broken_plugins_and_loads_the_rest(broken_target, world):
    env = world_env(world, broken_target)
    proc = vidax("plugins", "--json", env=env, cwd=world["cwd"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    info = json.loads(proc.stdout)
    failures = {f["name"]: f["error"] for f in info["failures"]}
    assert set(failures) == {"broken", "typo"}, failures
    assert "ImportError" in failures["broken"] and "torch" in failures["broken"]
    assert "register_phasez" in failures["typo"]
    names = [p["name"] for p in info["plugins"]]
    assert "broken" not in names and "typo" not in names
    assert "example" in names and "mirror" in info["asset_schemes"] and "waveform" in info["lipsync_provider_types"]
    assert info["phases"][:5] == ["prepare", "comfyui", "stabilize", "lipsync", "encode"]

    text = vidax("plugins", env=env, cwd=world["cwd"])
    assert text.returncode == 1
    assert re.search(r"FAILED to load plugin broken: ImportError: .*torch", text.stdout), text.stdout
    assert re.search(r"FAILED to load plugin typo: .*register_phasez", text.stdout), text.stdout


def test_vidax_run_works_beside_broken_plugins(broken_target, world):
    job = write_job(world, simple_job(audio=str(world["media"].wav), image=str(world["media"].png)))
    proc = vidax("run", str(job), env=world_env(world, broken_target), cwd=world["cwd"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "completed (success)" in proc.stdout
    m = RUN_LINE.search(proc.stdout)
    assert_final_mp4(Path(m.group(2).strip()) / "final.mp4", 3.0, fps=25)
    # the broken plugins were reported on the way
    assert "broken" in proc.stderr and "typo" in proc.stderr
