"""Requests per second of the VIDAX API under ``vidax serve`` against a bare one-route Falcon app.

Both servers run at the same time on loopback under the same gunicorn command line: the one ``vidax serve``
builds (captured from ``vidax_core.cli`` itself, so the flags cannot drift), with only the WSGI app swapped
for the bare one. Measured, interleaved and in rotating order, ``--repeat`` times:

* ``vidax  GET /health``      (the real CLI; ``X-API-Key`` checked by the auth middleware)
* ``vidax  GET /jobs/{id}``   (a run created with ``POST /jobs``: manifest read from disk and converted)
* ``bare   GET /health``      (a Falcon app with one resource returning ``{"ok": true}``)

Printed: median requests/s, p50/p99 latency, the server's CPU time per request (master + workers, read from
/proc at the start and the end of each measured window: steadier than req/s when other programs share the
machine), and the ratios vidax/bare for each route (goal >= 0.5).

    .venv/bin/python benchmarks/api.py [--workers 2] [--threads 8] [--seconds 3] [--concurrency 16] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import API_KEY  # noqa: E402
from _common import bench_settings_files  # noqa: E402
from _common import clean_env  # noqa: E402
from _common import http_get  # noqa: E402
from _common import http_load  # noqa: E402
from _common import machine_note  # noqa: E402
from _common import make_media  # noqa: E402
from _common import median  # noqa: E402
from _common import start_server  # noqa: E402
from _common import table  # noqa: E402
from _common import tree_cpu_seconds  # noqa: E402
from _common import verdict  # noqa: E402
from _common import vidax_command  # noqa: E402

from vidax_core import cli as vidax_cli  # noqa: E402

GOAL = 0.5
BARE_MODULE = "vidax_bench_bare_app"
BARE_APP = textwrap.dedent('''\
    """A bare one-route Falcon app: the baseline of benchmarks/api.py."""
    import falcon


    class Health:
        def on_get(self, req, resp):
            resp.media = {"ok": True}


    app = falcon.App()
    app.add_route("/health", Health())
''')

# Run in a subprocess with the benchmark's environment: ``vidax serve`` as the CLI builds it, but with
# os.execv replaced by "print the argv", so the bare app gets exactly the same gunicorn settings.
CAPTURE = textwrap.dedent('''\
    import json, os, sys
    from vidax_core import cli

    def capture(path, argv):
        sys.stdout.write(json.dumps(argv) + "\\n")
        sys.stdout.flush()
        os._exit(0)

    os.execv = capture
    sys.exit(cli.main(sys.argv[1:]))
''')


def serve_args(args, port: int) -> list[str]:
    return ["serve", "--bind", f"127.0.0.1:{port}", "--workers", str(args.workers), "--threads", str(args.threads)]


def captured_gunicorn_argv(args, env, cwd) -> list[str]:
    """The gunicorn argv ``vidax serve`` would exec with these options (port placeholder ``0``)."""
    proc = subprocess.run([sys.executable, "-c", CAPTURE, *serve_args(args, 0)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"could not capture the vidax serve command line:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=vidax_cli.DEFAULT_WORKERS, help="gunicorn workers (both servers)")
    p.add_argument("--threads", type=int, default=vidax_cli.DEFAULT_THREADS, help="threads per worker (both)")
    p.add_argument("--seconds", type=float, default=3.0, help="measured seconds per load run (default 3)")
    p.add_argument("--warmup", type=float, default=0.5, help="uncounted seconds before each load run")
    p.add_argument("--concurrency", type=int, default=16, help="client threads, one keep-alive connection each")
    p.add_argument("--repeat", type=int, default=5,
                   help="repetitions of each measurement, interleaved (median reported, default 5)")
    p.add_argument("--max-requests", type=int, default=500_000, help="cap on requests per load run")
    p.add_argument("--keep", action="store_true", help="keep the temp folder (server logs) and print its path")
    args = p.parse_args(argv)
    for name in ("workers", "threads", "concurrency", "repeat"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.repeat > 50 or args.concurrency > 512:
        p.error("--repeat is at most 50, --concurrency at most 512")
    if not 0 < args.seconds <= 120:
        p.error("--seconds must be in (0, 120]")

    tmp = Path(tempfile.mkdtemp(prefix="vidax-bench-api-"))
    servers = []
    try:
        media = tmp / "media"
        make_media(media, audio_seconds=2.0, size="256x256")
        env = clean_env({**bench_settings_files(tmp / "vidax", media), "VIDAX_LOG_LEVEL": "info"})
        headers = {"X-API-Key": API_KEY}

        gunicorn_argv = captured_gunicorn_argv(args, env, tmp)
        app_index = gunicorn_argv.index(vidax_cli.WSGI_APP)
        bind_index = gunicorn_argv.index("--bind") + 1

        def bare_argv(port: int) -> list[str]:
            a = list(gunicorn_argv)
            a[app_index] = f"{BARE_MODULE}:app"
            a[bind_index] = f"127.0.0.1:{port}"
            return a

        bare_dir = tmp / "bare"
        bare_dir.mkdir()
        (bare_dir / f"{BARE_MODULE}.py").write_text(BARE_APP)
        bare_env = dict(env, PYTHONPATH=str(bare_dir))

        vidax, vport = start_server(lambda port: [*vidax_command(), *serve_args(args, port)], name="vidax",
                                    log_dir=tmp, env=env, cwd=tmp, headers=headers)
        servers.append(vidax)
        bare, bport = start_server(bare_argv, name="bare", log_dir=tmp, env=bare_env, cwd=tmp, headers=headers)
        servers.append(bare)

        job = {"inputs": {"audio": "voice.wav", "image": "face.png"}, "encode": {"fps": 25}}
        status, body = http_get(vport, "/jobs", dict(headers, **{"Content-Type": "application/json"}),
                                method="POST", body=json.dumps(job).encode(), timeout=30)
        if status != 202:
            raise RuntimeError(f"POST /jobs answered {status}: {body[:500]!r}")
        run_id = json.loads(body)["run_id"]
        status, body = http_get(vport, f"/jobs/{run_id}", headers)
        if status != 200 or json.loads(body)["run_status"] != "queued":
            raise RuntimeError(f"GET /jobs/{run_id} answered {status}: {body[:500]!r}")
        status, body = http_get(bport, "/health", headers)
        if status != 200 or json.loads(body) != {"ok": True}:
            raise RuntimeError(f"bare GET /health answered {status}: {body[:200]!r}")

        cases = [("vidax", vport, "/health"), ("vidax", vport, f"/jobs/{run_id}"), ("bare", bport, "/health")]
        pids = {"vidax": vidax.proc.pid, "bare": bare.proc.pid}
        results: dict[int, list] = {i: [] for i in range(len(cases))}
        print(f"# {machine_note()}")
        print(f"# gunicorn (both): {' '.join(gunicorn_argv[3:])}".replace(vidax_cli.WSGI_APP, "APP"))
        print(f"# load: {args.concurrency} keep-alive connections, {args.seconds:g}s measured after "
              f"{args.warmup:g}s warm-up, x{args.repeat} interleaved")
        for rep in range(args.repeat):
            order = list(range(len(cases)))
            order = order[rep % len(order):] + order[:rep % len(order)]  # rotate: no case always goes first
            for i in order:
                server, port, path = cases[i]
                pid = pids[server]
                r = http_load(port, path, headers=headers, concurrency=args.concurrency, seconds=args.seconds,
                              warmup=args.warmup, max_requests=args.max_requests,
                              cpu_probe=lambda pid=pid: tree_cpu_seconds(pid))
                results[i].append(r)
                print(f"  rep {rep + 1}: {server:<5} GET {_route(path):<14} {r.rps:8.0f} req/s  "
                      f"p50 {r.p50 * 1000:6.2f} ms  p99 {r.p99 * 1000:6.2f} ms  "
                      f"server CPU {r.cpu_per_request * 1e6:5.0f} us/req  errors {r.errors}", flush=True)
        for group in servers:
            if not group.alive():
                raise RuntimeError(f"{group.name} died during the benchmark:\n{group.log_tail()}")

        med = {i: (median([r.rps for r in rs]), median([r.p50 for r in rs]), median([r.p99 for r in rs]),
                   median([r.cpu_per_request for r in rs]), sum(r.errors for r in rs)) for i, rs in results.items()}
        bare_rps, bare_cpu = med[2][0], med[2][3]
        rows = []
        for i, (server, _port, path) in enumerate(cases):
            rps, p50, p99, cpu, errors = med[i]
            rows.append([f"{server} GET {_route(path)}", f"{rps:.0f}", f"{p50 * 1000:.2f}", f"{p99 * 1000:.2f}",
                         f"{cpu * 1e6:.0f}", errors, f"{rps / bare_rps:.2f}", f"{bare_cpu / cpu:.2f}"])
        print()
        print(table(["case", "req/s (median)", "p50 ms", "p99 ms", "server CPU us/req", "errors",
                     "req/s vs bare", "CPU-efficiency vs bare"], rows))
        print()
        for i, label in ((0, "GET /health"), (1, "GET /jobs/{id}")):
            ratio = med[i][0] / bare_rps
            # the same ratio per repetition (each against the bare run of the same repetition): its spread
            per_rep = [a.rps / b.rps for a, b in zip(results[i], results[2], strict=True)]
            print(f"ratio vidax/bare req/s {label:<15} {ratio:.2f}  (per repetition "
                  f"{', '.join(f'{x:.2f}' for x in per_rep)})  goal >= {GOAL}: {verdict(ratio >= GOAL)}")
        print("(CPU-efficiency = bare server CPU per request / vidax server CPU per request: the same ratio measured "
              "by CPU time,\n less disturbed by other load on the machine than req/s)")
        if args.keep:
            print(f"# logs kept in {tmp}")
        return 0
    finally:
        for group in reversed(servers):
            group.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def _route(path: str) -> str:
    return "/jobs/{id}" if path.startswith("/jobs/") else path


if __name__ == "__main__":
    sys.exit(main())
