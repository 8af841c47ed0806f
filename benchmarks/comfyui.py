"""VIDAX's ComfyUI client against the fake ComfyUI: how fast it notices a finished prompt, and what it costs per prompt.

Two figures, each a ratio against a baseline measured in the same run. The figures are never asserted by the tests.

(1) Completion-detection latency. The clock starts when the fake's worker thread emits ``execution_success``,
    that is, when it calls ``send_sync`` (where the fake also stamps the message's own millisecond
    ``timestamp``). The clock stops when ``ComfyUIClient.wait()`` returns in the benchmark. Both readings are
    ``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every process on the machine). Measured once through
    the websocket and once through the polling fallback. For the fallback the fake answers ``/ws`` with 404,
    like ``websocket_enabled = False``, so ``session_socket()`` falls back exactly as it does against a real
    server. The prompt is one ``VidaxTestSlow`` node. Its length is drawn at random from
    ``[--node-seconds, --node-seconds + POLL_EVERY)``, and each websocket/polling pair gets the same length.
    That way the moment the prompt finishes falls anywhere in the polling cycle, not at one fixed phase of it.
    The latency is also given from the moment the fake writes the history entry (``history_delay``, 2 ms,
    after ``execution_success``), because a client can only return the entry once it exists. Printed: median
    and p90 of each mode, and the ratio polling/websocket.

(2) The client's own overhead per prompt. Timed end to end through ``ComfyUIClient``: ``upload`` of a small
    PNG, ``session_socket``, ``submit``, ``wait``, ``outputs`` (plus ``images_of``) and ``download`` of the
    saved PNG. The workflow is LoadImage -> VidaxTestSlow(``--work-seconds``) -> SaveImage, so the server's work
    is a fixed sleep and not an ffmpeg run that varies. The bare baseline does the same exchanges with raw
    ``requests`` (one Session) and ``websocket-client``, in the fewest calls any client must make:
    ``POST /upload/image``, open ``/ws``, ``POST /prompt``, read frames until ``executing {node: null}`` for the
    prompt (ComfyUI sends it after writing the history entry), one ``GET /history/{id}``, one ``GET /view``.
    A third row builds a new ``ComfyUIClient`` (and so a new requests Session) for every prompt, as
    ``vidax_plugins.comfyui_common.run_workflow`` does. Printed: median end-to-end time, the overhead in ms
    (the difference of the medians, and the median of the paired differences), the ratio vidax/bare, a per-step
    breakdown, the client's CPU time per prompt and the HTTP requests per prompt.

The fake (``tests/fake_comfyui.py``) is subclassed, without changing it, to take the monotonic marks
(``execution_success`` emitted, written to the socket, history entry stored) and to answer a small control
route (``/vidax-bench/...``: switch the websocket on or off, read and clear the marks and the request log).
By default (``--process``) it runs as a separate process: this script starts itself with ``--serve-fake-port``,
swaps the subclass into ``fake_comfyui`` and calls the fake's own CLI entry point ``fake_comfyui.main([...])``.
That process has its own GIL and event loop, so the fake does not compete with the measured client inside one
interpreter. The CLI has no switch for the websocket or for the marks, which is why the subclass is needed.
``--in-thread`` runs the same subclass with ``start_in_thread()`` inside this process, for comparison.

Loopback only (127.0.0.1). Every loop is bounded in count and in time (each prompt by ``--timeout``, the whole
run by ``--budget``). The fake's process group is stopped on exit, including on Ctrl-C. Everything lives in one
temporary folder that is removed at the end.

    .venv/bin/python benchmarks/comfyui.py [--prompts 30] [--repeat 3] [--process | --in-thread] [--profile 25]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TESTS = REPO / "tests"
sys.path.insert(0, str(HERE))

from _common import HOST  # noqa: E402
from _common import http_get  # noqa: E402
from _common import machine_note  # noqa: E402
from _common import median  # noqa: E402
from _common import run_ffmpeg_cli  # noqa: E402
from _common import start_server  # noqa: E402
from _common import table  # noqa: E402

import vidax_core.comfyui.client as client_module  # noqa: E402
from vidax_core.comfyui import ComfyUIClient  # noqa: E402
from vidax_plugins.comfyui_common import images_of  # noqa: E402

CONTROL = "/vidax-bench/"
SUBFOLDER = "vidax/bench"  # where both sides upload (the same name, so LoadImage stays in the fake's cache)
MAX_FRAMES = 10_000  # websocket frames the bare client reads for one prompt, at most


# --------------------------------------------------------------------------- the instrumented fake


class _MarkedHistory(dict):
    """The fake's ``history`` dict, noting when each entry is stored (the moment ``GET /history`` can see it)."""

    def __init__(self, marks: dict[str, dict[str, float]]):
        super().__init__()
        self._marks = marks

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._marks.setdefault(key, {})["history"] = time.monotonic()


