"""The plugin manager and the registry built from what plugins register.

Builtin plugins are named in :data:`DEFAULT_PLUGINS` as dotted module paths and loaded like any other
plugin; the core imports none of them by name. Third-party plugins come in through the entry-point group
``vidax``. ``VIDAX_DISABLED_PLUGINS`` (comma-separated plugin names: a module path for builtins, the
entry-point name for third parties) switches plugins off; ``VIDAX_LOAD_PLUGINS`` (same form) loads only the
third-party plugins it names. A plugin that fails to load is reported (``PluginManager.vidax_failures`` and
the log) and the others load regardless.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import pluggy
from attrs import define
from attrs import field

from . import hookspecs
from .errors import PluginError
from .models import STANDARD_PHASES

log = logging.getLogger("vidax.plugins")

ENTRY_POINT_GROUP = "vidax"
DEFAULT_PLUGINS: tuple[str, ...] = (
    "vidax_plugins.prepare",
    "vidax_plugins.comfyui_phase",
    "vidax_plugins.stabilize",
    "vidax_plugins.lipsync",
    "vidax_plugins.encode",
    "vidax_plugins.command_provider",
    "vidax_plugins.comfyui_provider",
    "vidax_plugins.file_source",
    "vidax_plugins.http_source",
)

# Tests set this to False (see tests/conftest.py) so a developer's installed plugins do not leak in.
LOAD_ENTRY_POINTS = True


@define
class PluginFailure:
    """A plugin that could not be loaded, and why."""

    name: str
    error: str


def get_plugin_manager(
    *,
    builtins: Iterable[str] = DEFAULT_PLUGINS,
    entry_points: bool | None = None,
    disabled: Iterable[str] | None = None,
    only: Iterable[str] | None = None,
    extra: Iterable[Any] = (),
    env: Mapping[str, str] | None = None,
) -> pluggy.PluginManager:
    """A new plugin manager with the builtins, the entry-point plugins and ``extra`` objects registered.

    :param builtins: dotted module paths of the builtin plugins.
    :param entry_points: load the ``vidax`` entry points (default: :data:`LOAD_ENTRY_POINTS`).
    :param disabled: plugin names not to load (default: ``VIDAX_DISABLED_PLUGINS``).
    :param only: if given, the only third-party plugins to load (default: ``VIDAX_LOAD_PLUGINS``).
    :param extra: plugin objects to register as well (tests, embedding programs).
    """
    env = os.environ if env is None else env
    if disabled is None:
        disabled = _names(env.get("VIDAX_DISABLED_PLUGINS", ""))
    if only is None and env.get("VIDAX_LOAD_PLUGINS") is not None:
        only = _names(env["VIDAX_LOAD_PLUGINS"])
    blocked = set(disabled)
    pm = pluggy.PluginManager("vidax")
    pm.add_hookspecs(hookspecs)
    pm.vidax_failures = []  # type: ignore[attr-defined]
    for name in blocked:
        pm.set_blocked(name)

    for dotted in builtins:
        if dotted in blocked:
            continue
        _register(pm, dotted, lambda dotted=dotted: importlib.import_module(dotted))

    if entry_points if entry_points is not None else LOAD_ENTRY_POINTS:
        wanted = set(only) if only is not None else None
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in blocked or (wanted is not None and ep.name not in wanted):
                continue
            if pm.get_plugin(ep.name) is not None:
                continue
            _register(pm, ep.name, ep.load, dist=getattr(ep, "dist", None))

    for obj in extra:
        pm.register(obj)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements a hook VIDAX does not have: {exc}") from None
    return pm


def _register(pm: pluggy.PluginManager, name: str, load: Callable[[], Any], dist: Any = None) -> None:
    try:
        plugin = load()
        pm.register(plugin, name=name)
        pm.check_pending()
    except Exception as exc:  # a broken plugin must not take the others down
        reason = f"{type(exc).__name__}: {exc}"
        log.error("plugin %s could not be loaded and is switched off: %s", name, reason)
        pm.vidax_failures.append(PluginFailure(name=name, error=reason))
        plugin = pm.get_plugin(name)
        if plugin is not None:
            pm.unregister(plugin)
        return
    if dist is not None:
        pm.vidax_dists = getattr(pm, "vidax_dists", {})  # type: ignore[attr-defined]
        pm.vidax_dists[name] = f"{dist.name} {dist.version}"


def _names(raw: str) -> list[str]:
    return [n.strip() for n in raw.split(",") if n.strip()]


@define
class Registry:
    """What the plugins registered: phases by name, asset sources by scheme, provider types by name."""

    pm: pluggy.PluginManager
    phases: dict[str, Any] = field(factory=dict)
    sources: dict[str, Any] = field(factory=dict)
    provider_types: dict[str, Callable[..., Any]] = field(factory=dict)
    _owners: dict[tuple[str, str], str] = field(factory=dict)

    @classmethod
    def build(cls, pm: pluggy.PluginManager) -> Registry:
        """Collect every registration, reporting a duplicate name as a :class:`PluginError`."""
        reg = cls(pm)
        for impl in pm.hook.register_phases.get_hookimpls():
            impl.function(register=reg._adder("phase", impl.plugin_name, reg._add_phase))
        for impl in pm.hook.register_asset_sources.get_hookimpls():
            impl.function(register=reg._adder("asset source", impl.plugin_name, reg._add_source))
        for impl in pm.hook.register_lipsync_provider_types.get_hookimpls():
            impl.function(register=reg._adder("lip-sync provider type", impl.plugin_name, reg._add_type))
        return reg

    # one register callable per plugin, so a duplicate can name both plugins
    def _adder(self, kind: str, plugin: str, add: Callable[..., None]) -> Callable[..., None]:
        def register(*args: Any, **kwargs: Any) -> None:
            add(plugin, *args, **kwargs)

        register.__doc__ = f"Register a {kind} of plugin {plugin}."
        return register

    def _claim(self, kind: str, key: str, plugin: str) -> None:
        owner = self._owners.get((kind, key))
        if owner is not None:
            raise PluginError(f"{kind} {key!r} is registered twice: by plugin {owner} and by plugin {plugin}")
        self._owners[(kind, key)] = plugin

    def _add_phase(self, plugin: str, phase: Any) -> None:
        for attr in ("name", "order", "enabled", "validate", "preflight", "run", "allow_passthrough"):
            if not hasattr(phase, attr):
                raise PluginError(f"plugin {plugin} registered a phase without {attr!r}: {phase!r}")
        self._claim("phase", phase.name, plugin)
        self.phases[phase.name] = phase

    def _add_source(self, plugin: str, source: Any) -> None:
        schemes = tuple(getattr(source, "schemes", ()))
        if not schemes or not callable(getattr(source, "fetch", None)):
            raise PluginError(f"plugin {plugin} registered an asset source without schemes or fetch()")
        for scheme in schemes:
            self._claim("asset source for scheme", scheme.lower(), plugin)
            self.sources[scheme.lower()] = source

    def _add_type(self, plugin: str, name: str, factory: Callable[..., Any]) -> None:
        self._claim("lip-sync provider type", name, plugin)
        self.provider_types[name] = factory

    # ---------------------------------------------------------------- queries

    def pipeline(self) -> list[tuple[str, Any | None]]:
        """Every phase in order: the standard five (``None`` where no plugin provides one) and any others."""
        order = {name: o for name, o in STANDARD_PHASES}
        for name, phase in self.phases.items():
            order[name] = int(phase.order)
        return [(name, self.phases.get(name)) for name in sorted(order, key=lambda n: (order[n], n))]

    def source_for(self, url: str) -> Any | None:
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        return self.sources.get(scheme)

    def plugin_names(self) -> list[str]:
        return sorted(name for name, plugin in self.pm.list_name_plugin() if plugin is not None)

    def describe(self) -> dict[str, Any]:
        """What is loaded, for ``vidax plugins`` and start-up logs: plugins with their hooks, what they
        registered, and the plugins that failed to load."""
        owners: dict[str, list[str]] = {}
        for (kind, key), plugin in self._owners.items():
            owners.setdefault(plugin, []).append(f"{kind} {key}")
        dists = getattr(self.pm, "vidax_dists", {})
        plugins = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda x: str(x[0])):
            if plugin is None:
                continue
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            plugins.append({"name": name, "package": dists.get(name), "hooks": hooks,
                            "registers": sorted(owners.get(name, []))})
        return {
            "plugins": plugins,
            "phases": [name for name, phase in self.pipeline() if phase is not None],
            "asset_schemes": sorted(self.sources),
            "lipsync_provider_types": sorted(self.provider_types),
            "failures": [{"name": f.name, "error": f.error} for f in getattr(self.pm, "vidax_failures", [])],
        }
