"""The plugin manager: builtins, duplicates, misspelled hooks, disabling, and broken entry-point plugins."""

from __future__ import annotations

import pytest
from helpers import simple_job

import vidax_core.plugins
from vidax_core import BasePhase
from vidax_core import Vidax
from vidax_core import hookimpl
from vidax_core.errors import PluginError
from vidax_core.errors import ValidationError
from vidax_core.plugins import DEFAULT_PLUGINS
from vidax_core.plugins import Registry
from vidax_core.plugins import get_plugin_manager


class Phase(BasePhase):
    def __init__(self, name, order=450):
        self.name = name
        self.order = order

    def run(self, ctx):
        return {}


def phase_plugin(plugin_name, *phase_names):
    class Plugin:
        __name__ = plugin_name

        @hookimpl
        def register_phases(self, register):
            for n in phase_names:
                register(Phase(n))

    return Plugin()


class FakeEntryPoint:
    def __init__(self, name, load):
        self.name = name
        self._load = load
        self.dist = None

    def load(self):
        return self._load()


class EntryPoints(list):
    """The fake entry points, and the groups they were asked for."""

    def __init__(self):
        super().__init__()
        self.groups = []


@pytest.fixture
def entry_points(monkeypatch):
    """Replace the entry points vidax_core.plugins sees with a list the test sets."""
    eps = EntryPoints()
    groups = eps.groups

    def fake(*, group=None, **kw):
        groups.append(group)
        return list(eps)

    monkeypatch.setattr(vidax_core.plugins.metadata, "entry_points", fake)
    return eps


# --------------------------------------------------------------------------- builtins


def test_builtins_load_through_default_plugins():
    pm = get_plugin_manager(env={})
    for dotted in DEFAULT_PLUGINS:
        assert pm.get_plugin(dotted) is not None, dotted
    reg = Registry.build(pm)
    assert {"prepare", "encode"} <= set(reg.phases)
    assert {"http", "https", "file"} <= set(reg.sources)
    assert pm.vidax_failures == []
    names = [n for n, _ in reg.pipeline()]
    assert names[:5] == ["prepare", "comfyui", "stabilize", "lipsync", "encode"]


def test_without_builtins_no_phase_is_provided():
    pm = get_plugin_manager(builtins=(), env={})
    reg = Registry.build(pm)
    assert reg.phases == {}
    assert reg.pipeline() == [(n, None) for n in ("prepare", "comfyui", "stabilize", "lipsync", "encode")]


def test_builtin_that_fails_to_import_is_recorded_and_the_others_load():
    pm = get_plugin_manager(builtins=("vidax_plugins.prepare", "vidax_plugins.no_such_module"), env={})
    assert pm.get_plugin("vidax_plugins.prepare") is not None
    assert [f.name for f in pm.vidax_failures] == ["vidax_plugins.no_such_module"]
    assert "ModuleNotFoundError" in pm.vidax_failures[0].error


def test_every_hook_has_a_documented_spec():
    pm = get_plugin_manager(builtins=(), env={})
    hooks = {name for name in dir(pm.hook) if not name.startswith("_")}
    assert {"register_phases", "before_phase", "after_phase", "register_asset_sources",
            "register_lipsync_provider_types"} <= hooks
    for name in hooks:
        spec = getattr(pm.hook, name).spec
        assert spec is not None and (spec.function.__doc__ or "").strip(), name


# --------------------------------------------------------------------------- duplicates and misspellings


def test_duplicate_phase_from_two_plugins_names_both():
    pm = get_plugin_manager(builtins=(), env={},
                            extra=[phase_plugin("acme_tint", "tint"), phase_plugin("zeta_tint", "tint")])
    with pytest.raises(PluginError) as ei:
        Registry.build(pm)
    assert "tint" in ei.value.message
    assert "acme_tint" in ei.value.message
    assert "zeta_tint" in ei.value.message


def test_third_party_phase_named_like_a_builtin_is_refused(settings):
    pm = get_plugin_manager(env={}, extra=[phase_plugin("my_prepare", "prepare")])
    with pytest.raises(PluginError) as ei:
        Vidax(settings, plugin_manager=pm, executor="inline")
    assert "vidax_plugins.prepare" in ei.value.message
    assert "my_prepare" in ei.value.message


def test_misspelled_hook_fails_check_pending():
    class Typo:
        __name__ = "typo_plugin"

        @hookimpl
        def register_phase(self, register):  # register_phases misspelled
            register(Phase("x"))

    with pytest.raises(PluginError) as ei:
        get_plugin_manager(builtins=(), env={}, extra=[Typo()])
    assert "register_phase" in ei.value.message