def bench_fake_class() -> type:
    """``tests/fake_comfyui.FakeComfyUI`` with the marks and the control route (the fake itself is not changed)."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    import fake_comfyui
    from aiohttp import web

    class BenchFakeComfyUI(fake_comfyui.FakeComfyUI):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.marks: dict[str, dict[str, float]] = {}
            self.history = _MarkedHistory(self.marks)
            self._requests_read = 0

        def send_sync(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
            if event == "execution_success":  # the worker emits it (ComfyUI's send_sync from its prompt worker)
                self.marks.setdefault(data["prompt_id"], {})["success"] = time.monotonic()
            super().send_sync(event, data, sid)

        async def _send(self, event: str, data: dict[str, Any], sid: str | None) -> None:
            to_socket = sid is not None and sid in self.sockets
            await super()._send(event, data, sid)
            if event == "execution_success" and to_socket:  # written to the client's websocket
                self.marks.setdefault(data["prompt_id"], {})["sent"] = time.monotonic()

        @web.middleware
        async def _log_request(self, request: web.Request, handler: Callable) -> web.StreamResponse:
            if request.path.startswith(CONTROL):  # not logged in self.requests: it is not the client's traffic
                return self._control(request)
            return await super()._log_request(request, handler)

        def _control(self, request: web.Request) -> web.Response:
            what = request.path[len(CONTROL):]
            if what == "websocket" and request.method == "POST":
                self.websocket_enabled = request.rel_url.query.get("enabled") == "1"
                return web.json_response({"websocket_enabled": self.websocket_enabled})
            if what == "state" and request.method == "GET":
                marks = {k: dict(v) for k, v in list(self.marks.items())}
                for k, v in marks.items():
                    if "history" in v:
                        self.marks.pop(k, None)
                requests = self.requests[self._requests_read:]
                self._requests_read += len(requests)
                return web.json_response({"marks": marks, "requests": requests})
            return web.Response(status=404)

    return BenchFakeComfyUI


def serve_fake(port: int, root: str) -> int:
    """The separate fake process: the fake's own CLI (``fake_comfyui.main``) serving the instrumented class."""
    cls = bench_fake_class()
    import fake_comfyui

    fake_comfyui.FakeComfyUI = cls  # main() builds the server by this module-level name
    return fake_comfyui.main(["--port", str(port), "--output-dir", root])


class Control:
    """The benchmark's side of ``/vidax-bench/...`` (outside every timed section)."""

    def __init__(self, port: int):
        self.port = port

    def websocket(self, enabled: bool) -> None:
        status, body = http_get(self.port, f"{CONTROL}websocket?enabled={int(enabled)}", method="POST")
        if status != 200:
            raise RuntimeError(f"fake control answered {status}: {body[:200]!r}")

    def state(self) -> dict[str, Any]:
        status, body = http_get(self.port, f"{CONTROL}state")
        if status != 200:
            raise RuntimeError(f"fake control answered {status}: {body[:200]!r}")
        return json.loads(body)


