"""The hooks a VIDAX plugin can implement.

A plugin is a module (or object) with functions marked ``@vidax_core.hookimpl`` whose names are those below.
Builtin plugins (``vidax_plugins``) use exactly these hooks; third-party packages are found through the
entry-point group ``vidax``. Implementations may accept a subset of a hook's arguments, and hooks only ever
grow new arguments, so a plugin written today keeps working.

Registries use a callback: the core passes ``register`` and a plugin calls it once per thing it adds.
Duplicate names are reported as a :class:`~vidax_core.errors.PluginError` naming both plugins.
See ``docs/plugins.md`` for examples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    from .models import PhaseState
    from .phases import Phase
    from .phases import PhaseContext

hookspec = pluggy.HookspecMarker("vidax")
hookimpl = pluggy.HookimplMarker("vidax")


# --------------------------------------------------------------------------- phases


@hookspec
def register_phases(register: Callable[[Phase], None]) -> None:
    """Add pipeline phases.

    Call ``register(phase)`` once per phase. A phase is an object with the attributes and methods of
    :class:`vidax_core.phases.Phase` (subclassing :class:`vidax_core.phases.BasePhase` gives the defaults):
    ``name``, ``order``, ``enabled(job)``, ``validate(job, ctx)``, ``preflight(ctx)``, ``run(ctx)`` and
    ``allow_passthrough(job)``. The five phases of SPEC.md are ``prepare`` (100), ``comfyui`` (200),
    ``stabilize`` (300), ``lipsync`` (400) and ``encode`` (500); a new phase picks an ``order`` between them.

    :param register: call with each phase object; a second phase of the same name is an error.
    :return: nothing; the return value is ignored.

    .. versionadded:: 0.1
    """


@hookspec
def before_phase(ctx: PhaseContext, phase: Phase) -> None:
    """Called by the runner right before ``phase.run(ctx)``, after the phase is marked ``running``.

    For cross-cutting work such as metrics or notifications. An exception raised here fails the phase.

    :param ctx: the phase's context (run id, workdir, job, event sink).
    :param phase: the phase about to run.
    :return: nothing; the return value is ignored.

    .. versionadded:: 0.1
    """


@hookspec
def after_phase(ctx: PhaseContext, phase: Phase, state: PhaseState) -> None:
    """Called by the runner after a phase has ended (``completed`` or ``failed``) and the manifest says so.

    Exceptions raised here are logged and otherwise ignored: the phase's outcome is already recorded.

    :param ctx: the phase's context.
    :param phase: the phase that ran.
    :param state: its state as recorded (``status``, ``outputs``, ``error``).
    :return: nothing; the return value is ignored.

    .. versionadded:: 0.1
    """


# --------------------------------------------------------------------------- asset sources


@hookspec
def register_asset_sources(register: Callable[..., None]) -> None:
    """Add sources that fetch URLs of given schemes (assets of the asset manifest, URL inputs of a job).

    Call ``register(source)`` once per source. A source has ``schemes`` (a tuple such as
    ``("http", "https")``) and a method::

        fetch(url, dest, *, resume_from=0, validator=None, headers=None, progress=None, on_validator=None) -> int

    which writes the bytes at ``url`` into ``dest`` (a binary file object opened for writing, positioned at
    ``resume_from``) and returns the file's length afterwards.

    * ``resume_from`` > 0: the first ``resume_from`` bytes are already in ``dest``; continue after them when the
      source can (HTTP ``Range``), else ``dest.seek(0)``, ``dest.truncate()`` and write everything.
    * ``validator``: what ``on_validator`` reported when the partial file was begun (HTTP: ETag or
      Last-Modified, sent as ``If-Range``); when the resource changed, start over.
    * ``on_validator(value)``: call once the source knows the resource's version, before writing bytes.
    * ``headers``: extra request headers from the asset manifest (secrets: never log them).
    * ``progress(done, total_or_None)``: call as bytes arrive.

    Raise :class:`vidax_core.errors.FetchError` on failure, with ``transient=True`` when a retry may help
    (connection lost, timeout, HTTP 408/429/5xx); the installer retries those with backoff, resuming.
    A second source for an already registered scheme is an error.

    :param register: call with each source object.
    :return: nothing; the return value is ignored.

    .. versionadded:: 0.1
    """


# --------------------------------------------------------------------------- lip-sync providers


@hookspec
def register_lipsync_provider_types(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Add lip-sync provider types, the ``type`` values of ``config/lipsync.providers.json``.

    Call ``register(type_name, factory)`` once per type. ``factory(name, entry, ctx)`` builds a provider from
    its entry in the providers file: ``name`` is the provider's name, ``entry`` its JSON object (``type``
    included), ``ctx`` a :class:`vidax_core.lipsync.ProviderContext` (``base_dir`` for relative paths,
    ``settings``, ``registry``, ``assets``, ``comfyui``). It raises ``ValidationError`` naming
    ``providers.<name>.<field>`` when the entry is invalid.

    The provider has ``name``, ``requires_assets`` (asset-manifest names), ``availability()`` returning
    ``(True, None)`` or ``(False, reason)``, and ``run(ctx, video, audio, output)`` writing ``output`` (an MP4)
    from the ``video`` and ``audio`` paths with the phase's :class:`~vidax_core.phases.PhaseContext`. Optional:
    ``validate_options(options)`` returning problems with a job's ``lipsync.options`` (400 at ``POST /jobs``),
    and ``preflight(ctx)`` for the synchronous checks at ``POST /jobs/{id}/start`` (e.g. ensure ComfyUI).

    :param register: call with each type name and its factory.
    :return: nothing; the return value is ignored.

    .. versionadded:: 0.1
    """