def test_phase_without_the_required_interface_is_refused():
    class Bad:
        __name__ = "bad_phase_plugin"

        @hookimpl
        def register_phases(self, register):
            register(object())

    pm = get_plugin_manager(builtins=(), env={}, extra=[Bad()])
    with pytest.raises(PluginError) as ei:
        Registry.build(pm)
    assert "bad_phase_plugin" in ei.value.message


# --------------------------------------------------------------------------- disabling


def test_vidax_disabled_plugins_blocks_a_builtin():
    pm = get_plugin_manager(env={"VIDAX_DISABLED_PLUGINS": "vidax_plugins.http_source, vidax_plugins.file_source"})
    assert pm.get_plugin("vidax_plugins.http_source") is None
    assert pm.get_plugin("vidax_plugins.file_source") is None
    assert pm.is_blocked("vidax_plugins.http_source")
    reg = Registry.build(pm)
    assert "http" not in reg.sources and "file" not in reg.sources
    assert "prepare" in reg.phases


def test_disabled_argument_blocks_a_builtin_and_jobs_notice(settings):
    pm = get_plugin_manager(env={}, disabled=["vidax_plugins.encode"])
    assert pm.get_plugin("vidax_plugins.encode") is None
    vx = Vidax(settings, plugin_manager=pm, executor="inline")
    try:
        with pytest.raises(ValidationError) as ei:
            vx.validate(simple_job())
        assert [d["field"] for d in ei.value.details] == ["encode"]
    finally:
        vx.close()


def test_disabled_argument_wins_over_the_environment():
    pm = get_plugin_manager(env={"VIDAX_DISABLED_PLUGINS": "vidax_plugins.prepare"}, disabled=[])
    assert pm.get_plugin("vidax_plugins.prepare") is not None


# --------------------------------------------------------------------------- entry points


def test_broken_entry_point_plugin_is_recorded_and_the_others_load(entry_points):
    def broken():
        raise ImportError("No module named 'torch'")

    good = phase_plugin("good_plugin", "tint")
    entry_points.extend([FakeEntryPoint("broken", broken), FakeEntryPoint("good", lambda: good)])
    pm = get_plugin_manager(entry_points=True, env={})
    assert entry_points.groups == ["vidax"]
    assert [f.name for f in pm.vidax_failures] == ["broken"]
    assert "ImportError" in pm.vidax_failures[0].error
    assert "torch" in pm.vidax_failures[0].error
    assert pm.get_plugin("broken") is None
    assert pm.get_plugin("good") is good
    reg = Registry.build(pm)
    assert "tint" in reg.phases
    for dotted in DEFAULT_PLUGINS:
        assert pm.get_plugin(dotted) is not None


def test_entry_point_plugin_with_a_misspelled_hook_is_switched_off(entry_points):
    class Typo:
        __name__ = "typo"

        @hookimpl
        def befor_phase(self, ctx, phase):
            pass

    entry_points.extend([FakeEntryPoint("typo", Typo), FakeEntryPoint("good", lambda: phase_plugin("g", "tint"))])
    pm = get_plugin_manager(entry_points=True, env={})
    assert [f.name for f in pm.vidax_failures] == ["typo"]
    assert pm.get_plugin("typo") is None
    assert pm.get_plugin("good") is not None


def test_entry_points_are_not_loaded_when_switched_off(entry_points):
    entry_points.append(FakeEntryPoint("good", lambda: phase_plugin("g", "tint")))
    pm = get_plugin_manager(entry_points=False, env={})
    assert pm.get_plugin("good") is None
    assert entry_points.groups == []


def test_entry_point_disabled_by_name(entry_points):
    entry_points.append(FakeEntryPoint("good", lambda: phase_plugin("g", "tint")))
    pm = get_plugin_manager(entry_points=True, env={"VIDAX_DISABLED_PLUGINS": "good"})
    assert pm.get_plugin("good") is None
    assert pm.vidax_failures == []


def test_vidax_load_plugins_allow_list(entry_points):
    entry_points.extend([FakeEntryPoint("one", lambda: phase_plugin("p1", "one")),
                         FakeEntryPoint("two", lambda: phase_plugin("p2", "two"))])
    pm = get_plugin_manager(entry_points=True, env={"VIDAX_LOAD_PLUGINS": "two"})
    assert pm.get_plugin("one") is None
    assert pm.get_plugin("two") is not None