def request_kinds(requests: list[list[str]]) -> Counter:
    """``GET /history/<id>`` -> ``GET /history/{id}``: the request log by kind."""
    kinds: Counter = Counter()
    for method, path in requests:
        path = path.split("?", 1)[0]
        if path.startswith("/history/"):
            path = "/history/{id}"
        kinds[f"{method} {path}"] += 1
    return kinds


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile ``p`` (0..100), like ``_common.LoadResult.percentile``."""
    if not values:
        return float("nan")
    data = sorted(values)
    k = max(0, min(len(data) - 1, int(round(p / 100.0 * len(data) + 0.5)) - 1))
    return data[k]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


# --------------------------------------------------------------------------- (1) completion detection


def slow_workflow(seconds: float) -> dict[str, Any]:
    return {"1": {"class_type": "VidaxTestSlow", "inputs": {"seconds": round(seconds, 4), "steps": 1}}}


def detect_once(client: ComfyUIClient, ctl: Control, websocket: bool, seconds: float,
                timeout: float) -> dict[str, Any]:
    """One prompt: the latency from the fake's marks to ``wait()`` returning, and the requests it caused."""
    ctl.websocket(websocket)
    with client.session_socket() as sock:
        if (sock.ws is not None) != websocket:
            raise RuntimeError(f"expected {'a websocket' if websocket else 'the polling fallback'}, got "
                               f"{'a websocket' if sock.ws is not None else 'polling'} ({sock.error})")
        prompt_id = client.submit(slow_workflow(seconds), sock.client_id)
        t_submitted = time.monotonic()
        entry = client.wait(prompt_id, sock, timeout_s=timeout)
        t_done = time.monotonic()
    if entry.get("status", {}).get("status_str") != "success":
        raise RuntimeError(f"prompt {prompt_id} ended {entry.get('status')}")
    state = ctl.state()
    marks = state["marks"].get(prompt_id, {})
    if "success" not in marks or "history" not in marks:
        raise RuntimeError(f"no marks for prompt {prompt_id}: {marks}")
    # requests after POST /prompt: those of wait() (session_socket's GET /ws and the submit come before)
    log = state["requests"]
    posts = [i for i, (m, p) in enumerate(log) if m == "POST" and p.startswith("/prompt")]
    during_wait = log[posts[-1] + 1:] if posts else log
    return {"from_success": t_done - marks["success"], "from_history": t_done - marks["history"],
            "sent": marks.get("sent", float("nan")) - marks["success"], "wait": t_done - t_submitted,
            "kinds": request_kinds(during_wait)}


def run_detection(client: ComfyUIClient, ctl: Control, args, deadline: float) -> dict[str, Any]:
    modes = ("websocket", "polling")
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    rounds: dict[str, list[list[float]]] = {m: [] for m in modes}
    for mode in modes:  # warm-up, not counted: connections, imports, the fake's first prompt
        detect_once(client, ctl, mode == "websocket", args.node_seconds, args.timeout)
    for rep in range(args.repeat):
        rng = random.Random(1000 + rep)
        for m in modes:
            rounds[m].append([])
        for i in range(args.prompts):
            if time.monotonic() > deadline:
                print(f"# --budget reached: (1) stopped at round {rep + 1}, prompt {i}", flush=True)
                return {"samples": results, "rounds": rounds}
            seconds = args.node_seconds + rng.random() * client_module.POLL_EVERY
            order = modes if (i + rep) % 2 == 0 else modes[::-1]
            for mode in order:
                sample = detect_once(client, ctl, mode == "websocket", seconds, args.timeout)
                results[mode].append(sample)
                rounds[mode][-1].append(sample["from_success"])
        print(f"  (1) round {rep + 1}: websocket median {ms(median(rounds['websocket'][-1]))} ms, polling median "
              f"{ms(median(rounds['polling'][-1]))} ms", flush=True)
    return {"samples": results, "rounds": rounds}


def _history_retried(samples: list[dict[str, Any]]) -> float:
    """Share of websocket prompts with more than two ``GET /history/{id}``: one from the first look of
    ``_wait_ws`` (right after submit), then more than one after ``execution_success``."""
    if not samples:
        return float("nan")
    return sum(1 for x in samples if x["kinds"].get("GET /history/{id}", 0) > 2) / len(samples)


