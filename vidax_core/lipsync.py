"""Lip-sync providers: the providers file, provider types from plugins, and what a provider is.

``config/lipsync.providers.json`` (or ``VIDAX_LIPSYNC_PROVIDERS``) names providers; each entry's ``type`` is a
provider type registered through the ``register_lipsync_provider_types`` hook (builtin: ``command`` and
``comfyui``), whose factory builds the provider from the entry and validates it, naming provider and field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from typing import Protocol
from typing import runtime_checkable

from attrs import frozen

from .errors import InputNotFound
from .errors import Problem
from .errors import ValidationError
from .schema import explain_error
from .schema import schema_problems


@frozen
class ProviderContext:
    """What a provider type's factory is given besides the entry: where the file is, and the instance's parts."""

    name: str
    base_dir: Path  # the providers file's folder: relative paths in the entry resolve against it
    settings: Any
    registry: Any
    assets: Any  # vidax_core.assets.AssetManager
    comfyui: Any  # vidax_core.comfyui.ComfyUIProcess


@runtime_checkable
class LipsyncProvider(Protocol):
    """A built provider (see ``register_lipsync_provider_types`` in :mod:`vidax_core.hookspecs`)."""

    name: str
    requires_assets: tuple[str, ...]

    def availability(self) -> tuple[bool, str | None]:
        """``(True, None)`` when it can run now, else ``(False, reason)``."""

    def run(self, ctx: Any, video: Path, audio: Path, output: Path) -> None:
        """Lip-sync ``video`` to ``audio`` into ``output`` (an MP4 with a video stream)."""


def missing_assets(assets: Any, names: tuple[str, ...]) -> str | None:
    """A reason naming the required assets that are missing or mismatching, or None when all are fine."""
    if not names:
        return None
    try:
        assets.require(names)
    except (InputNotFound, ValidationError) as exc:
        return exc.message
    return None


class Providers:
    """The providers file, read and validated; ``get(name)`` builds a provider."""

    def __init__(self, path: Path, *, settings: Any, registry: Any, assets: Any, comfyui: Any):
        self.path = Path(path)
        self.settings = settings
        self.registry = registry
        self.assets = assets
        self.comfyui = comfyui

    def entries(self) -> dict[str, dict[str, Any]]:
        """The file's providers.

        :raises InputNotFound: there is no providers file.
        :raises ValidationError: it is not JSON or does not validate (naming provider and field).
        """
        if not self.path.is_file():
            raise InputNotFound(f"lip-sync providers file {self.path} not found "
                                "(set VIDAX_LIPSYNC_PROVIDERS or \"lipsync_providers\")")
        what = f"lip-sync providers file {self.path}"
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValidationError.from_problems([Problem("(file)", f"not valid JSON: {exc}")], what) from None
        problems = schema_problems("lipsync.providers", data)
        if problems:
            raise ValidationError.from_problems(problems, what)
        return data["providers"]

    def names(self) -> list[str]:
        return sorted(self.entries())

    def get(self, name: str) -> LipsyncProvider:
        """Build provider ``name``.

        :raises ValidationError: unknown provider, unknown type, or an entry its type refuses.
        """
        entries = self.entries()
        entry = entries.get(name)
        if entry is None:
            known = ", ".join(sorted(entries)) or "none"
            raise ValidationError.from_problems(
                [Problem("lipsync.provider", f"unknown provider {name!r} (the providers file {self.path} has: "
                                             f"{known})")])
        factory = self.registry.provider_types.get(entry["type"])
        if factory is None:
            known = ", ".join(sorted(self.registry.provider_types)) or "none"
            raise ValidationError.from_problems(
                [Problem(f"providers.{name}.type", f"unknown provider type {entry['type']!r} (installed: {known})")],
                f"lip-sync providers file {self.path}")
        ctx = ProviderContext(name=name, base_dir=self.path.parent, settings=self.settings, registry=self.registry,
                              assets=self.assets, comfyui=self.comfyui)
        return factory(name, dict(entry), ctx)


def entry_problems(schema: Mapping[str, Any], entry: Mapping[str, Any], provider: str) -> list[Problem]:
    """Validate one provider entry against a type's JSON Schema; fields are named ``providers.<name>.<field>``."""
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(schema)
    problems = []
    for err in validator.iter_errors(entry):
        for p in explain_error(err):
            field = f"providers.{provider}" + ("" if p.field == "(root)" else f".{p.field}")
            problems.append(Problem(field, p.problem))
    return problems
