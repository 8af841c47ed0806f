"""The fake ComfyUI (tests/fake_comfyui.py) against the recordings of a real ComfyUI 0.3.64 in
``shared/comfyui/``: answers, shapes, status codes, content types and websocket message order, so the fake
cannot drift from the server it stands for."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import requests
from conftest import ffmpeg
from fake_comfyui import FakeComfyUI
from fake_comfyui import Listener

RECORDINGS = Path(os.environ.get("VIDAX_COMFYUI_RECORDINGS",
                                 Path(__file__).resolve().parents[2] / "shared" / "comfyui"))
if not (RECORDINGS / "README.md").is_file():
    pytest.skip(f"the ComfyUI recordings are not at {RECORDINGS}", allow_module_level=True)


def recorded(name: str) -> dict:
    return json.loads((RECORDINGS / "http" / f"{name}.json").read_text())


def recorded_run(name: str) -> dict:
    return json.loads((RECORDINGS / "runs" / f"{name}.json").read_text())


def body(exchange: dict):
    b = exchange["response"]["body"]
    return b.get("json", b.get("text"))


def shape(value):
    """Key structure and value kinds (ints and floats are both numbers; lists by their first item)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def without(value, keys=("traceback",)):
    if isinstance(value, dict):
        return {k: without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [without(v, keys) for v in value]
    return value


@pytest.fixture
def fake():
    f = FakeComfyUI().start_in_thread()
    yield f
    f.stop()


# --------------------------------------------------------------------------- discovery endpoints


@pytest.mark.parametrize("path, name", [
    ("/system_stats", "get_system_stats"), ("/features", "get_features"), ("/queue", "get_queue_idle"),
    ("/prompt", "get_prompt_idle"), ("/api/prompt", "get_api_prefix_prompt"),
    ("/history/00000000-0000-0000-0000-000000000000", "get_history_unknown_id"),
    ("/object_info/NoSuchNode", "get_object_info_unknown_node"),
])
def test_get_endpoints_answer_like_the_recordings(fake, path, name):
    rec = recorded(name)
    r = requests.get(fake.url + path, timeout=5)
    assert r.status_code == rec["response"]["status"]
    assert r.headers["Content-Type"] == rec["response"]["headers"]["Content-Type"]
    assert shape(r.json()) == shape(body(rec))
    if name in ("get_features", "get_queue_idle", "get_prompt_idle", "get_api_prefix_prompt",
                "get_history_unknown_id", "get_object_info_unknown_node"):
        assert r.json() == body(rec)


@pytest.mark.parametrize("node", ["EmptyImage", "SaveImage", "LoadImage", "LoadAudio", "EmptyAudio", "CreateVideo",
                                  "SaveVideo", "SaveWEBM", "SaveAudio", "SaveAnimatedWEBP"])
def test_object_info_of_core_nodes_matches(fake, node):
    rec = body(recorded(f"get_object_info_{node}"))[node]
    ours = requests.get(f"{fake.url}/object_info/{node}", timeout=5).json()[node]
    assert list(ours) == list(rec)
    assert ours["input_order"] == rec["input_order"]
    for category, inputs in rec["input"].items():
        assert list(ours["input"][category]) == list(inputs)
        if category == "hidden":
            continue
        for name, spec in inputs.items():
            if isinstance(spec[0], list):  # a COMBO of files or values
                assert isinstance(ours["input"][category][name][0], list)
            else:
                assert ours["input"][category][name][0] == spec[0]
            if len(spec) > 1:
                for k in ("min", "max", "default", "options"):
                    if k in spec[1] and not isinstance(spec[1][k], str):
                        assert ours["input"][category][name][1][k] == spec[1][k], (name, k)
    for k in ("output", "output_node", "name", "category", "python_module"):
        assert ours[k] == rec[k]


# --------------------------------------------------------------------------- POST /prompt


REJECTIONS = ["post_prompt_error_unknown_node_class", "post_prompt_error_missing_class_type",
              "post_prompt_error_missing_required_input", "post_prompt_error_bad_values_min_and_type",
              "post_prompt_error_value_too_big", "post_prompt_error_value_not_in_list",
              "post_prompt_error_loadimage_missing_file", "post_prompt_error_link_to_missing_node",
              "post_prompt_error_wrong_link_type", "post_prompt_error_no_output_nodes",
              "post_prompt_error_no_prompt_key"]


@pytest.mark.parametrize("name", REJECTIONS)
def test_post_prompt_400_answers_are_the_recorded_ones(fake, name):
    rec = recorded(name)
    r = requests.post(fake.url + "/prompt", json=rec["request"]["body"]["json"], timeout=5)
    assert r.status_code == 400
    assert r.headers["Content-Type"] == rec["response"]["headers"]["Content-Type"]
    assert without(r.json()) == without(body(rec))
    assert fake.accepted == []


@pytest.mark.parametrize("name", ["post_prompt_error_invalid_json", "post_prompt_error_prompt_not_object"])
def test_post_prompt_500_text_plain(fake, name):
    rec = recorded(name)
    req = rec["request"]["body"]
    data = req["raw"] if "raw" in req else json.dumps(req["json"])
    r = requests.post(fake.url + "/prompt", data=data, headers={"Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 500
    assert r.headers["Content-Type"] == rec["response"]["headers"]["Content-Type"] == "text/plain; charset=utf-8"
    assert r.text == body(rec)


def test_partially_invalid_prompt_is_accepted_and_runs_the_valid_branch(fake):
    rec = recorded("post_prompt_partially_invalid_accepted")
    with Listener(fake.url) as ws:
        r = requests.post(fake.url + "/prompt", json={**rec["request"]["body"]["json"], "client_id": ws.client_id},
                          timeout=5)
        assert r.status_code == 200
        answer = r.json()
        assert list(answer) == ["prompt_id", "number", "node_errors"]
        assert answer["node_errors"] == body(rec)["node_errors"]
        ws.until_done(answer["prompt_id"])
    entry = requests.get(f"{fake.url}/history/{answer['prompt_id']}", timeout=5).json()[answer["prompt_id"]]
    expected = body(recorded("get_history_partial"))
    expected = next(iter(expected.values()))
    assert entry["prompt"][4] == expected["prompt"][4] == ["2"]
    assert entry["outputs"] == expected["outputs"]


def test_new_style_combo_is_not_validated_and_fails_at_run_time(fake):
    rec = recorded("post_prompt_v3_combo_bad_value_accepted")
    r = requests.post(fake.url + "/prompt", json=rec["request"]["body"]["json"], timeout=5)
    assert r.status_code == 200 and r.json()["node_errors"] == {}
    prompt_id = r.json()["prompt_id"]
    deadline = time.monotonic() + 10
    while not (h := requests.get(f"{fake.url}/history/{prompt_id}", timeout=5).json()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    rec_entry = next(iter(body(recorded("get_history_v3_combo_bad_value_runtime_error")).values()))
    entry = h[prompt_id]
    assert shape(without(entry)) == shape(without(rec_entry))
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    ours, theirs = entry["status"]["messages"][-1][1], rec_entry["status"]["messages"][-1][1]
    for k in ("node_id", "node_type", "exception_message", "exception_type"):
        assert ours[k] == theirs[k]
    assert sorted(ours["executed"]) == sorted(theirs["executed"])
    assert list(ours["current_inputs"]) == list(theirs["current_inputs"])


def test_number_grows_on_every_post_rejected_ones_too(fake):
    wf = json.loads((RECORDINGS / "workflows" / "image_still.json").read_text())
    assert requests.post(fake.url + "/prompt", json={"nope": 1}, timeout=5).status_code == 400
    assert requests.post(fake.url + "/prompt", json={"prompt": {"1": {"class_type": "X", "inputs": {}}}},
                         timeout=5).status_code == 400
    r = requests.post(fake.url + "/prompt", json={"prompt": wf}, timeout=5)
    assert r.json()["number"] == 2


# --------------------------------------------------------------------------- upload and view


def test_upload_rules_follow_the_recorded_sequence(fake, tmp_path):
    png = tmp_path / "frame.png"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=16x16", "-frames:v", "1", str(png))
    other = tmp_path / "other.png"
    ffmpeg("-f", "lavfi", "-i", "color=c=blue:s=16x16", "-frames:v", "1", str(other))

    def upload(name, data, fields, field="image"):
        return requests.post(fake.url + "/upload/image", files={field: (name, data, "image/png")}, data=fields,
                             timeout=5)

    steps = [("post_upload_image_new", "frame.png", png.read_bytes()),
             ("post_upload_image_same_name_same_bytes", "frame.png", png.read_bytes()),
             ("post_upload_image_same_name_other_bytes", "frame.png", other.read_bytes()),
             ("post_upload_image_overwrite", "frame.png", other.read_bytes()),
             ("post_upload_image_no_subfolder", "frame_root.png", png.read_bytes()),
             ("post_upload_image_audio_file", "tone.wav", b"RIFF....WAVE"),
             ("post_upload_image_not_an_image", "corrupt.png", b"this is not a png")]
    for name, filename, data in steps:
        rec = recorded(name)
        r = upload(filename, data, rec["request"]["body"]["multipart"]["fields"])
        assert r.status_code == 200, name
        assert r.headers["Content-Type"] == rec["response"]["headers"]["Content-Type"]
        assert r.json() == body(rec), name
    assert [u.duplicate for u in fake.uploads] == [False, True, False, False, False, False, False]
    assert (fake.dirs["input"] / "vidax" / "frame.png").read_bytes() == other.read_bytes()  # overwritten
    assert (fake.dirs["input"] / "vidax" / "frame (1).png").read_bytes() == other.read_bytes()

    for name, field in (("post_upload_image_missing_file_field", "other"), ("post_upload_image_path_escape",
                                                                            "image")):
        rec = recorded(name)
        r = upload("x.png", png.read_bytes(), rec["request"]["body"]["multipart"]["fields"], field=field)
        assert r.status_code == 400 == rec["response"]["status"]
        assert r.content == b""
    names = requests.get(fake.url + "/object_info/LoadImage", timeout=5).json()["LoadImage"]["input"]
    assert names["required"]["image"][0] == ["corrupt.png", "frame_root.png"]  # top-level input/ images only


def test_view_answers_like_the_recordings(fake, tmp_path):
    png = tmp_path / "frame.png"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=16x16", "-frames:v", "1", str(png))
    requests.post(fake.url + "/upload/image", files={"image": ("frame.png", png.read_bytes(), "image/png")},
                  data={"subfolder": "vidax"}, timeout=5)
    wf = json.loads((RECORDINGS / "workflows" / "image_still.json").read_text())
    with Listener(fake.url) as ws:
        prompt_id = requests.post(fake.url + "/prompt", json={"prompt": wf, "client_id": ws.client_id},
                                  timeout=5).json()["prompt_id"]
        ws.until_done(prompt_id)
    temp = fake.history[prompt_id]["outputs"]["3"]["images"][0]["filename"]
    cases = {"get_view_png": None, "get_view_annotated_filename": None, "get_view_input_upload": None,
             "get_view_missing_file": None, "get_view_dotdot_filename": None, "get_view_bad_type": None,
             "get_view_subfolder_escape": None, "get_view_temp_preview": temp}
    for name, filename in cases.items():
        rec = recorded(name)
        url = rec["request"]["url"].replace("http://127.0.0.1:8188", fake.url)
        if filename:
            url = re.sub(r"filename=[^&]+", f"filename={filename}", url)
        r = requests.get(url, timeout=5)
        headers = rec["response"]["headers"]
        assert r.status_code == rec["response"]["status"], name
        assert r.headers.get("Content-Type") == headers.get("Content-Type"), name
        if "Content-Disposition" in headers:
            shown = (filename or re.sub(r" \[\w+\]$", "", requests.utils.unquote(
                re.search(r"filename=([^&]+)", url).group(1)).replace("+", " ")))
            assert r.headers["Content-Disposition"] == f'filename="{shown}"'
            assert {"Etag", "Last-Modified", "Accept-Ranges"} <= set(r.headers), name
        else:
            assert r.content == b"", name


# --------------------------------------------------------------------------- whole runs, frame by frame


def skeleton(message: dict, counters: bool = True) -> tuple:
    """What must be equal between a recorded and a replayed message (ids, timestamps and paths aside)."""
    t, d = message["type"], message["data"]
    keys = tuple(sorted(d))
    if t == "status":
        return t, d["status"]["exec_info"]["queue_remaining"], keys
    if t == "executing":
        return t, d.get("node"), keys
    if t == "executed":
        return t, d["node"], keys, files(d["output"], counters)
    if t == "progress_state":
        return t, tuple((nid, n["state"], n["value"], type(n["value"]).__name__, n["max"], tuple(sorted(n)))
                        for nid, n in d["nodes"].items())
    if t == "progress":
        return t, d["node"], d["value"], d["max"], keys
    if t == "execution_cached":
        return t, tuple(d["nodes"]), keys
    if t in ("execution_error", "execution_interrupted"):
        return t, d["node_id"], d["node_type"], d.get("exception_type"), tuple(sorted(d["executed"])), keys
    return t, keys


def files(output, counters: bool = True):
    """UI output with PreviewImage's random temp prefix and (``counters=False``) the file counters masked."""
    text = re.sub(r"ComfyUI_temp_[a-z]{5}_", "ComfyUI_temp_XXXXX_", json.dumps(output, sort_keys=True))
    if not counters:
        text = re.sub(r"_\d{5}_\.", "_NNNNN_.", text)
    return json.loads(text)


def prepare_inputs(fake_url: str, tmp_path: Path) -> None:
    """The uploads the recorded runs rely on: vidax/tone.wav, vidax/frame.png, corrupt.png."""
    tone, frame = tmp_path / "tone.wav", tmp_path / "frame.png"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1.5", "-ac", "2", "-c:a", "pcm_s16le",
           str(tone))
    ffmpeg("-f", "lavfi", "-i", "color=c=0x336699:s=16x16", "-frames:v", "1", str(frame))
    for name, data, sub in (("tone.wav", tone.read_bytes(), "vidax"), ("frame.png", frame.read_bytes(), "vidax"),
                            ("corrupt.png", b"this is not a png", "")):
        r = requests.post(fake_url + "/upload/image", files={"image": (name, data)}, data={"subfolder": sub},
                          timeout=5)
        assert r.status_code == 200


VIEW_TYPES = {".png": "get_view_png", ".webp": "get_view_webp_animated", ".mp4": "get_view_mp4",
              ".webm": "get_view_webm", ".flac": "get_view_flac"}


@pytest.mark.parametrize("run", ["image_still", "animation_webp_apng", "video_mp4_webm", "video_with_uploaded_audio",
                                 "video_with_empty_audio", "upload_then_loadimage", "runtime_error_corrupt_image",
                                 "runtime_error_odd_size_h264", "client_chosen_prompt_id",
                                 "image_still_cached_rerun"])
def test_recorded_run_replays_frame_by_frame(fake, tmp_path, run):
    rec = recorded_run(run)
    sent = dict(rec["post_prompt"]["request"]["body"]["json"])
    prepare_inputs(fake.url, tmp_path)
    if run == "image_still_cached_rerun":  # the recording shows the second of two identical prompts
        first = {k: v for k, v in sent.items() if k != "client_id"}
        with Listener(fake.url) as ws:
            pid = requests.post(fake.url + "/prompt", json={**first, "client_id": ws.client_id}, timeout=5)
            ws.until_done(pid.json()["prompt_id"])
    with Listener(fake.url) as ws:
        sent["client_id"] = ws.client_id
        r = requests.post(fake.url + "/prompt", json=sent, timeout=5)
        rec_answer = body(rec["post_prompt"])
        assert r.status_code == 200 and list(r.json()) == list(rec_answer)
        prompt_id = r.json()["prompt_id"]
        if "prompt_id" in sent:
            assert prompt_id == sent["prompt_id"] == rec_answer["prompt_id"]
        messages = ws.until_done(prompt_id)
    expected = [m["message"] for m in rec["ws_messages_in_order"] if m["frame"] == "text"]
    assert [m["type"] for m in messages] == [m["type"] for m in expected]
    assert messages[0]["data"]["sid"] == ws.client_id
    counters = run != "image_still_cached_rerun"  # recorded on a server that had saved still_0000[1-4] before
    assert [skeleton(m, counters) for m in messages] == [skeleton(m, counters) for m in expected]
    for ours, theirs in zip(messages, expected, strict=True):
        if ours["type"] == "execution_error":
            assert set(ours["data"]["current_inputs"]) == set(theirs["data"]["current_inputs"])
            assert ours["data"]["exception_message"].endswith("\n")
            if run == "runtime_error_corrupt_image":
                assert re.fullmatch(r"cannot identify image file '.*/input/corrupt\.png'\n",
                                    ours["data"]["exception_message"])
            else:
                assert ours["data"]["exception_message"] == theirs["data"]["exception_message"]

    entry = requests.get(f"{fake.url}/history/{prompt_id}", timeout=5).json()[prompt_id]
    rec_entry = next(iter(body(rec["get_history_after_done"]).values()))
    assert list(entry) == list(rec_entry)
    assert entry["prompt"][2] == rec_entry["prompt"][2]
    assert list(entry["prompt"][3]) == list(rec_entry["prompt"][3])
    assert sorted(entry["prompt"][4]) == sorted(rec_entry["prompt"][4])
    assert files(entry["outputs"], counters) == files(rec_entry["outputs"], counters)
    assert entry["meta"] == rec_entry["meta"]
    assert {k: v for k, v in entry["status"].items() if k != "messages"} == \
        {k: v for k, v in rec_entry["status"].items() if k != "messages"}
    assert [m[0] for m in entry["status"]["messages"]] == [m[0] for m in rec_entry["status"]["messages"]]
    for out in entry["outputs"].values():
        for items in out.values():
            for item in items:
                if not isinstance(item, dict):
                    continue
                ext = os.path.splitext(item["filename"])[1]
                v = requests.get(fake.url + "/view", params=item, timeout=5)
                assert v.status_code == 200
                assert v.headers["Content-Type"] == recorded(VIEW_TYPES[ext])["response"]["headers"]["Content-Type"]


def test_history_is_written_after_execution_success(fake):
    fake.history_delay = 0.3  # exaggerated: the real server writes it ~2 ms later
    wf = json.loads((RECORDINGS / "workflows" / "image_still.json").read_text())
    with Listener(fake.url) as ws:
        prompt_id = requests.post(fake.url + "/prompt", json={"prompt": wf, "client_id": ws.client_id},
                                  timeout=5).json()["prompt_id"]
        while (m := ws.recv(10)) and m["type"] != "execution_success":
            pass
        assert requests.get(f"{fake.url}/history/{prompt_id}", timeout=5).json() == {}
        ws.until_done(prompt_id)
        assert prompt_id in requests.get(f"{fake.url}/history/{prompt_id}", timeout=5).json()


def test_rejected_prompt_sends_nothing_on_the_socket(fake):
    rec = recorded_run("validation_error_ws_view")
    with Listener(fake.url) as ws:
        r = requests.post(fake.url + "/prompt", json={**rec["post_prompt"]["request"]["body"]["json"],
                                                      "client_id": ws.client_id}, timeout=5)
        assert r.status_code == 400 and r.json() == body(rec["post_prompt"])
        assert ws.drain(0.3) and ws.types() == ["status"]


def test_other_sockets_see_only_broadcasts(fake):
    wf = json.loads((RECORDINGS / "workflows" / "image_still.json").read_text())
    observed = json.loads((RECORDINGS / "ws" / "observer_while_other_client_runs.ws.json").read_text())
    no_client = json.loads((RECORDINGS / "ws" / "prompt_without_client_id.ws.json").read_text())
    with Listener(fake.url) as observer, Listener(fake.url) as runner:
        pid = requests.post(fake.url + "/prompt", json={"prompt": wf, "client_id": runner.client_id},
                            timeout=5).json()["prompt_id"]
        runner.until_done(pid)
        observer.drain(0.2)
        assert observer.types() == [m["message"]["type"] for m in observed["messages"]]
        observer.messages.clear()
        wf["1"]["inputs"]["color"] = 7  # not a cache hit
        pid = requests.post(fake.url + "/prompt", json={"prompt": wf}, timeout=5).json()["prompt_id"]
        while pid not in fake.history:
            time.sleep(0.01)
        observer.drain(0.2)
        expected = [m["message"]["type"] for m in no_client["messages"]]
        assert set(observer.types()) == set(expected) == {"status", "progress_state"}
        assert observer.types()[:3] == expected[1:4] and observer.types()[-1] == expected[-1] == "status"


def test_feature_flags_answer(fake):
    rec = json.loads((RECORDINGS / "ws" / "ws_binary_images_with_metadata.ws.json").read_text())
    with Listener(fake.url) as ws:
        ws.ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        ws.drain(0.2)
        assert ws.messages[1] == rec[1]["message"]


def test_queue_delete_clear_and_interrupt_as_recorded(fake):
    slow = {"1": {"class_type": "VidaxTestSlow", "inputs": {"seconds": 20.0, "steps": 100}}}
    rec = recorded_run("queue_and_interrupt")
    with Listener(fake.url) as ws:
        ids = []
        for _ in range(3):
            r = requests.post(fake.url + "/prompt", json={"prompt": slow, "client_id": ws.client_id}, timeout=5)
            ids.append(r.json()["prompt_id"])
        a, b, c = ids
        while (m := ws.recv(5)) and m["type"] != "progress":
            pass
        q = requests.get(fake.url + "/queue", timeout=5).json()
        rec_q = body(recorded("get_queue_running_and_pending"))
        assert shape(q) == shape(rec_q)
        assert [len(i) for i in q["queue_running"] + q["queue_pending"]] == [5, 5, 5]
        assert [i[1] for i in q["queue_running"]] == [a] and [i[1] for i in q["queue_pending"]] == [b, c]
        assert requests.get(fake.url + "/prompt", timeout=5).json() == body(recorded("get_prompt_busy"))
        for name, payload in (("post_queue_delete", {"delete": [c]}), ("post_queue_clear", {"clear": True}),
                              ("post_interrupt_other_prompt_id", {"prompt_id": b})):
            r = requests.post(fake.url + "/queue" if "queue" in name else fake.url + "/interrupt", json=payload,
                              timeout=5)
            assert (r.status_code, r.content) == (recorded(name)["response"]["status"], b"")
        q = requests.get(fake.url + "/queue", timeout=5).json()
        assert [i[1] for i in q["queue_running"]] == [a] and q["queue_pending"] == []
        assert requests.get(f"{fake.url}/history/{a}", timeout=5).json() == {}
        r = requests.post(fake.url + "/interrupt", timeout=5)
        assert (r.status_code, r.content) == (200, b"")
        ws.until_done(a)
    # the recording was interrupted between two nodes; here inside the slow node: the tail is the same
    tail = [m["message"]["type"] for m in rec["ws_messages_in_order"] if m["frame"] == "text"][-3:]
    assert ws.types()[-3:] == tail == ["execution_interrupted", "status", "executing"]
    interrupted = next(m for m in ws.messages if m["type"] == "execution_interrupted")["data"]
    rec_interrupted = next(m["message"] for m in rec["ws_messages_in_order"]
                           if m["frame"] == "text" and m["message"]["type"] == "execution_interrupted")["data"]
    assert list(interrupted) == list(rec_interrupted)
    entry = fake.history[a]
    rec_entry = next(iter(body(recorded("get_history_interrupted")).values()))
    assert entry["status"]["status_str"] == rec_entry["status"]["status_str"] == "error"
    assert [m[0] for m in entry["status"]["messages"]] == [m[0] for m in rec_entry["status"]["messages"]]
    for pid in (b, c):
        assert requests.get(f"{fake.url}/history/{pid}", timeout=5).json() == {}
    assert requests.get(fake.url + "/queue", timeout=5).json() == body(recorded("get_queue_idle_after"))
    assert fake.interrupts == 2