def report_detection(data: dict[str, Any]) -> None:
    samples, rounds = data["samples"], data["rounds"]
    rows = []
    for mode in ("websocket", "polling"):
        s = samples[mode]
        if not s:
            continue
        fs, fh = [x["from_success"] for x in s], [x["from_history"] for x in s]
        rows.append([mode, len(s), ms(median(fs)), ms(percentile(fs, 90)), f"{ms(min(fs))}..{ms(max(fs))}",
                     ms(median(fh)), ms(percentile(fh, 90))])
    print()
    print("(1) completion detection: execution_success emitted by the fake -> ComfyUIClient.wait() returned")
    print(table(["mode", "prompts", "median ms", "p90 ms", "min..max ms", "from history: median", "p90"], rows))
    ws, poll = samples["websocket"], samples["polling"]
    if ws and poll:
        ws_fs, poll_fs = [x["from_success"] for x in ws], [x["from_success"] for x in poll]
        sent = [x["sent"] for x in ws if x["sent"] == x["sent"]]
        print(f"    execution_success emitted -> written to the websocket by the fake: median {ms(median(sent))} ms")
        for mode in ("websocket", "polling"):
            kinds: Counter = Counter()
            for x in samples[mode]:
                kinds.update(x["kinds"])
            n = len(samples[mode])
            print(f"    {mode}: HTTP requests per prompt during wait(): "
                  + ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(kinds.items())))
        per_round = [median(p) / median(w) for w, p in zip(rounds["websocket"], rounds["polling"], strict=True)
                     if w and p]
        print(f"    websocket: {100 * _history_retried(ws):.0f} % of prompts needed a second GET /history after "
              "execution_success (the entry was not written yet: _history_after_done slept, then asked again)")
        print(f"ratio polling/websocket (medians) {median(poll_fs) / median(ws_fs):.1f}x   (p90) "
              f"{percentile(poll_fs, 90) / percentile(ws_fs, 90):.1f}x   per round: "
              + ", ".join(f"{r:.1f}x" for r in per_round))
        print(f"    (polling sleeps POLL_EVERY = {client_module.POLL_EVERY} s between looks at /history, so its "
              f"expected median is about POLL_EVERY / 2)")


# --------------------------------------------------------------------------- (2) the client's overhead


def e2e_workflow(image: str, work_seconds: float) -> dict[str, Any]:
    return {"1": {"class_type": "LoadImage", "inputs": {"image": image}},
            "2": {"class_type": "VidaxTestSlow", "inputs": {"seconds": work_seconds, "steps": 1,
                                                            "images": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "vidax/bench"}}}


def e2e_vidax(client: ComfyUIClient | None, url: str, png: Path, dest: Path, args) -> dict[str, Any]:
    """One prompt through ``ComfyUIClient``, as ``comfyui_common.run_workflow`` + ``collect_frames`` use it."""
    cpu0 = time.thread_time()
    t = [time.monotonic()]
    client = client or ComfyUIClient(url)  # None: a new client per prompt, as run_workflow builds one
    name = client.upload(png, subfolder=SUBFOLDER)
    t.append(time.monotonic())
    with client.session_socket() as sock:
        t.append(time.monotonic())
        if sock.ws is None:
            raise RuntimeError(f"vidax side fell back to polling: {sock.error}")
        prompt_id = client.submit(e2e_workflow(name, args.work_seconds), sock.client_id)
        t.append(time.monotonic())
        entry = client.wait(prompt_id, sock, timeout_s=args.timeout)
        t.append(time.monotonic())
    images = images_of(client.outputs(entry))
    t.append(time.monotonic())
    client.download(images[0], dest)
    t.append(time.monotonic())
    return {"prompt_id": prompt_id, "t": t, "cpu": time.thread_time() - cpu0, "client": client}


