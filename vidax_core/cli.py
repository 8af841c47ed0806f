"""The ``vidax`` command.

* ``vidax serve`` runs the HTTP API under gunicorn (``vidax_http.wsgi:app``);
* ``vidax run JOB.json`` creates and runs one job in this process;
* ``vidax --version``.

Exit codes of ``vidax run``: 0 the run completed (``success`` or ``partial``), 1 it failed, 2 the job or the
configuration is invalid (including an unsupported audio format), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__
from .config import load_settings
from .errors import ConfigError
from .errors import UnsupportedFormat
from .errors import ValidationError
from .errors import VidaxError
from .media import ffmpeg_exe
from .urls import redact_url

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_BIND = "127.0.0.1:8000"
DEFAULT_WORKERS = 2
DEFAULT_THREADS = 8
WSGI_APP = "vidax_http.wsgi:app"  # named, not imported: the core does not depend on the HTTP package


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_INVALID
    try:
        return args.func(args)
    except ConfigError as exc:
        _err(f"configuration error: {exc.message}")
        return EXIT_INVALID
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidax",
        description="VIDAX: audio + image/video + a ComfyUI workflow -> a finished talking-head video.",
        epilog="Configuration: environment variables (VIDAX_*) > config/vidax.json (or VIDAX_CONFIG) > defaults.",
    )
    parser.add_argument("--version", action="version", version=f"vidax {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the HTTP API under gunicorn",
                           description="Run the HTTP API under gunicorn (gthread workers). Refuses to start "
                                       "without an API key (VIDAX_API_KEY or \"apiKey\" in config/vidax.json).")
    env = os.environ
    serve.add_argument("--bind", default=env.get("VIDAX_BIND") or DEFAULT_BIND,
                       help=f"HOST:PORT to listen on (default {DEFAULT_BIND}, env VIDAX_BIND)")
    serve.add_argument("--workers", type=_positive, default=env.get("VIDAX_WORKERS") or str(DEFAULT_WORKERS),
                       help=f"gunicorn worker processes (default {DEFAULT_WORKERS}, env VIDAX_WORKERS)")
    serve.add_argument("--threads", type=_positive, default=env.get("VIDAX_THREADS") or str(DEFAULT_THREADS),
                       help=f"request threads per worker (default {DEFAULT_THREADS}, env VIDAX_THREADS)")
    serve.add_argument("--timeout", type=_positive, default=env.get("VIDAX_TIMEOUT") or "120",
                       help="seconds before gunicorn restarts a worker that stopped answering its master "
                            "(default 120, env VIDAX_TIMEOUT; runs in worker threads do not count)")
    serve.add_argument("--graceful-timeout", type=_positive, default=env.get("VIDAX_GRACEFUL_TIMEOUT") or "30",
                       help="seconds a stopping worker gets to finish requests; runs still going are then "
                            "interrupted and can be resumed (default 30, env VIDAX_GRACEFUL_TIMEOUT)")
    serve.add_argument("--log-level", type=str.lower, default=env.get("VIDAX_LOG_LEVEL") or "info",
                       choices=["debug", "info", "warning", "error", "critical"],
                       help="default info, env VIDAX_LOG_LEVEL")
    serve.set_defaults(func=cmd_serve)

    run = sub.add_parser("run", help="create and run one job in this process",
                         description="Create and run one job in this process, showing each phase's progress. "
                                     "Exit 0 on success or partial, 1 on failure, 2 on invalid input.")
    run.add_argument("job", type=Path, help="the job JSON file")
    run.add_argument("--quiet", "-q", action="store_true", help="print only the result")
    run.set_defaults(func=cmd_run)

    install = sub.add_parser("install", help="install (or --check) the assets of the asset manifest",
                             description="Download and verify every asset of the asset manifest by its policies, "
                                         "with a progress bar per download and a summary. Exit 0 only when every "
                                         "asset is present and verified.")
    install.add_argument("--check", action="store_true",
                         help="only check (no downloads); exit 0 only when no asset is missing or mismatching")
    install.set_defaults(func=cmd_install)

    comfy = sub.add_parser("comfyui", help="ComfyUI health, start and stop",
                           description="health: is ComfyUI reachable (exit 0 when healthy). start: make it "
                                       "ready, starting the configured command when auto_start is on. stop: stop "
                                       "the ComfyUI that VIDAX started (never another).")
    comfy.add_argument("action", choices=["health", "start", "stop"])
    comfy.set_defaults(func=cmd_comfyui)

    plugins = sub.add_parser("plugins", help="list the loaded plugins and what they add",
                             description="List the plugins (builtin and from the 'vidax' entry-point group), the "
                                         "phases, asset URL schemes and lip-sync provider types they add, and any "
                                         "plugin that failed to load. Exit 1 when one failed.")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(func=cmd_plugins)
    return parser


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _err(message: str) -> None:
    print(f"vidax: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        settings.require_api_key()
        ffmpeg_exe(settings.ffmpeg)  # a wrong VIDAX_FFMPEG is said now, not at the first run
    except ConfigError as exc:
        _err(exc.message)
        return EXIT_INVALID
    _report_plugins()
    _recover_interrupted(settings)
    argv = [
        sys.executable, "-m", "gunicorn", WSGI_APP,
        "--bind", args.bind,
        "--workers", str(args.workers),
        "--worker-class", "gthread",
        "--threads", str(args.threads),
        "--timeout", str(args.timeout),
        "--graceful-timeout", str(args.graceful_timeout),
        "--keep-alive", "5",
        "--log-level", args.log_level,
        "--access-logfile", "-",
        "--error-logfile", "-",
        "--config", "python:vidax_http.gunicorn_conf",
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)
    return EXIT_FAILED  # pragma: no cover - execv does not return


def _report_plugins() -> None:
    """Say at start which plugins failed to load (the others are served regardless)."""
    from .plugins import Registry
    from .plugins import get_plugin_manager

    logging.getLogger("vidax.plugins").disabled = True  # reported once, below, instead of logged
    try:
        info = Registry.build(get_plugin_manager()).describe()
    finally:
        logging.getLogger("vidax.plugins").disabled = False
    for f in info["failures"]:
        _err(f"plugin {f['name']} failed to load and is switched off: {f['error']}")
    third = [p["name"] for p in info["plugins"] if p["package"]]
    if third:
        _err(f"third-party plugins: {', '.join(third)}")


def _recover_interrupted(settings) -> None:
    """Mark runs left ``running`` by a server that died as failed (``RUN_INTERRUPTED``) before serving."""
    from .core import Vidax

    vx = Vidax(settings, executor="inline")
    try:
        found = vx.recover_interrupted()
    finally:
        vx.close()
    if found:
        _err(f"{len(found)} interrupted run(s) marked failed (RUN_INTERRUPTED): {', '.join(found[:10])}")


# --------------------------------------------------------------------------- plugins


def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import Registry
    from .plugins import get_plugin_manager

    info = Registry.build(get_plugin_manager()).describe()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for p in info["plugins"]:
            origin = f" ({p['package']})" if p["package"] else ""
            print(f"{p['name']}{origin}")
            for r in p["registers"]:
                print(f"    {r}")
        print(f"phases: {', '.join(info['phases'])}")
        print(f"asset URL schemes: {', '.join(info['asset_schemes'])}")
        print(f"lip-sync provider types: {', '.join(info['lipsync_provider_types'])}")
        for f in info["failures"]:
            print(f"FAILED to load plugin {f['name']}: {f['error']}")
    return EXIT_FAILED if info["failures"] else EXIT_OK


# --------------------------------------------------------------------------- comfyui


def cmd_comfyui(args: argparse.Namespace) -> int:
    from .core import Vidax

    logging.basicConfig(level=logging.INFO, format="vidax: %(message)s")
    vx = Vidax(load_settings(), executor="inline")
    try:
        if args.action == "health":
            result = vx.comfyui_health()
            print(json.dumps(result, indent=2))
            return EXIT_OK if result["ok"] else EXIT_FAILED
        if args.action == "start":
            try:
                result = vx.comfyui_start()
            except VidaxError as exc:
                _err(f"{exc.code}: {exc.message}")
                return EXIT_FAILED
            print(json.dumps(result, indent=2))
            return EXIT_OK
        result = vx.comfyui_stop()
        print(json.dumps(result, indent=2))
        return EXIT_OK
    finally:
        vx.close()


# --------------------------------------------------------------------------- install


def cmd_install(args: argparse.Namespace) -> int:
    from .core import Vidax

    logging.basicConfig(level=logging.WARNING, format="vidax: %(message)s")
    vx = Vidax(load_settings(), executor="inline")
    try:
        if args.check:
            result = vx.asset_status()
        else:
            bars = DownloadBars()
            try:
                result = vx.install(progress=bars.for_asset, raise_on_failure=False)
            finally:
                bars.close()
    except VidaxError as exc:
        _err(f"{exc.code}: {exc.message}")
        for d in exc.details or []:
            if isinstance(d, dict) and "field" in d:
                print(f"  - {d['field']}: {d['problem']}", file=sys.stderr)
        return EXIT_INVALID if isinstance(exc, ValidationError) else EXIT_FAILED
    finally:
        vx.close()
    print_asset_table(result["assets"])
    ok = bool(result["ok"])
    print("all assets present and verified" if ok else "some assets are missing, mismatching or failed")
    return EXIT_OK if ok else EXIT_FAILED


def print_asset_table(assets: dict[str, dict[str, Any]]) -> None:
    rows = [("asset", "status", "size", "path / problem")]
    for name, a in assets.items():
        size = _human(a["size"]) if a.get("size") is not None else "-"
        status = a["status"] + (f" ({a['action']})" if a.get("action") in ("downloaded", "failed") else "")
        rows.append((name, status, size, a.get("error") or a["path"]))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}")


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)  # pragma: no cover


class DownloadBars:
    """One progress bar per downloading asset (size, speed, ETA); plain lines when not on a terminal."""

    def __init__(self, stream=None):
        import threading

        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._bars: list[Any] = []
        self._lock = threading.Lock()

    def for_asset(self, asset):
        state: dict[str, Any] = {"bar": None, "said": False}

        def progress(done: int, total: int | None) -> None:
            total = total or asset.size
            with self._lock:
                if self.tty:
                    if state["bar"] is None:
                        from tqdm import tqdm

                        state["bar"] = tqdm(total=total, desc=asset.name, unit="B", unit_scale=True,
                                            unit_divisor=1024, file=self.stream, position=len(self._bars),
                                            mininterval=0.2)
                        self._bars.append(state["bar"])
                    bar = state["bar"]
                    if total and bar.total != total:
                        bar.total = total
                    bar.update(done - bar.n)
                elif not state["said"]:
                    state["said"] = True
                    size = f" ({_human(total)})" if total else ""
                    print(f"downloading {asset.name}{size} from {redact_url(asset.url)}", file=self.stream,
                          flush=True)

        return progress

    def close(self) -> None:
        for bar in self._bars:
            bar.close()


# --------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    from .core import Vidax

    try:
        raw = json.loads(args.job.read_text(encoding="utf-8"))
    except FileNotFoundError:
        _err(f"{args.job}: no such file")
        return EXIT_INVALID
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        _err(f"{args.job}: not a JSON job: {exc}")
        return EXIT_INVALID
    settings = load_settings()
    progress = Progress(enabled=not args.quiet)
    vx = Vidax(settings, executor="inline")
    vx.store.subscribe(progress.on_event)
    try:
        try:
            created = vx.create_run(raw)
        except (ValidationError, UnsupportedFormat) as exc:
            _err(f"invalid job ({exc.code}): {exc.message}")
            for d in exc.details or []:
                if isinstance(d, dict) and "field" in d:
                    print(f"  - {d['field']}: {d['problem']}", file=sys.stderr)
            return EXIT_INVALID
        run_id = created["run_id"]
        print(f"run {run_id}  workdir {created['workdir']}")
        try:
            vx.start_run(run_id)
        except KeyboardInterrupt:
            vx._fail_run(run_id, _interrupted())
            raise
        except UnsupportedFormat as exc:
            _err(f"{exc.code}: {exc.message}")
            return EXIT_INVALID
        except VidaxError as exc:
            _err(f"the run could not start ({exc.code}): {exc.message}")
            return EXIT_FAILED
        status = vx.status(run_id)
    finally:
        progress.close()
        vx.close()
    print(f"run {run_id}: {status['run_status']} ({status['exit_status']})")
    for name, phase in status["phases"].items():
        err = phase.get("error")
        print(f"  {name:<10} {phase['status']}" + (f"  {err['code']}: {err['message']}" if err else ""))
    if status["final"]:
        print(f"final: {status['final']}")
    return EXIT_OK if status["run_status"] == "completed" else EXIT_FAILED


def _interrupted():
    from .models import ErrorInfo

    return ErrorInfo("RUN_INTERRUPTED", "vidax run was interrupted; start the run again to resume it")


class Progress:
    """Phase-by-phase progress on the terminal: a bar per running phase on a TTY, plain lines otherwise."""

    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.bar: Any = None
        self.started: dict[str, float] = {}

    def on_event(self, ev: dict[str, Any]) -> None:
        if not self.enabled:
            return
        name, phase = ev.get("event"), ev.get("phase")
        if name == "phase.started":
            self.started[phase] = time.monotonic()
            if self.tty:
                from tqdm import tqdm

                self.bar = tqdm(total=100, desc=f"{phase:<10}", file=self.stream, leave=False,
                                bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}",
                                ncols=min(100, shutil.get_terminal_size().columns))
            else:
                self._line(f"▶ {phase}")
        elif name == "phase.progress" and self.bar is not None:
            value = int(100 * float((ev.get("data") or {}).get("progress", 0)))
            self.bar.update(max(0, value - self.bar.n))
        elif name in ("phase.completed", "phase.failed", "phase.skipped"):
            self._close_bar()
            secs = time.monotonic() - self.started.get(phase, time.monotonic())
            mark = {"phase.completed": "✓", "phase.failed": "✗", "phase.skipped": "–"}[name]
            word = {"phase.completed": f"completed in {secs:.1f}s", "phase.skipped": "skipped",
                    "phase.failed": f"failed: {ev.get('message', '')}"}[name]
            self._line(f"{mark} {phase:<10} {word}")

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        self._close_bar()


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
