"""Helpers shared by the tests: probing results, waiting for runs."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

from conftest import simple_job  # noqa: F401  (re-exported for test modules)

from vidax_core.media import probe


def mp4_top_level_boxes(path) -> list[str]:
    boxes = []
    with open(path, "rb") as f:
        while True:
            head = f.read(8)
            if len(head) < 8:
                break
            size, kind = struct.unpack(">I4s", head)
            boxes.append(kind.decode("latin-1"))
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0] - 8
            if size == 0:
                break
            f.seek(size - 8, 1)
    return boxes


def assert_final_mp4(path, audio_seconds: float, fps: float | None = None, tol: float = 0.1):
    """final.mp4 as SPEC.md says: H.264 yuv420p + AAC, faststart, the audio's length, encode.fps."""
    path = Path(path)
    assert path.is_file(), f"{path} missing"
    info = probe(path)
    assert info.vcodec == "h264", info
    assert info.pix_fmt == "yuv420p", info
    assert info.acodec == "aac", info
    assert abs(info.duration - audio_seconds) <= tol, info
    if fps is not None:
        assert abs(info.fps - fps) < 0.01, info
    boxes = mp4_top_level_boxes(path)
    assert boxes.index("moov") < boxes.index("mdat"), f"not faststart: {boxes}"
    return info


def read_events(workdir) -> list[dict]:
    return [json.loads(line) for line in (Path(workdir) / "logs" / "events.jsonl").read_text().splitlines() if line]


def wait_run(vidax, run_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = vidax.status(run_id)
        if st["run_status"] in ("completed", "failed"):
            return st
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not end within {timeout}s: {vidax.status(run_id)}")


def mean_rgb(path, lo: float = 0.4, hi: float = 0.6) -> tuple[float, float, float]:
    """The mean colour of the square [lo, hi) x [lo, hi) of the middle frame of the video."""
    import av

    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    frame = frames[len(frames) // 2].reformat(format="rgb24")
    plane, w, h = frame.planes[0], frame.width, frame.height
    raw = bytes(plane)
    sums, n = [0, 0, 0], 0
    for y in range(int(h * lo), int(h * hi)):
        row = raw[y * plane.line_size:y * plane.line_size + 3 * w]
        for x in range(int(w * lo), int(w * hi)):
            for i in range(3):
                sums[i] += row[3 * x + i]
            n += 1
    return tuple(s / n for s in sums)