def e2e_bare(session: Any, url: str, png: Path, dest: Path, args) -> dict[str, Any]:
    """The same exchanges with raw requests + websocket-client, in the fewest calls."""
    import websocket

    cpu0 = time.thread_time()
    t = [time.monotonic()]
    with open(png, "rb") as f:
        r = session.post(url + "/upload/image", files={"image": (png.name, f, "image/png")},
                         data={"type": "input", "subfolder": SUBFOLDER, "overwrite": "true"}, timeout=30)
    r.raise_for_status()
    body = r.json()
    name = f"{body['subfolder']}/{body['name']}"
    t.append(time.monotonic())
    client_id = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://{url.split('://', 1)[1]}/ws?clientId={client_id}", timeout=args.timeout)
    try:
        t.append(time.monotonic())
        r = session.post(url + "/prompt", json={"prompt": e2e_workflow(name, args.work_seconds),
                                                "client_id": client_id}, timeout=30)
        r.raise_for_status()
        prompt_id = r.json()["prompt_id"]
        t.append(time.monotonic())
        end = time.monotonic() + args.timeout
        for _ in range(MAX_FRAMES):
            if time.monotonic() > end:
                raise TimeoutError(f"bare: prompt {prompt_id} did not finish in {args.timeout} s")
            frame = ws.recv()
            if not isinstance(frame, str):
                continue
            msg = json.loads(frame)
            data = msg.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            if msg.get("type") == "executing" and data.get("node") is None:
                break
            if msg.get("type") in ("execution_error", "execution_interrupted"):
                raise RuntimeError(f"bare: prompt {prompt_id} failed: {data}")
        else:
            raise RuntimeError(f"bare: no end of prompt {prompt_id} in {MAX_FRAMES} frames")
        entry = session.get(f"{url}/history/{prompt_id}", timeout=30).json()[prompt_id]
        t.append(time.monotonic())
    finally:
        ws.close()
    item = entry["outputs"]["3"]["images"][0]
    t.append(time.monotonic())
    r = session.get(url + "/view", params={"filename": item["filename"], "subfolder": item["subfolder"],
                                           "type": item["type"]}, timeout=30)
    r.raise_for_status()
    dest.write_bytes(r.content)
    t.append(time.monotonic())
    return {"prompt_id": prompt_id, "t": t, "cpu": time.thread_time() - cpu0}


STEPS = ("upload", "open socket", "submit", "wait", "outputs", "download")
SIDES = ("vidax", "bare", "vidax-fresh")
LABELS = {"vidax": "vidax ComfyUIClient (reused)", "bare": "bare requests + websocket-client",
          "vidax-fresh": "vidax, new ComfyUIClient per prompt"}


def run_overhead(url: str, ctl: Control, png: Path, dl: Path, args, deadline: float) -> dict[str, Any]:
    import requests

    ctl.websocket(True)
    shared = ComfyUIClient(url)
    session = requests.Session()

    def one(side: str) -> dict[str, Any]:
        dest = dl / f"{side}.png"
        if side == "bare":
            res = e2e_bare(session, url, png, dest, args)
        else:
            res = e2e_vidax(shared if side == "vidax" else None, url, png, dest, args)
            if side == "vidax-fresh":
                res.pop("client").session.close()  # untimed; run_workflow leaves this to the garbage collector
            res.pop("client", None)
        state = ctl.state()
        marks = state["marks"].get(res["prompt_id"], {})
        res["from_success"] = res["t"][4] - marks.get("success", float("nan"))
        res["kinds"] = request_kinds(state["requests"])
        res["size"] = dest.stat().st_size
        return res

    samples: dict[str, list[dict[str, Any]]] = {s: [] for s in SIDES}
    rounds: dict[str, list[list[float]]] = {s: [] for s in SIDES}
    for side in SIDES:  # warm-up, not counted (twice: LoadImage reaches the fake's cache on the first)
        one(side)
        one(side)
    try:
        for rep in range(args.repeat):
            for s in SIDES:
                rounds[s].append([])
            for i in range(args.prompts):
                if time.monotonic() > deadline:
                    print(f"# --budget reached: (2) stopped at round {rep + 1}, prompt {i}", flush=True)
                    return {"samples": samples, "rounds": rounds}
                k = (i + rep) % len(SIDES)
                for side in SIDES[k:] + SIDES[:k]:
                    res = one(side)
                    samples[side].append(res)
                    rounds[side][-1].append(res["t"][-1] - res["t"][0])
            print("  (2) round " + str(rep + 1) + ": " + ", ".join(
                f"{s} {ms(median(rounds[s][-1]))} ms" for s in SIDES), flush=True)
    finally:
        session.close()
        shared.session.close()
    return {"samples": samples, "rounds": rounds}


