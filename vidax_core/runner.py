"""The runner: one run's phases in order, and the status model of SPEC.md.

* a phase already ``completed`` (a resumed run) is not run again, and its outputs are kept;
* a disabled phase is ``skipped``;
* a failed phase fails the run, and later phases stay ``queued`` — unless the phase allows passthrough
  (``allow_passthrough``), in which case it is ``failed`` and the run goes on with the video as it was;
* a run that completes ends ``success``, or ``partial`` when it was resumed.

The runner knows phases only as what plugins registered, and it is handed a run id: everything else comes
from the run's folder, so any process that sees the runs folder can execute a run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import VidaxError
from .models import ErrorInfo
from .models import Manifest
from .models import PhaseState
from .phases import PhaseContext
from .plugins import Registry
from .store import RunStore

log = logging.getLogger("vidax.runner")


def output_exists(workdir: Path, value: str) -> bool:
    """Whether a phase output names a file in the run folder (a ``%06d`` pattern: its first frame)."""
    if value.startswith(("/", "..")):
        return False
    rel = value % 1 if "%" in value else value
    try:
        return (workdir / rel).is_file()
    except (OSError, TypeError, ValueError):
        return False


class Runner:
    """Executes runs; holds no per-run state between calls."""

    def __init__(self, store: RunStore, registry: Registry, settings: Settings, comfyui: Any = None,
                 assets: Any = None):
        self.store = store
        self.registry = registry
        self.settings = settings
        self.comfyui = comfyui
        self.assets = assets

    def context(self, manifest: Manifest, phase_name: str) -> PhaseContext:
        """The context of ``phase_name`` in ``manifest``'s run: paths, job, settings, the event sink."""
        run_id = manifest.run_id
        previous = {}
        for name, state in manifest.phases.items():
            if name == phase_name:
                break
            if state.status == "completed" and state.outputs:
                previous[name] = dict(state.outputs)

        def emit(event: str, **kw: Any) -> None:
            self.store.emit(run_id, event, **kw)

        return PhaseContext(run_id=run_id, workdir=self.store.workdir(run_id), phase=phase_name, job=manifest.job,
                            settings=self.settings, registry=self.registry, emit=emit, previous=previous,
                            comfyui=self.comfyui, assets=self.assets)

    def run(self, run_id: str) -> Manifest:
        """Execute the run ``run_id``, which the caller has marked ``running`` and holds the lock of."""
        manifest = self.store.load_manifest(run_id)
        job = manifest.job
        leftovers = self.store.remove_partials(run_id)
        if leftovers:
            self.store.emit(run_id, "run.cleaned", message="removed temp files of an interrupted attempt",
                            data={"files": leftovers})
        pipeline = dict(self.registry.pipeline())
        for name, state in manifest.phases.items():
            if state.status == "completed":
                continue
            if state.status == "skipped":
                if state.finished_at is None:  # marked at creation: say so when the run reaches it
                    self._finish_phase(manifest, name, state, "skipped")
                    self.store.emit(run_id, "phase.skipped", phase=name, message="disabled by the job")
                continue
            phase = pipeline.get(name)
            enabled = phase.enabled(job) if phase is not None else job.section_enabled(name)
            if not enabled:
                self._finish_phase(manifest, name, state, "skipped")
                self.store.emit(run_id, "phase.skipped", phase=name, message="disabled by the job")
                continue
            ok = self._run_phase(manifest, name, state, phase)
            if ok:
                continue
            if phase is not None and phase.allow_passthrough(job):
                self.store.emit(run_id, "phase.passthrough", phase=name,
                                message="the phase failed; the run goes on with the video as it was")
                continue
            return self._end(manifest, failed=state.error)
        return self._end(manifest, failed=None)

    # ---------------------------------------------------------------- one phase

    def _run_phase(self, manifest: Manifest, name: str, state: PhaseState, phase: Any) -> bool:
        run_id = manifest.run_id
        state.status = "running"
        state.started_at = self.store.now()
        state.finished_at = None
        state.error = None
        state.outputs = {}
        self.store.save_manifest(manifest)
        self.store.emit(run_id, "phase.started", phase=name)
        t0 = time.monotonic()
        ctx = self.context(manifest, name)
        try:
            if phase is None:
                raise VidaxError(f"no installed plugin provides the phase {name!r}")
            self.registry.pm.hook.before_phase(ctx=ctx, phase=phase)
            outputs = phase.run(ctx) or {}
        except Exception as exc:
            error = ErrorInfo.from_exception(exc)
            data: dict[str, Any] = {"code": error.code, "seconds": round(time.monotonic() - t0, 3)}
            if isinstance(exc, VidaxError):
                if exc.details is not None:
                    data["details"] = exc.details  # e.g. ffmpeg's command line and stderr tail
            else:
                log.exception("run %s: phase %s raised an unexpected error", run_id, name)
                error = ErrorInfo(code="INTERNAL_ERROR", message=f"{type(exc).__name__}: {exc}")
                data["code"] = error.code
            state.error = error
            self._apply_notes(state, ctx)
            self._finish_phase(manifest, name, state, "failed")
            self.store.emit(run_id, "phase.failed", phase=name, message=error.message, data=data)
            self._after(ctx, phase, state)
            return False
        self._apply_notes(state, ctx)
        state.outputs = dict(outputs)
        state.files = [v for v in state.outputs.values() if isinstance(v, str) and output_exists(ctx.workdir, v)]
        self._finish_phase(manifest, name, state, "completed")
        self.store.emit(run_id, "phase.completed", phase=name,
                        data={"outputs": state.outputs, "seconds": round(time.monotonic() - t0, 3)})
        self._after(ctx, phase, state)
        return True

    @staticmethod
    def _apply_notes(state: PhaseState, ctx: PhaseContext) -> None:
        if "provider" in ctx.notes:
            state.provider = ctx.notes["provider"]
        if "reason" in ctx.notes:
            state.reason = ctx.notes["reason"]

    def _after(self, ctx: PhaseContext, phase: Any, state: PhaseState) -> None:
        if phase is None:
            return
        try:
            self.registry.pm.hook.after_phase(ctx=ctx, phase=phase, state=state)
        except Exception:
            log.exception("run %s: an after_phase hook failed for %s", ctx.run_id, ctx.phase)

    def _finish_phase(self, manifest: Manifest, name: str, state: PhaseState, status: str) -> None:
        state.status = status
        state.finished_at = self.store.now()
        if status == "skipped":
            state.started_at = None
        self.store.save_manifest(manifest)

    # ---------------------------------------------------------------- the end

    def _end(self, manifest: Manifest, failed: ErrorInfo | None) -> Manifest:
        run_id = manifest.run_id
        final = self.store.final_path(run_id)
        if failed is None and not final.is_file():
            failed = ErrorInfo(code="OUTPUT_WRITE_FAILED", message="every phase ended but final.mp4 was not written")
        if failed is not None:
            manifest.run_status = "failed"
            manifest.exit_status = "failed"
            manifest.error = failed
            manifest.outputs["final"] = None
            self.store.save_manifest(manifest)
            self.store.emit(run_id, "run.failed", message=failed.message, data={"code": failed.code})
            return manifest
        manifest.run_status = "completed"
        manifest.exit_status = "partial" if manifest.resumed else "success"
        manifest.error = None
        manifest.outputs["final"] = str(final)
        self.store.save_manifest(manifest)
        self.store.emit(run_id, "run.completed", data={"exit_status": manifest.exit_status, "final": str(final)})
        return manifest
