"""The ``lipsync`` phase: the provider the job names, from the lip-sync providers file.

A provider that is unavailable (program not found, required assets missing, ...) or fails makes the phase
``failed`` with the reason; with ``allow_passthrough`` the run goes on with the video as it was. The output is
checked (exists, decodes, has video) before the phase counts as completed. The manifest's lipsync entry names
the ``provider`` and, when it could not run, the ``reason``.
"""

from __future__ import annotations

from vidax_core import BasePhase
from vidax_core import hookimpl
from vidax_core.errors import InputNotFound
from vidax_core.errors import PhaseFailed
from vidax_core.errors import Problem
from vidax_core.errors import UnsupportedFormat
from vidax_core.errors import ValidationError
from vidax_core.errors import VidaxError
from vidax_core.lipsync import Providers
from vidax_core.media import probe


def providers_of(ctx) -> Providers:
    return Providers(ctx.settings.lipsync_providers, settings=ctx.settings, registry=ctx.registry,
                     assets=getattr(ctx, "assets", None), comfyui=getattr(ctx, "comfyui", None))


class Lipsync(BasePhase):
    name = "lipsync"
    order = 400

    def validate(self, job, ctx):
        try:
            provider = providers_of(ctx).get(job.lipsync.provider)
        except InputNotFound as exc:
            return [Problem("lipsync.provider", exc.message)]
        except ValidationError as exc:
            return [Problem(d["field"], d["problem"]) for d in exc.details or []] or \
                [Problem("lipsync.provider", exc.message)]
        check = getattr(provider, "validate_options", None)
        return list(check(job.lipsync.options)) if check else []

    def required_assets(self, ctx):
        # SPEC: with passthrough allowed, a missing asset makes the provider unavailable at run time instead
        if ctx.job.lipsync.allow_passthrough:
            return []
        return list(providers_of(ctx).get(ctx.job.lipsync.provider).requires_assets)

    def preflight(self, ctx):
        provider = providers_of(ctx).get(ctx.job.lipsync.provider)
        check = getattr(provider, "preflight", None)
        if check is None:
            return
        try:
            check(ctx)  # e.g. a comfyui provider makes sure ComfyUI is up (starting it with auto_start)
        except VidaxError as exc:
            if not ctx.job.lipsync.allow_passthrough:
                raise
            # with passthrough the run may go on without lip-sync; the provider will be unavailable then
            ctx.event("lipsync.preflight_failed", exc.message, {"code": exc.code})

    def run(self, ctx):
        name = ctx.job.lipsync.provider
        ctx.note(provider=name)
        try:
            provider = providers_of(ctx).get(name)
        except (InputNotFound, ValidationError) as exc:
            ctx.note(reason=exc.message)
            raise PhaseFailed(f"lip-sync provider {name!r} cannot be used: {exc.message}",
                              code="LIPSYNC_UNAVAILABLE") from None
        available, reason = provider.availability()
        if not available:
            ctx.note(reason=reason)
            ctx.event("lipsync.unavailable", reason, {"provider": name})
            raise PhaseFailed(f"lip-sync provider {name!r} is unavailable: {reason}", code="LIPSYNC_UNAVAILABLE")
        video = ctx.video_file()
        audio = ctx.inputs.get("audio")
        if video is None or audio is None:
            raise PhaseFailed("lip-sync needs a video and the prepared audio", code="INPUT_NOT_FOUND")
        output = ctx.output("output.mp4")
        output.unlink(missing_ok=True)
        ctx.event("lipsync.running", f"provider {name}", {"provider": name, "video": ctx.relative(video)})
        provider.run(ctx, video, audio, output)
        if not output.is_file() or output.stat().st_size == 0:
            raise PhaseFailed(f"lip-sync provider {name!r} wrote no {ctx.relative(output)}", code="LIPSYNC_FAILED")
        try:
            info = probe(output)
        except UnsupportedFormat as exc:
            raise PhaseFailed(f"lip-sync provider {name!r} wrote an unreadable video: {exc.message}",
                              code="LIPSYNC_FAILED") from None
        if not info.has_video:
            raise PhaseFailed(f"lip-sync provider {name!r} wrote a file without video", code="LIPSYNC_FAILED")
        return {"video": ctx.relative(output), "provider": name}


@hookimpl
def register_phases(register):
    register(Lipsync())