def report_overhead(data: dict[str, Any], args) -> None:
    samples, rounds = data["samples"], data["rounds"]
    if not samples["bare"] or not samples["vidax"]:
        return
    total = {s: [x["t"][-1] - x["t"][0] for x in samples[s]] for s in SIDES}
    bare = median(total["bare"])
    rows = []
    for s in SIDES:
        if not total[s]:
            continue
        fs = [x["from_success"] for x in samples[s]]
        rows.append([LABELS[s], len(total[s]), ms(median(total[s])), ms(percentile(total[s], 90)),
                     f"{ms(median(total[s]) - bare)}", f"{median(total[s]) / bare:.3f}",
                     ms(median([x["cpu"] for x in samples[s]])), ms(median(fs))])
    print()
    print(f"(2) one prompt end to end: upload + socket + submit + wait + outputs + download "
          f"(server work: VidaxTestSlow {args.work_seconds:g} s, output PNG "
          f"{samples['vidax'][0]['size']} bytes)")
    print(table(["case", "prompts", "median ms", "p90 ms", "vs bare ms", "vs bare", "client CPU ms",
                 "detect ms (from success)"], rows))
    print()
    print("per step, medians in ms (wait = POST /prompt answered -> history entry in hand; outputs includes "
          "closing the socket):")
    step_rows = []
    for s in SIDES:
        if not samples[s]:
            continue
        steps = [median([x["t"][k + 1] - x["t"][k] for x in samples[s]]) for k in range(len(STEPS))]
        step_rows.append([s, *(ms(v) for v in steps)])
    print(table(["case", *STEPS], step_rows))
    print()
    for s in SIDES:
        kinds: Counter = Counter()
        for x in samples[s]:
            kinds.update(x["kinds"])
        n = max(1, len(samples[s]))
        print(f"    {s}: HTTP requests per prompt {sum(kinds.values()) / n:.2f}: "
              + ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(kinds.items())))
        if s != "bare":
            print(f"    {s}: {100 * _history_retried(samples[s]):.0f} % of prompts needed a second GET /history after "
                  "execution_success (the entry was not written yet: _history_after_done slept, then asked again)")
    pairs = [v["t"][-1] - v["t"][0] - (b["t"][-1] - b["t"][0])
             for v, b in zip(samples["vidax"], samples["bare"], strict=False)]
    per_round = [median(v) / median(b) for v, b in zip(rounds["vidax"], rounds["bare"], strict=True) if v and b]
    cpu = {s: median([x["cpu"] for x in samples[s]]) for s in ("vidax", "bare")}
    print(f"overhead vidax - bare: {ms(median(total['vidax']) - bare)} ms (medians), "
          f"{ms(median(pairs))} ms (median of paired differences)")
    print(f"ratio vidax/bare (medians) {median(total['vidax']) / bare:.3f}   per round: "
          + ", ".join(f"{r:.3f}" for r in per_round)
          + f"   client CPU vidax/bare {cpu['vidax'] / cpu['bare']:.2f}x")
    if total["vidax-fresh"]:
        extra = 1000 * (median(total["vidax-fresh"]) - median(total["vidax"]))
        print(f"new client per prompt: {extra:+.1f} ms over the reused client "
              f"(ratio vidax-fresh/bare {median(total['vidax-fresh']) / bare:.3f})")


# --------------------------------------------------------------------------- profile


class _SleepLog:
    """Stands in for the ``time`` module inside ``vidax_core.comfyui.client`` (profile only): adds up its sleeps."""

    def __init__(self):
        self.calls = 0
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        self.calls += 1
        t0 = time.monotonic()
        time.sleep(seconds)
        self.seconds += time.monotonic() - t0


PROFILED = ("upload", "session_socket", "submit", "wait", "_wait_ws", "_watch", "_history_after_done", "history",
            "ping", "queued", "_request", "outputs", "download")
