"""Settings: built-in defaults, then ``config/vidax.json`` (or ``VIDAX_CONFIG``), then environment variables.

Relative paths in the config file resolve against the file's folder; relative paths in environment
variables and defaults resolve against the working directory. ``Settings`` is immutable: build a new one
with :func:`load_settings` (or ``attrs.evolve``) to change it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import Factory
from attrs import field
from attrs import frozen

from .errors import ConfigError
from .schema import schema_problems

DEFAULT_CONFIG = Path("config") / "vidax.json"
DEFAULT_COMFYUI_URL = "http://127.0.0.1:8188"
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


@frozen
class ComfyUISettings:
    """How to reach (and, with ``auto_start``, how to start) the ComfyUI server."""

    url: str = DEFAULT_COMFYUI_URL
    auto_start: bool = False
    command: tuple[str, ...] | None = None
    cwd: Path | None = None
    env: Mapping[str, str] = Factory(dict)
    start_timeout_s: float = 120.0


@frozen
class Settings:
    """The merged configuration of one VIDAX instance."""

    api_key: str | None = field(default=None, repr=False)
    config_file: Path | None = None
    assets_config: Path = Factory(lambda: Path.cwd() / "config" / "assets.json")
    lipsync_providers: Path = Factory(lambda: Path.cwd() / "config" / "lipsync.providers.json")
    runs_dir: Path = Factory(lambda: Path.cwd() / "runs")
    input_roots: tuple[Path, ...] = Factory(lambda: (Path.cwd(),))
    comfyui: ComfyUISettings = ComfyUISettings()
    ffmpeg: str | None = None
    executor_threads: int = 2

    def require_api_key(self) -> str:
        """The API key, or a ConfigError naming both places a key can come from."""
        if not self.api_key:
            where = f" ({self.config_file})" if self.config_file else ""
            raise ConfigError(
                "no API key configured: set the environment variable VIDAX_API_KEY, or the field \"apiKey\" "
                f"in the config file{where}. VIDAX will not serve its API without a key."
            )
        return self.api_key


def load_settings(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
    """Build :class:`Settings` from defaults, the config file and ``env`` (default: ``os.environ``).

    :raises ConfigError: the config file does not parse or validate (the message names file and field), or an
        environment variable has a value of the wrong kind (the message names the variable).
    """
    env = os.environ if env is None else env
    cwd = (cwd or Path.cwd()).absolute()

    explicit = env.get("VIDAX_CONFIG")
    config_file = _resolve(explicit, cwd) if explicit else cwd / DEFAULT_CONFIG
    data: dict[str, Any] = {}
    if config_file.is_file():
        data = _read_config(config_file)
    elif explicit:
        raise ConfigError(f"VIDAX_CONFIG names {config_file}, which does not exist")
    else:
        config_file = None
    base = config_file.parent if config_file else cwd
    comfy = data.get("comfyui", {})

    def path_setting(env_name: str, key: str, default: str) -> Path:
        if env.get(env_name):
            return _resolve(env[env_name], cwd)
        if key in data:
            return _resolve(data[key], base)
        return _resolve(default, cwd)

    if env.get("VIDAX_INPUT_ROOTS"):
        roots = tuple(_resolve(p, cwd) for p in env["VIDAX_INPUT_ROOTS"].split(":") if p)
    elif "input_roots" in data:
        roots = tuple(_resolve(p, base) for p in data["input_roots"])
    else:
        roots = (cwd,)
    if not roots:
        raise ConfigError("VIDAX_INPUT_ROOTS names no folder")

    ffmpeg = env.get("VIDAX_FFMPEG") or data.get("ffmpeg")
    if ffmpeg and ("/" in ffmpeg or os.sep in ffmpeg):
        ffmpeg = str(_resolve(ffmpeg, cwd if env.get("VIDAX_FFMPEG") else base))

    url = (env.get("VIDAX_COMFYUI_URL") or comfy.get("url") or DEFAULT_COMFYUI_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"VIDAX_COMFYUI_URL={url!r} is not an http:// or https:// URL")
    comfyui = ComfyUISettings(
        url=url,
        auto_start=_env_bool(env, "VIDAX_COMFYUI_AUTO_START", comfy.get("auto_start", False)),
        command=tuple(comfy["command"]) if comfy.get("command") else None,
        cwd=_resolve(comfy["cwd"], base) if comfy.get("cwd") else None,
        env=dict(comfy.get("env", {})),
        start_timeout_s=float(comfy.get("start_timeout_s", 120.0)),
    )
    return Settings(
        api_key=env.get("VIDAX_API_KEY") or data.get("apiKey") or None,
        config_file=config_file,
        assets_config=path_setting("VIDAX_ASSETS_CONFIG", "assets_config", "config/assets.json"),
        lipsync_providers=path_setting("VIDAX_LIPSYNC_PROVIDERS", "lipsync_providers",
                                       "config/lipsync.providers.json"),
        runs_dir=path_setting("VIDAX_RUNS_DIR", "runs_dir", "runs"),
        input_roots=roots,
        comfyui=comfyui,
        ffmpeg=ffmpeg or None,
        executor_threads=_env_int(env, "VIDAX_EXECUTOR_THREADS",
                                  data.get("executor", {}).get("threads", 2), minimum=1),
    )


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc.msg} at line {exc.lineno} "
                          f"column {exc.colno}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    problems = schema_problems("config", data)
    if problems:
        lines = "; ".join(f"field \"{p.field}\": {p.problem}" for p in problems)
        raise ConfigError(f"config file {path} is invalid: {lines}",
                          details=[{"file": str(path), **p.to_dict()} for p in problems])
    return data


def _resolve(value: str, base: Path) -> Path:
    """``value`` as an absolute path, ``..`` folded away (``config/../runs`` -> ``runs``)."""
    return Path(os.path.abspath(os.path.join(base, os.path.expanduser(value))))


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or not raw.strip():  # set but empty: as if unset, like every other variable
        return bool(default)
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ConfigError(f"environment variable {name}={raw!r} is not a boolean (use 1/0, true/false, yes/no)")


def _env_int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None:
        return int(default)
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"environment variable {name}={raw!r} must be at least {minimum}")
    return value
