"""``Vidax``: the facade a program or the HTTP app holds.

>>> from vidax_core import Vidax, load_settings
>>> vx = Vidax(load_settings())                        # doctest: +SKIP
>>> created = vx.create_run({"inputs": {...}})          # doctest: +SKIP
>>> vx.start_run(created["run_id"])                     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pluggy

from .assets import AssetManager
from .comfyui import ComfyUIProcess
from .config import Settings
from .converters import converter
from .errors import InputNotFound
from .errors import OutputWriteFailed
from .errors import Problem
from .errors import RunInProgress
from .errors import ValidationError
from .errors import VidaxError
from .executor import Executor
from .executor import InlineExecutor
from .executor import ThreadPoolExecutor
from .locks import FileRunLocks
from .locks import RunLocks
from .media import check_audio
from .models import ErrorInfo
from .models import Manifest
from .models import PhaseState
from .phases import ValidationContext
from .plugins import Registry
from .plugins import get_plugin_manager
from .runner import Runner
from .runner import output_exists
from .schema import load_schema
from .store import RunStore
from .store import utcnow
from .urls import is_url
from .validation import validate_job

log = logging.getLogger("vidax")

ExecutorFactory = Callable[[Callable[[str], None]], Executor]


class Vidax:
    """One VIDAX instance: settings, plugins, the run store, the runner and an executor.

    :param settings: see :func:`vidax_core.config.load_settings`.
    :param plugin_manager: defaults to :func:`vidax_core.plugins.get_plugin_manager`.
    :param executor: a factory taking the function that executes one run id; default: a thread pool of
        ``settings.executor_threads``. ``"inline"`` runs each run inside ``start_run``.
    :param locks: run ownership; default: file locks in the runs folder.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        plugin_manager: pluggy.PluginManager | None = None,
        executor: ExecutorFactory | str | None = None,
        locks: RunLocks | None = None,
        clock: Callable[[], Any] = utcnow,
    ):
        self.settings = settings
        self.pm = plugin_manager or get_plugin_manager()
        self.registry = Registry.build(self.pm)
        self.store = RunStore(settings.runs_dir, clock=clock)
        self.locks = locks or FileRunLocks(self.store.runs_dir)
        self.comfyui = ComfyUIProcess(settings.comfyui, self.store.runs_dir / ".comfyui")
        self.assets = AssetManager(settings.assets_config, self.registry)
        self.runner = Runner(self.store, self.registry, settings, comfyui=self.comfyui, assets=self.assets)
        if executor == "inline":
            self.executor: Executor = InlineExecutor(self._execute)
        elif callable(executor):
            self.executor = executor(self._execute)
        else:
            self.executor = ThreadPoolExecutor(self._execute, threads=settings.executor_threads)

    # ---------------------------------------------------------------- jobs

    def job_schema(self) -> dict[str, Any]:
        """The job JSON Schema (``docs/job.schema.json``)."""
        return load_schema("job")

    def validate(self, raw: Any):
        """Validate a job as sent; returns the normalized :class:`~vidax_core.models.Job` or raises."""
        return validate_job(raw, ValidationContext(settings=self.settings, registry=self.registry,
                                                   assets=self.assets, comfyui=self.comfyui))

    def create_run(self, raw: Any) -> dict[str, Any]:
        """Validate ``raw`` and create its run (``queued``).

        :raises ValidationError: 400, every problem listed.
        :raises UnsupportedFormat: 415, the audio.
        """
        job = self.validate(raw)
        phases = []
        for name, phase in self.registry.pipeline():
            enabled = phase.enabled(job) if phase is not None else job.section_enabled(name)
            state = PhaseState(status="queued" if enabled else "skipped")
            if name == "lipsync":
                state.provider = job.lipsync.provider if job.lipsync.enable else None
            phases.append((name, state))
        manifest = self.store.create(job, phases)
        log.info("run %s created", manifest.run_id)
        return {"run_id": manifest.run_id, "status": manifest.run_status,
                "manifest": str(Path(manifest.workdir) / "manifest.json"), "workdir": manifest.workdir}

    def start_run(self, run_id: str) -> dict[str, Any]:
        """Check and start (or resume) a run, and hand it to the executor.

        :raises RunNotFound: 404.
        :raises RunInProgress: 409, the run is running here or in another process.
        :raises OutputWriteFailed: 409, ``final.mp4`` exists.
        :raises VidaxError: whatever a phase's preflight refuses with (assets, ComfyUI, the audio).
        """
        self.store.require(run_id)
        if not self.locks.acquire(run_id):
            raise RunInProgress(f"run {run_id} is running")
        try:
            manifest = self.store.load_manifest(run_id)
            if manifest.run_status == "running":  # we hold the lock, so its former owner is gone
                manifest = self._mark_interrupted(manifest)
            if self.store.final_path(run_id).exists():
                raise OutputWriteFailed(f"run {run_id} has a final.mp4 already; it is not overwritten")
            lost = self._forget_lost_outputs(manifest)  # before the preflight: those phases are pending again
            self._preflight(manifest)
            resumed = manifest.attempt > 0
            manifest.attempt += 1
            manifest.resumed = manifest.resumed or resumed
            manifest.run_status = "running"
            manifest.exit_status = None
            manifest.error = None
            manifest.outputs["final"] = None
            for state in manifest.phases.values():
                if state.status not in ("completed", "skipped"):
                    state.status, state.started_at, state.finished_at, state.error = "queued", None, None, None
            self.store.save_manifest(manifest)
            if lost:
                self.store.emit(run_id, "phase.outputs_lost", phase=lost[0], data={"rerun": lost},
                                message="its outputs are gone: it runs again, and so do the phases after it")
            self.store.emit(run_id, "run.started", data={"attempt": manifest.attempt})
            if resumed:
                kept = [n for n, s in manifest.phases.items() if s.status == "completed"]
                self.store.emit(run_id, "run.resumed", message="phases completed before are kept",
                                data={"kept": kept})
        except BaseException:
            self.locks.release(run_id)
            raise
        try:
            self.executor.submit(run_id)
        except Exception as exc:
            log.exception("run %s: the executor refused it", run_id)
            self._fail_run(run_id, ErrorInfo("INTERNAL_ERROR", f"the executor refused the run: {exc}"))
            self.locks.release(run_id)
            raise VidaxError("the run could not be handed to the executor") from None
        return {"ok": True, "run_id": run_id, "run_status": "running"}

    @staticmethod
    def _forget_lost_outputs(manifest: Manifest) -> list[str]:
        """A completed phase whose output files are gone (someone deleted ``final.mp4`` to have it re-encoded,
        or cleaned a folder) runs again, and so does every phase after it: they were made from it. Returns the
        phases set back to ``queued``."""
        wd = Path(manifest.workdir)
        lost: list[str] = []
        for name, state in manifest.phases.items():
            if state.status != "completed":
                continue
            if lost or any(not output_exists(wd, f) for f in state.files):
                lost.append(name)
                state.status, state.outputs, state.files = "queued", {}, []
        return lost

    def _preflight(self, manifest: Manifest) -> None:
        job = manifest.job
        if not is_url(job.inputs.audio):
            if not Path(job.inputs.audio).is_file() and manifest.phases["prepare"].status != "completed":
                raise InputNotFound(f"inputs.audio: {job.inputs.audio} no longer exists")
            if Path(job.inputs.audio).is_file():
                check_audio(job.inputs.audio)
        pending = []
        for name, phase in self.registry.pipeline():
            state = manifest.phases.get(name)
            if phase is None or state is None or state.status in ("completed", "skipped"):
                continue
            if phase.enabled(job):
                pending.append((phase, self.runner.context(manifest, name)))
        needed = []
        for phase, ctx in pending:
            if hasattr(phase, "required_assets"):
                needed.extend(phase.required_assets(ctx) or [])
        self.assets.require(needed)  # every asset first: a missing model refuses the start before ComfyUI starts
        for phase, ctx in pending:
            phase.preflight(ctx)

    def execute_run(self, run_id: str) -> None:
        """Execute a run that ``start_run`` marked running — the entry point of a worker process or machine
        that sees the same runs folder (a distributed executor hands it the run id, nothing else).

        Takes the run's lock unless this process holds it already (the embedded executor's case).

        :raises RunInProgress: another process owns the run.
        """
        if not self.locks.held_here(run_id) and not self.locks.acquire(run_id):
            raise RunInProgress(f"run {run_id} is owned by another process")
        self._execute(run_id)

    def _execute(self, run_id: str) -> None:
        """Execute one run (the executor calls this); the caller holds its lock, which is released at the end."""
        try:
            self.runner.run(run_id)
        except Exception as exc:
            log.exception("run %s failed with an internal error", run_id)
            self._fail_run(run_id, ErrorInfo("INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"))
        finally:
            self.locks.release(run_id)

    def _fail_run(self, run_id: str, error: ErrorInfo) -> None:
        try:
            manifest = self.store.load_manifest(run_id)
            for state in manifest.phases.values():
                if state.status == "running":
                    state.status, state.error, state.finished_at = "failed", error, self.store.now()
            manifest.run_status, manifest.exit_status, manifest.error = "failed", "failed", error
            self.store.save_manifest(manifest)
            self.store.emit(run_id, "run.failed", message=error.message, data={"code": error.code})
        except Exception:
            log.exception("run %s: could not record its failure", run_id)

    # ---------------------------------------------------------------- reading

    def status(self, run_id: str) -> dict[str, Any]:
        """The run's status as ``GET /jobs/{id}`` shows it (built from the manifest file as it is: the hot
        path of polling clients, so the job is not structured into models here)."""
        m = self.store.read_manifest_raw(run_id)
        if m.get("run_status") == "running" and not self.locks.held_here(run_id):
            m = converter.unstructure(self._load_checked(run_id))
        final = (m.get("outputs") or {}).get("final")
        phases = dict(m["phases"])
        return {
            "ok": True,
            "run_id": m["run_id"],
            "run_status": m["run_status"],
            "exit_status": m["exit_status"],
            "phases": phases,
            "manifest": str(Path(m["workdir"]) / "manifest.json"),
            "workdir": m["workdir"],
            "final": final if final and os.path.isfile(final) else None,
            "error": m.get("error"),
            "attempt": m.get("attempt", 0),
            "resumed": m.get("resumed", False),
            "created_at": m["created_at"],
            "updated_at": m["updated_at"],
        }

    def manifest_path(self, run_id: str) -> Path:
        self._load_checked(run_id)
        return self.store.manifest_path(run_id)

    def final_path(self, run_id: str) -> Path:
        """The run's ``final.mp4``.

        :raises RunNotFound: unknown run. :raises InputNotFound: the run has no final.mp4 (yet).
        """
        self.store.require(run_id)
        path = self.store.final_path(run_id)
        if not path.is_file():
            raise InputNotFound(f"run {run_id} has no final.mp4 (yet): see GET /jobs/{run_id}")
        return path

    def logs_path(self, run_id: str) -> Path:
        return self.store.events_path(run_id)

    def _load_checked(self, run_id: str) -> Manifest:
        """Load a manifest; a ``running`` run whose owner is gone is marked interrupted first."""
        manifest = self.store.load_manifest(run_id)
        if manifest.run_status == "running" and not self.locks.held_here(run_id):
            if self.locks.acquire(run_id):
                try:
                    manifest = self.store.load_manifest(run_id)
                    if manifest.run_status == "running":
                        manifest = self._mark_interrupted(manifest)
                finally:
                    self.locks.release(run_id)
        return manifest

    def _mark_interrupted(self, manifest: Manifest) -> Manifest:
        """Record that the process running ``manifest``'s run died (the caller holds the run's lock)."""
        error = ErrorInfo("RUN_INTERRUPTED", "the process running this run ended before the run did; "
                                             "start the run again to resume it")
        for state in manifest.phases.values():
            if state.status == "running":
                state.status, state.error, state.finished_at = "failed", error, self.store.now()
        manifest.run_status, manifest.exit_status, manifest.error = "failed", "failed", error
        self.store.save_manifest(manifest)
        self.store.emit(manifest.run_id, "run.failed", message=error.message, data={"code": error.code})
        log.warning("run %s was interrupted (its owner is gone) and is marked failed", manifest.run_id)
        return manifest

    def recover_interrupted(self) -> list[str]:
        """Mark every ``running`` run whose owner is gone as failed (``RUN_INTERRUPTED``); returns their ids."""
        found = []
        self.store.remove_stale_creations()
        for run_id in self.store.list_runs():
            try:
                before = self.store.load_manifest(run_id).run_status
                if before == "running" and self._load_checked(run_id).run_status == "failed":
                    found.append(run_id)
            except VidaxError:
                continue
            except Exception:
                log.exception("run %s: could not check it for interruption", run_id)
        return found

    # ---------------------------------------------------------------- assets

    def asset_status(self) -> dict[str, Any]:
        """Every asset's status (``GET /install/status``); never downloads.

        :raises InputNotFound: no asset manifest. :raises ValidationError: it does not validate.
        """
        return self.assets.status()

    def install(self, progress=None, raise_on_failure: bool = True) -> dict[str, Any]:
        """Install and verify every asset by its policies (``POST /install``, ``vidax install``).

        :param progress: ``progress(asset)`` returns a callback ``(done, total)`` for that asset's download.
        :param raise_on_failure: when false, return the report (``ok`` false) instead of raising.
        :raises ValidationError: any asset failed; ``details`` has one entry per failed asset, and the others
            were installed all the same.
        """
        result = self.assets.install(progress=progress)
        if result["ok"] or not raise_on_failure:
            return result
        failed = {n: a for n, a in result["assets"].items() if a["status"] not in ("ok", "unknown")}
        problems = [Problem(f"assets.{n}", a.get("error") or a["status"]) for n, a in failed.items()]
        details = [{**p.to_dict(), "asset": n, **a} for p, (n, a) in zip(problems, failed.items(), strict=True)]
        raise ValidationError(f"{len(failed)} of {len(result['assets'])} assets failed to install: "
                              + "; ".join(f"{p.field}: {p.problem}" for p in problems), details=details)

    # ---------------------------------------------------------------- ComfyUI

    def comfyui_health(self) -> dict[str, Any]:
        """``GET /comfyui/health``: reachable or not (with the reason), version, devices, queue, our pid."""
        return self.comfyui.health()

    def comfyui_start(self) -> dict[str, Any]:
        """``POST /comfyui/start``: healthy already, or started (when ``auto_start``) and healthy.

        :raises ComfyUIStartFailed: cannot start, exited early (log tail in the message), or auto_start is off.
        :raises ComfyUITimeout: not healthy within ``start_timeout_s`` (the process is stopped).
        """
        result = self.comfyui.ensure()
        return {"ok": True, "status": "ready", "url": result["url"], "started": result.get("started", False),
                "pid": result.get("pid")}

    def comfyui_stop(self) -> dict[str, Any]:
        """Stop the ComfyUI that VIDAX started (never another)."""
        return self.comfyui.stop()

    # ---------------------------------------------------------------- lifetime

    def close(self, wait: bool = True) -> None:
        """Stop the executor (waiting for runs under way when ``wait``)."""
        self.executor.shutdown(wait=wait)

    def __enter__(self) -> Vidax:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