LIBRARY = {  # (file name, function) -> what it is
    ("sessions.py", "request"): "requests: Session.request (every HTTP call)",
    ("request.py", "getproxies_environment"): "requests -> urllib: proxy settings read from os.environ",
    ("typing.py", "__instancecheck__"): "requests: isinstance() against typing Protocols",
    ("_core.py", "recv"): "websocket-client: WebSocket.recv (waits for frames)",
    ("_utils.py", "_validate_utf8"): "websocket-client: pure-Python UTF-8 check of text frames",
    ("_core.py", "create_connection"): "websocket-client: create_connection",
    ("~", "<built-in method time.sleep>"): "time.sleep",
}


def run_profile(url: str, ctl: Control, png: Path, dl: Path, args) -> None:
    """Where a vidax prompt's time goes: ``--profile-prompts`` prompts under cProfile with a wall clock, the same
    under cProfile with this thread's CPU clock, and once more without the profiler counting the client's sleeps."""
    import cProfile
    import io
    import pstats

    ctl.websocket(True)
    client = ComfyUIClient(url)
    n = args.profile_prompts
    profiles = {}
    for clock, timer in (("wall", time.perf_counter), ("cpu", time.thread_time)):
        prof = cProfile.Profile(timer)
        t0 = timer()
        prof.enable()
        for _ in range(n):
            e2e_vidax(client, url, png, dl / "profile.png", args)
        prof.disable()
        profiles[clock] = (prof, timer() - t0)
        ctl.state()
    sleeps = _SleepLog()
    real_time = client_module.time
    client_module.time = sleeps  # type: ignore[assignment]
    try:
        waits = []
        for _ in range(n):
            res = e2e_vidax(client, url, png, dl / "profile.png", args)
            waits.append(res["t"][4] - res["t"][3])
            ctl.state()
    finally:
        client_module.time = real_time
    client.session.close()

    sums: dict[str, dict[str, float]] = {}  # label -> calls, wall, cpu (summed over same-named entries)
    for clock, (prof, _total) in profiles.items():
        for (file, _line, func), (_cc, calls, _tt, cum, _callers) in pstats.Stats(prof).stats.items():  # type: ignore
            where = Path(file).name
            if where == "client.py" and "comfyui" in file and func in PROFILED:
                label = f"ComfyUIClient.{func}"
            elif (where, func) in LIBRARY or (file, func) in LIBRARY:
                label = LIBRARY.get((where, func)) or LIBRARY[(file, func)]
            else:
                continue
            entry = sums.setdefault(label, {"calls": 0.0, "wall": 0.0, "cpu": 0.0})
            entry[clock] += cum
            if clock == "wall":
                entry["calls"] += calls
    wall_total, cpu_total = profiles["wall"][1], profiles["cpu"][1]
    ordered = [[label, f"{e['calls'] / n:.2f}", ms(e["wall"] / n), f"{100 * e['wall'] / wall_total:.0f} %",
                ms(e["cpu"] / n), f"{100 * e['cpu'] / cpu_total:.0f} %"]
               for label, e in sorted(sums.items(), key=lambda kv: -kv[1]["cpu"])]
    print()
    print(f"cProfile of {n} more vidax prompts (cumulative per prompt; callers include their callees; the "
          f"profiler itself inflates the CPU of many small calls): wall {ms(wall_total / n)} ms/prompt, "
          f"client CPU {ms(cpu_total / n)} ms/prompt under the profiler")
    print(table(["function", "calls/prompt", "wall ms", "wall share", "CPU ms", "CPU share"], ordered))
    print(f"without the profiler, {n} more prompts: the client slept {sleeps.calls / n:.2f} times, "
          f"{ms(sleeps.seconds / n)} ms per prompt (inside wait(), median {ms(median(waits))} ms)")
    out = io.StringIO()
    pstats.Stats(profiles["cpu"][0], stream=out).sort_stats("tottime").print_stats(args.profile)
    print()
    print(f"top {args.profile} by own CPU time:")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip()))


# --------------------------------------------------------------------------- main


def make_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    run_ffmpeg_cli("-f", "lavfi", "-i", "testsrc2=size=64x64:rate=1", "-frames:v", "1", str(path))
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=30, help="prompts per case and round (default 30)")
    p.add_argument("--repeat", type=int, default=3,
                   help="rounds of --prompts prompts, interleaved; stats over all of them (default 3)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--process", dest="in_thread", action="store_false",
                       help="run the fake as a separate process through its CLI entry point (default)")
    where.add_argument("--in-thread", dest="in_thread", action="store_true",
                       help="run the fake in a thread of this process (it then competes for this GIL)")
    p.add_argument("--only", choices=("1", "2"), help="measure only this figure")
    p.add_argument("--node-seconds", type=float, default=0.1,
                   help="(1) shortest prompt: VidaxTestSlow runs this + a random part of POLL_EVERY (default 0.1)")
    p.add_argument("--work-seconds", type=float, default=0.05,
                   help="(2) the server's work per prompt: VidaxTestSlow seconds (default 0.05)")
    p.add_argument("--timeout", type=float, default=30.0, help="timeout of one prompt in seconds (default 30)")
    p.add_argument("--budget", type=float, default=900.0,
                   help="stop measuring after this many seconds and report what was measured (default 900)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after the timing, profile --profile-prompts more vidax prompts; print the top N functions")
    p.add_argument("--profile-prompts", type=int, default=20, help="prompts profiled by --profile (default 20)")
    p.add_argument("--keep", action="store_true", help="keep the temp folder (the fake's log and files)")
    p.add_argument("--serve-fake-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--serve-fake-root", help=argparse.SUPPRESS)
    p.set_defaults(in_thread=False)
    args = p.parse_args(argv)
    if args.serve_fake_port is None:
        if not 1 <= args.prompts <= 1000:
            p.error("--prompts must be 1..1000")
        if not 1 <= args.repeat <= 20:
            p.error("--repeat must be 1..20")
        if not 0 <= args.node_seconds <= 10 or not 0 <= args.work_seconds <= 10:
            p.error("--node-seconds and --work-seconds must be 0..10")
        if not 1 <= args.profile_prompts <= 500:
            p.error("--profile-prompts must be 1..500")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_fake_port is not None:
        return serve_fake(args.serve_fake_port, args.serve_fake_root)
    logging.getLogger("vidax.comfyui").setLevel(logging.ERROR)  # the polling fallback warns once per prompt
    deadline = time.monotonic() + args.budget
    tmp = Path(tempfile.mkdtemp(prefix="vidax-bench-comfyui-"))
    group = fake = None
    try:
        root = tmp / "fake"
        root.mkdir()
        if args.in_thread:
            fake = bench_fake_class()(root=root).start_in_thread()
            port = fake.port
        else:
            group, port = start_server(
                lambda port: [sys.executable, str(Path(__file__).resolve()), "--serve-fake-port", str(port),
                              "--serve-fake-root", str(root)],
                name="fake-comfyui", log_dir=tmp, cwd=REPO, ready_path="/system_stats")
        url = f"http://{HOST}:{port}"
        ctl = Control(port)
        png = make_png(tmp / "media" / "face.png")
        dl = tmp / "download"
        dl.mkdir()

        print(f"# {machine_note()}")
        print(f"# fake ComfyUI 0.3.64 (tests/fake_comfyui.py) at {url}: "
              + ("in a thread of this process (--in-thread)" if args.in_thread else
                 f"separate process, pid {group.proc.pid}, via fake_comfyui.main (--process)"))
        print(f"# client: POLL_EVERY {client_module.POLL_EVERY} s, WATCH_EVERY {client_module.WATCH_EVERY} s, "
              f"LIVENESS_EVERY {client_module.LIVENESS_EVERY} s; {args.prompts} prompts x {args.repeat} rounds "
              "per case, interleaved")
        ctl.state()  # clear the start-up requests
        if args.only in (None, "1"):
            report_detection(run_detection(ComfyUIClient(url), ctl, args, deadline))
        if args.only in (None, "2"):
            report_overhead(run_overhead(url, ctl, png, dl, args, deadline), args)
        if args.profile:
            run_profile(url, ctl, png, dl, args)
        if args.keep:
            print(f"# temp folder kept: {tmp}")
        return 0
    finally:
        if fake is not None:
            fake.stop()
        if group is not None:
            group.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
