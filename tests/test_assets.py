"""The asset installer: manifest validation, the checker and its hash cache, install policies, verified resumable
downloads against a real (misbehaving) HTTP server, locks across threads and processes, file:// sources, the
HTTP endpoints, the asset check at job start and ``vidax install``.

Downloads go to :mod:`asset_server` on 127.0.0.1; retries use a fake ``sleep`` so backoff costs no time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import pytest
from falcon import testing

import vidax_core.assets
from vidax_core import Vidax
from vidax_core import hookimpl
from vidax_core.assets import AssetManager
from vidax_core.assets import HashCache
from vidax_core.assets import load_asset_manifest
from vidax_core.config import load_settings
from vidax_core.download import Installer
from vidax_core.download import TargetLock
from vidax_core.errors import InputNotFound
from vidax_core.errors import ValidationError
from vidax_core.phases import BasePhase
from vidax_core.plugins import Registry
from vidax_core.plugins import get_plugin_manager
from vidax_http.app import create_app

if TYPE_CHECKING:
    from asset_server import AssetServer

pytest_plugins = ["asset_server"]  # the asset_server fixture

API_KEY = "test-key-0123456789"
VIDAX = Path(sys.executable).parent / "vidax"
SCHEMES = ("http", "https", "file")

# python -c programs for the tests that need another process
INSTALL_SCRIPT = """
import json, sys
from pathlib import Path
from vidax_core.assets import AssetManager
from vidax_core.plugins import Registry, get_plugin_manager
registry = Registry.build(get_plugin_manager(entry_points=False))
print(json.dumps(AssetManager(Path(sys.argv[1]), registry).install()), flush=True)
"""
LOCK_SCRIPT = """
import sys, time
from pathlib import Path
from vidax_core.download import TargetLock
with TargetLock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(n: int, seed: int = 0) -> bytes:
    """``n`` reproducible, incompressible-looking bytes."""
    out = bytearray()
    block = hashlib.sha256(f"vidax-{seed}".encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])


class Sleeps(list):
    """A fake ``sleep`` that records the delays."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.build(get_plugin_manager())


class Kit:
    """A manifest at ``tmp/assets.json`` (the ``settings`` fixture's VIDAX_ASSETS_CONFIG), assets under
    ``tmp/models``, served by the asset server."""

    def __init__(self, tmp: Path, server: AssetServer, registry: Registry):
        self.tmp = tmp
        self.server = server
        self.registry = registry
        self.manifest = tmp / "assets.json"
        self.sleeps = Sleeps()

    def entry(self, name: str, data: bytes, *, serve: bool = True, **behaviour: Any) -> dict[str, Any]:
        """A manifest entry for ``data`` (served at ``/<name>.bin`` unless ``serve`` is false)."""
        url = self.server.add(f"{name}.bin", data, **behaviour) if serve else self.server.url(f"{name}.bin")
        return {"name": name, "url": url, "path": f"models/{name}.bin", "sha256": sha(data), "size": len(data)}

    def write(self, *entries: dict[str, Any], **top: Any) -> Path:
        self.manifest.write_text(json.dumps({**top, "assets": list(entries)}), encoding="utf-8")
        return self.manifest

    def target(self, name: str) -> Path:
        return self.tmp / "models" / f"{name}.bin"

    def part(self, name: str) -> Path:
        return self.tmp / "models" / f".{name}.bin.vidax-part"

    def installer(self, **kw: Any) -> Installer:
        kw.setdefault("sleep", self.sleeps)
        kw.setdefault("env", {})
        return Installer(self.registry, HashCache(), **kw)

    def manager(self, **installer_kw: Any) -> AssetManager:
        return AssetManager(self.manifest, self.registry, installer=self.installer(**installer_kw))

    def place(self, name: str, data: bytes) -> Path:
        p = self.target(name)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return p


@pytest.fixture
def kit(tmp_path, asset_server, registry) -> Kit:
    return Kit(tmp_path, asset_server, registry)


@pytest.fixture
def hash_calls(monkeypatch) -> list[Path]:
    """Every call of ``vidax_core.assets.hash_file`` (the checker's hashing)."""
    calls: list[Path] = []
    real = vidax_core.assets.hash_file

    def counting(path):
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(vidax_core.assets, "hash_file", counting)
    return calls


def leftovers(folder: Path) -> list[str]:
    """Partial files and their metadata left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if ".vidax-part" in p.name) if folder.exists() else []


def vidax_log(caplog) -> str:
    """What VIDAX's own loggers wrote (urllib3's debug log of request lines is not ours)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("vidax"))


def fields(exc: ValidationError) -> set[str]:
    return {d["field"] for d in exc.details}


# =========================================================================== manifest validation


def load(path: Path):
    return load_asset_manifest(path, SCHEMES)


GOOD = {"name": "a", "url": "https://example.org/a.bin", "path": "models/a.bin", "sha256": "ab" * 32}


@pytest.mark.parametrize("change, field", [
    ({"sha256": "xyz"}, "assets.a.sha256"),
    ({"sha256": "ab" * 31}, "assets.a.sha256"),
    ({"on_missing": "ask"}, "assets.a.on_missing"),
    ({"on_hash_mismatch": "ignore"}, "assets.a.on_hash_mismatch"),
    ({"path": "../outside.bin"}, "assets.a.path"),
    ({"path": "models/../../outside.bin"}, "assets.a.path"),
    ({"url": "gopher://example.org/a.bin"}, "assets.a.url"),
], ids=["sha-not-hex", "sha-short", "on_missing", "on_hash_mismatch", "path-escapes", "path-escapes-nested",
        "unknown-scheme"])
def test_invalid_entry_is_named_by_asset_and_field(tmp_path, change, field):
    m = tmp_path / "assets.json"
    m.write_text(json.dumps({"assets": [{**GOOD, **change}, {**GOOD, "name": "b", "path": "models/b.bin"}]}))
    with pytest.raises(ValidationError) as ei:
        load(m)
    assert fields(ei.value) == {field}, ei.value.details
    assert str(m) in ei.value.message


def test_duplicate_names_are_reported(tmp_path):
    m = tmp_path / "assets.json"
    m.write_text(json.dumps({"assets": [GOOD, {**GOOD, "path": "models/other.bin"}]}))
    with pytest.raises(ValidationError) as ei:
        load(m)
    assert fields(ei.value) == {"assets.a.name"}
    assert "duplicate" in ei.value.details[0]["problem"]


def test_unknown_scheme_problem_lists_the_known_ones(tmp_path):
    m = tmp_path / "assets.json"
    m.write_text(json.dumps({"assets": [{**GOOD, "url": "s3://bucket/a.bin"}]}))
    with pytest.raises(ValidationError) as ei:
        load(m)
    (d,) = ei.value.details
    assert d["field"] == "assets.a.url" and "s3" in d["problem"] and "https" in d["problem"]


def test_semantic_problems_are_reported_together(tmp_path):
    m = tmp_path / "assets.json"
    m.write_text(json.dumps({"assets": [
        GOOD, {**GOOD, "path": "x.bin"},
        {**GOOD, "name": "b", "path": "../b.bin"},
        {**GOOD, "name": "c", "path": "c.bin", "url": "ftp://example.org/c"},
    ]}))
    with pytest.raises(ValidationError) as ei:
        load(m)
    assert fields(ei.value) == {"assets.a.name", "assets.b.path", "assets.c.url"}


def test_two_assets_with_one_path_are_refused(tmp_path):
    m = tmp_path / "assets.json"
    m.write_text(json.dumps({"assets": [GOOD, {**GOOD, "name": "twin", "path": "./" + GOOD["path"]}]}))
    with pytest.raises(ValidationError) as ei:
        load(m)
    (d,) = ei.value.details
    assert d["field"] == "assets.twin.path" and "'a'" in d["problem"], d


def test_schema_and_semantic_problems_are_reported_together(tmp_path):
    m = tmp_path / "assets.json"
    m.write_text(json.dumps({"assets": [
        {**GOOD, "sha256": "not-hex"},
        {**GOOD, "name": "b", "path": "../../etc/b.bin"},
    ]}))
    with pytest.raises(ValidationError) as ei:
        load(m)
    assert fields(ei.value) == {"assets.a.sha256", "assets.b.path"}


@pytest.mark.parametrize("path", [".", "models/.."])
def test_path_that_is_the_root_itself_is_rejected(tmp_path, path):
    m = tmp_path / "assets.json"
    m.write_text(json.dumps({"assets": [{**GOOD, "path": path}]}))
    with pytest.raises(ValidationError) as ei:
        load(m)
    assert fields(ei.value) == {"assets.a.path"}


def test_missing_manifest_is_input_not_found(tmp_path):
    with pytest.raises(InputNotFound) as ei:
        load(tmp_path / "nope" / "assets.json")
    assert "nope" in ei.value.message


@pytest.mark.parametrize("text", ["{not json", "", "\xff\xfe"], ids=["broken", "empty", "not-utf8"])
def test_manifest_that_is_not_json_is_a_validation_error(tmp_path, text):
    m = tmp_path / "assets.json"
    m.write_bytes(text.encode("latin-1"))
    with pytest.raises(ValidationError) as ei:
        load(m)
    assert ei.value.details and "JSON" in ei.value.details[0]["problem"]


def test_manifest_that_is_json_but_not_a_manifest(tmp_path):
    m = tmp_path / "assets.json"
    m.write_text(json.dumps({"assets": [{"name": "a"}], "extra": 1}))
    with pytest.raises(ValidationError) as ei:
        load(m)
    assert {"assets.a.url", "assets.a.path", "extra"} <= fields(ei.value)


def test_paths_resolve_against_root_relative_to_the_manifest_folder(tmp_path):
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    elsewhere = tmp_path / "elsewhere" / "abs.bin"
    m = cfg / "assets.json"
    m.write_text(json.dumps({"root": "../store", "assets": [
        {**GOOD, "path": "wav2lip/a.bin"},
        {**GOOD, "name": "abs", "path": str(elsewhere)},
        {**GOOD, "name": "dots", "path": "x/../y/./d.bin"},
    ]}))
    manifest = load(m)
    assert manifest.root == tmp_path / "store"
    assert manifest.get("a").path == tmp_path / "store" / "wav2lip" / "a.bin"
    assert manifest.get("abs").path == elsewhere  # absolute: taken as it is, even outside the root
    assert manifest.get("dots").path == tmp_path / "store" / "y" / "d.bin"
    assert manifest.get("a").on_missing == "download" and manifest.get("a").on_hash_mismatch == "fail"


def test_default_root_is_the_manifest_folder(tmp_path):
    m = tmp_path / "cfg" / "assets.json"
    m.parent.mkdir()
    m.write_text(json.dumps({"assets": [{**GOOD, "sha256": "AB" * 32}]}))
    a = load(m).get("a")
    assert a.path == tmp_path / "cfg" / "models" / "a.bin"
    assert a.sha256 == "ab" * 32  # compared lower-case


# =========================================================================== checker


def test_status_reports_each_state_and_never_downloads(kit, hash_calls):
    ok, bad, missing, nohash = payload(5000, 1), payload(5000, 2), payload(5000, 3), payload(3000, 4)
    kit.place("ok", ok)
    kit.place("bad", b"x" * 4000)
    kit.place("nohash", nohash)
    e_nohash = kit.entry("nohash", nohash)
    e_nohash.pop("sha256")
    kit.write(kit.entry("ok", ok), kit.entry("bad", bad), kit.entry("missing", missing), e_nohash)

    result = kit.manager().status()

    a = result["assets"]
    assert a["ok"] == {"status": "ok", "path": str(kit.target("ok")), "sha256": sha(ok), "actual_sha256": sha(ok),
                       "size": 5000}
    assert a["bad"]["status"] == "hash_mismatch"
    assert a["bad"]["actual_sha256"] == sha(b"x" * 4000) and a["bad"]["sha256"] == sha(bad)
    assert a["bad"]["size"] == 4000
    assert a["missing"] == {"status": "missing", "path": str(kit.target("missing")), "sha256": sha(missing)}
    assert a["nohash"] == {"status": "unknown", "path": str(kit.target("nohash")), "sha256": None, "size": 3000}
    assert result["ok"] is False
    assert kit.server.count(method=None) == 0
    assert not kit.target("missing").exists()


@pytest.mark.parametrize("present, expected", [
    (("ok",), True), (("ok", "nohash"), True), (("nohash",), True),
    (("ok", "missing"), False), (("ok", "bad"), False), (("nohash", "bad"), False),
])
def test_overall_ok_is_false_only_for_missing_or_mismatching(kit, present, expected):
    entries = []
    for name in present:
        data = payload(100, len(name))
        e = kit.entry(name, data)
        if name == "nohash":
            e["sha256"] = None
        if name != "missing":
            kit.place(name, data if name != "bad" else b"other")
        entries.append(e)
    kit.write(*entries)
    assert kit.manager().status()["ok"] is expected
    assert kit.server.count(method=None) == 0


def test_folder_in_place_of_the_asset_is_not_present(kit):
    e = kit.entry("a", payload(100, 5))
    del e["sha256"]
    kit.write(e)
    kit.target("a").mkdir(parents=True)
    result = kit.manager().status()
    assert result["assets"]["a"]["status"] != "unknown"
    assert result["ok"] is False


# =========================================================================== hash cache


@pytest.fixture
def two_present(kit) -> list[bytes]:
    datas = [payload(300_000, 10), payload(200_000, 11)]
    for i, d in enumerate(datas):
        kit.place(f"m{i}", d)
    kit.write(*(kit.entry(f"m{i}", d) for i, d in enumerate(datas)))
    return datas


def test_unchanged_files_are_hashed_once(kit, two_present, hash_calls):
    assert kit.manager().status()["ok"] is True
    assert sorted(hash_calls) == sorted([kit.target("m0"), kit.target("m1")])
    hash_calls.clear()
    assert kit.manager().status()["ok"] is True  # a new manager: the cache lives in the sidecars
    assert kit.manager().status()["ok"] is True
    assert hash_calls == []


def test_sidecar_sits_beside_the_asset(kit, two_present, hash_calls):
    kit.manager().status()
    target = kit.target("m0")
    sidecar = target.parent / ".m0.bin.vidax-sha256.json"
    assert HashCache().sidecar(target) == sidecar
    data = json.loads(sidecar.read_text())
    assert data["sha256"] == sha(two_present[0])
    assert data["key"]["size"] == 300_000


def test_new_content_is_hashed_again(kit, two_present, hash_calls):
    kit.manager().status()
    hash_calls.clear()
    kit.target("m0").write_bytes(b"changed")
    result = kit.manager().status()
    assert hash_calls == [kit.target("m0")]
    assert result["assets"]["m0"]["status"] == "hash_mismatch"
    assert result["assets"]["m0"]["actual_sha256"] == sha(b"changed")


def test_same_size_new_mtime_is_hashed_again(kit, two_present, hash_calls):
    kit.manager().status()
    hash_calls.clear()
    target = kit.target("m0")
    st = target.stat()
    # same length, different bytes, then a new mtime
    target.write_bytes(bytes(reversed(two_present[0])))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    result = kit.manager().status()
    assert hash_calls == [target]
    assert result["assets"]["m0"]["status"] == "hash_mismatch"
    # a touch alone (content as expected again) is hashed again too, and is ok
    target.write_bytes(two_present[0])
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 9_000_000_000))
    hash_calls.clear()
    assert kit.manager().status()["assets"]["m0"]["status"] == "ok"
    assert hash_calls == [target]


def test_file_replaced_by_another_inode_is_hashed_again(kit, two_present, hash_calls):
    kit.manager().status()
    hash_calls.clear()
    target = kit.target("m0")
    st = target.stat()
    other = target.with_name("replacement.tmp")
    other.write_bytes(bytes(reversed(two_present[0])))  # same size
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
    os.replace(other, target)
    assert target.stat().st_ino != st.st_ino
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    result = kit.manager().status()
    assert hash_calls == [target]
    assert result["assets"]["m0"]["status"] == "hash_mismatch"


@pytest.mark.parametrize("content", ["{not json", "[]", '{"key": {}, "sha256": "00"}', "\x00\x01"])
def test_corrupt_sidecar_is_ignored(kit, two_present, hash_calls, content):
    kit.manager().status()
    sidecar = HashCache().sidecar(kit.target("m0"))
    sidecar.write_text(content, encoding="latin-1")
    hash_calls.clear()
    result = kit.manager().status()
    assert result["ok"] is True and result["assets"]["m0"]["actual_sha256"] == sha(two_present[0])
    assert hash_calls == [kit.target("m0")]
    assert json.loads(sidecar.read_text())["sha256"] == sha(two_present[0])  # rewritten


def test_sidecar_with_a_stale_key_is_not_trusted(kit, two_present, hash_calls):
    """A sidecar claiming the expected hash for another state of the file does not make a wrong file ok."""
    kit.manager().status()
    target = kit.target("m0")
    sidecar = HashCache().sidecar(target)
    saved = sidecar.read_text()
    target.write_bytes(b"tampered")
    sidecar.write_text(saved)
    assert kit.manager().status()["assets"]["m0"]["status"] == "hash_mismatch"


def test_concurrent_status_is_consistent(kit, two_present, hash_calls):
    barrier = threading.Barrier(8)
    manager = kit.manager()

    def one(i: int):
        barrier.wait(5)
        return (manager if i % 2 else kit.manager()).status()

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, range(8)))
    assert all(r == results[0] for r in results)
    assert results[0]["ok"] is True
    for i, d in enumerate(two_present):
        assert results[0]["assets"][f"m{i}"]["actual_sha256"] == sha(d)
        assert json.loads(HashCache().sidecar(kit.target(f"m{i}")).read_text())["sha256"] == sha(d)
    assert not [p for p in kit.target("m0").parent.iterdir() if p.name.endswith(".tmp")]
    hash_calls.clear()
    assert kit.manager().status() == results[0]
    assert hash_calls == []


# =========================================================================== install policies


def test_missing_asset_is_downloaded_by_default(kit):
    data = payload(200_000, 20)
    kit.write(kit.entry("a", data))
    result = kit.manager().install()
    assert result["ok"] is True
    a = result["assets"]["a"]
    assert a["status"] == "ok" and a["action"] == "downloaded" and a["actual_sha256"] == sha(data)
    assert kit.target("a").read_bytes() == data
    assert kit.server.count("a.bin") == 1
    assert leftovers(kit.target("a").parent) == []
    # installed again: present, nothing fetched
    again = kit.manager().install()
    assert again["assets"]["a"]["action"] == "present" and kit.server.count("a.bin") == 1


def test_asset_without_hash_is_downloaded_and_reported_unknown(kit):
    data = payload(50_000, 21)
    e = kit.entry("a", data)
    del e["sha256"]
    kit.write(e)
    result = kit.manager().install()
    assert result["ok"] is True and result["assets"]["a"]["status"] == "unknown"
    assert kit.target("a").read_bytes() == data


def test_on_missing_fail_fetches_nothing(kit):
    kit.write({**kit.entry("a", payload(1000, 22)), "on_missing": "fail"})
    result = kit.manager().install()
    assert result["ok"] is False
    a = result["assets"]["a"]
    assert a["status"] == "missing" and a["action"] == "failed" and "on_missing" in a["error"]
    assert kit.server.count(method=None) == 0
    assert not kit.target("a").exists()


def test_on_hash_mismatch_fail_leaves_the_file_untouched(kit):
    data = payload(10_000, 23)
    kit.write(kit.entry("a", data))
    wrong = payload(12_345, 99)
    target = kit.place("a", wrong)
    os.utime(target, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    before = target.stat()
    result = kit.manager().install()
    a = result["assets"]["a"]
    assert result["ok"] is False
    assert a["status"] == "hash_mismatch" and a["action"] == "failed"
    assert a["actual_sha256"] == sha(wrong) and sha(data) in a["error"]
    assert target.read_bytes() == wrong
    after = target.stat()
    assert (after.st_mtime_ns, after.st_ino, after.st_size) == (before.st_mtime_ns, before.st_ino, before.st_size)
    assert kit.server.count(method=None) == 0


def test_on_hash_mismatch_redownload_fixes_the_file(kit):
    data = payload(10_000, 24)
    kit.write({**kit.entry("a", data), "on_hash_mismatch": "redownload"})
    kit.place("a", b"stale" * 100)
    result = kit.manager().install()
    assert result["ok"] is True
    assert result["assets"]["a"]["action"] == "downloaded" and result["assets"]["a"]["status"] == "ok"
    assert kit.target("a").read_bytes() == data
    assert kit.server.count("a.bin") == 1
    assert kit.manager().status()["assets"]["a"]["status"] == "ok"


def test_one_failure_does_not_stop_the_others(kit):
    good1, good2 = payload(40_000, 25), payload(30_000, 26)
    kit.write(
        kit.entry("gone", payload(100, 27), serve=False),                 # 404
        kit.entry("good1", good1),
        {**kit.entry("strict", payload(100, 28)), "on_missing": "fail"},
        kit.entry("broken", payload(5000, 29), corrupt=True),
        kit.entry("good2", good2),
    )
    result = kit.manager().install()
    a = result["assets"]
    assert result["ok"] is False
    assert {n for n, s in a.items() if s["action"] == "failed"} == {"gone", "strict", "broken"}
    assert a["good1"]["status"] == a["good2"]["status"] == "ok"
    assert kit.target("good1").read_bytes() == good1 and kit.target("good2").read_bytes() == good2


# =========================================================================== downloads


def test_dropped_connection_is_resumed_with_range_and_if_range(kit):
    data = payload(300_000, 30)
    kit.write(kit.entry("a", data, drop_after=70_000))
    result = kit.manager().install()
    assert result["ok"] is True, result
    assert kit.target("a").read_bytes() == data
    first, second = kit.server.requests_for("a.bin")
    assert first.range is None and first.status == 200
    assert second.range == "bytes=70000-"
    assert second.if_range == kit.server.etag("a.bin")
    assert second.status == 206
    assert len(kit.sleeps) == 1
    assert leftovers(kit.target("a").parent) == []


def test_server_without_range_support_starts_over(kit):
    data = payload(300_000, 31)
    kit.write(kit.entry("a", data, drop_after=100_000, ranges=False))
    result = kit.manager().install()
    assert result["ok"] is True and result["assets"]["a"]["status"] == "ok"
    assert kit.target("a").read_bytes() == data
    first, second = kit.server.requests_for("a.bin")
    assert second.range == "bytes=100000-" and second.status == 200  # asked to resume, got the whole file


def test_partial_of_a_changed_resource_is_not_spliced(kit):
    """A new version (new ETag) answers the If-Range with 200: the old bytes are thrown away."""
    old, new = payload(200_000, 32), payload(200_000, 33)
    kit.write(kit.entry("a", old, drop_after=50_000))
    assert kit.manager(attempts=1).install()["ok"] is False  # gave up after the drop: a partial stays
    assert kit.part("a").stat().st_size == 50_000
    kit.write(kit.entry("a", new))
    result = kit.manager().install()
    assert result["ok"] is True and kit.target("a").read_bytes() == new
    last = kit.server.requests_for("a.bin")[-1]
    assert last.range == "bytes=50000-" and last.if_range != kit.server.etag("a.bin") and last.status == 200


def test_resume_onto_changed_bytes_with_the_same_etag_downloads_whole_once_more(kit):
    """A server that changes a file but not its ETag: the spliced file fails verification, one whole retry."""
    old, new = payload(200_000, 34), payload(200_000, 35)
    kit.write(kit.entry("a", old, drop_after=50_000))
    assert kit.manager(attempts=1).install()["ok"] is False
    etag = kit.server.etag("a.bin")
    kit.write(kit.entry("a", new, etag=etag))
    result = kit.manager().install()
    assert result["ok"] is True and kit.target("a").read_bytes() == new
    reqs = kit.server.requests_for("a.bin")
    assert [r.range for r in reqs] == [None, "bytes=50000-", None]
    assert leftovers(kit.target("a").parent) == []


def test_complete_partial_is_verified_without_refetching(kit):
    """A partial as long as the file (a crash before the rename): the server says 416, the bytes verify."""
    data = payload(100_000, 36)
    kit.write(kit.entry("a", data))

    class Crash(Exception):
        pass

    def crash_at_end(asset):
        def progress(done, total):
            if done == len(data):
                raise Crash

        return progress

    with pytest.raises(Crash):
        kit.manager().install(progress=crash_at_end)
    assert kit.part("a").stat().st_size == len(data) and not kit.target("a").exists()
    result = kit.manager().install()
    assert result["ok"] is True and kit.target("a").read_bytes() == data
    last = kit.server.requests_for("a.bin")[-1]
    assert last.range == f"bytes={len(data)}-" and last.status == 416


def test_transient_503_is_retried_with_backoff(kit):
    data = payload(20_000, 37)
    kit.write(kit.entry("a", data, fail_status=503, fail_times=3))
    result = kit.manager(backoff=0.5, max_backoff=8.0).install()
    assert result["ok"] is True
    assert kit.server.count("a.bin") == 4
    assert len(kit.sleeps) == 3
    for i, delay in enumerate(kit.sleeps):  # exponential, with jitter between half and all of it
        assert 0.5 * 2 ** i * 0.5 <= delay <= 0.5 * 2 ** i
    assert kit.sleeps == sorted(kit.sleeps)


def test_backoff_is_capped(kit):
    kit.write(kit.entry("a", payload(1000, 38), fail_status=503, fail_times=6))
    assert kit.manager(attempts=7, backoff=1.0, max_backoff=2.0).install()["ok"] is True
    assert len(kit.sleeps) == 6 and max(kit.sleeps) <= 2.0


def test_gives_up_after_the_attempt_limit(kit):
    kit.write(kit.entry("a", payload(1000, 39), fail_status=503))
    result = kit.manager(attempts=3).install()
    a = result["assets"]["a"]
    assert result["ok"] is False and a["action"] == "failed"
    assert "503" in a["error"] and "gave up after 3 attempts" in a["error"]
    assert kit.server.count("a.bin") == 3 and len(kit.sleeps) == 2
    assert not kit.target("a").exists()


@pytest.mark.parametrize("status", [401, 403, 404])
def test_client_errors_fail_fast(kit, status):
    kit.write(kit.entry("a", payload(1000, 40), fail_status=status))
    result = kit.manager().install()
    a = result["assets"]["a"]
    assert result["ok"] is False and a["status"] == "missing" and a["action"] == "failed"
    assert str(status) in a["error"]
    assert kit.server.count("a.bin") == 1 and kit.sleeps == []
    assert not kit.target("a").exists()
    left = sorted(p.name for p in kit.target("a").parent.iterdir() if "vidax-part" in p.name)
    assert left == [], f"an empty partial file was left behind: {left}"


def test_connection_refused_is_retried_then_fails(kit):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    e = kit.entry("a", payload(100, 41), serve=False)
    e["url"] = f"http://127.0.0.1:{port}/a.bin"
    kit.write(e)
    result = kit.manager(attempts=2).install()
    assert result["ok"] is False and "gave up after 2 attempts" in result["assets"]["a"]["error"]
    assert len(kit.sleeps) == 1


def test_corrupted_bytes_fail_and_leave_nothing(kit):
    data = payload(100_000, 42)
    kit.write(kit.entry("a", data, corrupt=True))
    result = kit.manager().install()
    a = result["assets"]["a"]
    assert result["ok"] is False and a["status"] == "missing" and a["action"] == "failed"
    assert "sha256" in a["error"]
    assert not kit.target("a").exists()
    assert leftovers(kit.target("a").parent) == []
    assert kit.server.count("a.bin") == 1


def test_size_mismatch_fails(kit):
    data = payload(10_000, 43)
    kit.write({**kit.entry("a", data), "size": len(data) + 1})
    result = kit.manager().install()
    a = result["assets"]["a"]
    assert result["ok"] is False and a["action"] == "failed"
    assert str(len(data)) in a["error"] and str(len(data) + 1) in a["error"]
    assert not kit.target("a").exists() and leftovers(kit.target("a").parent) == []


def test_not_enough_disk_space_fails_before_any_request(kit):
    kit.write({**kit.entry("a", payload(1000, 44)), "size": 10**15})
    result = kit.manager().install()
    a = result["assets"]["a"]
    assert result["ok"] is False and a["action"] == "failed" and "disk space" in a["error"]
    assert kit.server.count(method=None) == 0


def test_header_values_come_from_the_environment(kit):
    data = payload(1000, 45)
    kit.write({**kit.entry("a", data),
               "headers": {"Authorization": "Bearer ${VIDAX_TEST_TOKEN}", "X-Tenant": "t-${VIDAX_TEST_TENANT}-x"}})
    result = kit.manager(env={"VIDAX_TEST_TOKEN": "tok-123", "VIDAX_TEST_TENANT": "acme"}).install()
    assert result["ok"] is True
    (req,) = kit.server.requests_for("a.bin")
    assert req.headers["Authorization"] == "Bearer tok-123"
    assert req.headers["X-Tenant"] == "t-acme-x"


def test_missing_header_variable_fails_naming_it(kit):
    kit.write({**kit.entry("a", payload(1000, 46)), "headers": {"Authorization": "Bearer ${VIDAX_TEST_TOKEN}"}})
    result = kit.manager(env={"OTHER": "x"}).install()
    a = result["assets"]["a"]
    assert result["ok"] is False and "VIDAX_TEST_TOKEN" in a["error"] and "Authorization" in a["error"]
    assert kit.server.count(method=None) == 0


def test_secrets_stay_out_of_errors_and_logs(kit, caplog):
    """Header values and a signed URL's query or user info never show in the error (it reaches the API's
    response) nor in the log."""
    caplog.set_level(logging.DEBUG, logger="vidax")
    e = kit.entry("a", payload(100, 48), fail_status=403)
    e["url"] = e["url"].replace("http://", "http://user:pw-hunter2@") + "?sig=SIGNED-SECRET"
    e["headers"] = {"Authorization": "Bearer ${VIDAX_TEST_TOKEN}"}
    kit.write(e)
    result = kit.manager(env={"VIDAX_TEST_TOKEN": "tok-SECRET-123"}).install()
    error = result["assets"]["a"]["error"]
    assert "403" in error and "/a.bin" in error
    assert kit.server.count("a.bin") == 1
    for secret in ("SIGNED-SECRET", "pw-hunter2", "tok-SECRET-123"):
        assert secret not in json.dumps(result) and secret not in vidax_log(caplog)


def test_signed_url_token_stays_out_of_connection_errors(kit, caplog):
    caplog.set_level(logging.DEBUG, logger="vidax")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kit.write({"name": "a", "url": f"http://127.0.0.1:{port}/a.bin?sig=SIGNED-SECRET", "path": "models/a.bin"})
    result = kit.manager(attempts=1).install()
    assert result["ok"] is False
    assert "SIGNED-SECRET" not in result["assets"]["a"]["error"]
    assert "SIGNED-SECRET" not in vidax_log(caplog)


def test_target_never_holds_a_partial_file(kit):
    data = payload(400_000, 47)
    kit.write(kit.entry("a", data, chunk_size=8192, chunk_delay=0.01))
    target, part = kit.target("a"), kit.part("a")
    seen: list[tuple[bool, str | None, bool]] = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            # the target first: if it exists now, the rename is behind us and no partial can come back
            content = None
            try:
                content = target.read_bytes()
            except FileNotFoundError:
                pass
            seen.append((content is not None, sha(content) if content is not None else None, part.exists()))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = kit.manager().install()
    finally:
        done.set()
        watcher.join()
    assert result["ok"] is True
    assert any(p and not t for t, _, p in seen), "the download was never observed under way"
    assert not any(t and p for t, _, p in seen)
    assert {s for t, s, _ in seen if t} <= {sha(data)}  # whenever the target existed, it was the verified file


# =========================================================================== killed processes


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_partial_left_by_a_killed_process_is_resumed(kit):
    data = payload(1_000_000, 50)
    kit.write(kit.entry("a", data, chunk_size=16_384, chunk_delay=0.02))
    part = kit.part("a")
    proc = subprocess.Popen([sys.executable, "-c", INSTALL_SCRIPT, str(kit.manifest)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: part.exists() and part.stat().st_size >= 250_000, 20, "the partial to grow")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    have = part.stat().st_size
    assert 0 < have < len(data)
    assert not kit.target("a").exists()

    kit.server.configure("a.bin")  # fast from now on
    result = kit.manager().install()
    assert result["ok"] is True and result["assets"]["a"]["status"] == "ok"
    assert kit.target("a").read_bytes() == data
    reqs = kit.server.requests_for("a.bin")
    assert len(reqs) == 2
    assert reqs[1].range == f"bytes={have}-" and reqs[1].if_range == kit.server.etag("a.bin")
    assert reqs[1].status == 206
    assert leftovers(kit.target("a").parent) == []


def test_lock_of_a_killed_holder_does_not_block(kit):
    data = payload(10_000, 51)
    kit.write(kit.entry("a", data))
    kit.target("a").parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", LOCK_SCRIPT, str(kit.target("a"))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        with ThreadPoolExecutor(1) as ex:
            fut = ex.submit(kit.manager().install)
            time.sleep(0.5)
            assert not fut.done(), "the install did not wait for the lock's holder"
            assert kit.server.count(method=None) == 0
            holder.send_signal(signal.SIGKILL)
            holder.communicate(timeout=10)
            result = fut.result(timeout=15)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate()
    assert result["ok"] is True and kit.target("a").read_bytes() == data
    assert kit.server.count("a.bin") == 1
    # and a lock that is simply left on disk by a dead holder costs nothing either
    with ThreadPoolExecutor(1) as ex:
        assert ex.submit(kit.manager().install).result(timeout=10)["assets"]["a"]["action"] == "present"


def test_target_lock_is_exclusive_between_threads(tmp_path):
    target = tmp_path / "x.bin"
    inside, overlaps = [0], []

    def work():
        with TargetLock(target):
            inside[0] += 1
            overlaps.append(inside[0])
            time.sleep(0.01)
            inside[0] -= 1

    with ThreadPoolExecutor(6) as ex:
        for f in [ex.submit(work) for _ in range(12)]:
            f.result(timeout=10)
    assert overlaps == [1] * 12


# =========================================================================== concurrency


def test_two_installs_in_threads_fetch_each_file_once(kit):
    datas = {"a": payload(200_000, 60), "b": payload(150_000, 61)}
    kit.write(*(kit.entry(n, d, chunk_size=16_384, chunk_delay=0.01) for n, d in datas.items()))
    barrier = threading.Barrier(2)

    def one(_):
        barrier.wait(5)
        return kit.manager().install()

    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(one, range(2)))
    assert all(r["ok"] for r in results), results
    for n, d in datas.items():
        assert kit.server.count(f"{n}.bin") == 1
        assert kit.target(n).read_bytes() == d
        assert sorted(r["assets"][n]["action"] for r in results) == ["downloaded", "present"]


def test_two_installs_in_processes_fetch_each_file_once(kit):
    datas = {"a": payload(300_000, 62), "b": payload(200_000, 63)}
    kit.write(*(kit.entry(n, d, chunk_size=16_384, chunk_delay=0.02) for n, d in datas.items()))
    procs = [subprocess.Popen([sys.executable, "-c", INSTALL_SCRIPT, str(kit.manifest)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=40) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert all(r["ok"] for r in results), results
    for n, d in datas.items():
        assert kit.server.count(f"{n}.bin") == 1
        assert kit.target(n).read_bytes() == d
        assert sorted(r["assets"][n]["action"] for r in results) == ["downloaded", "present"]


# =========================================================================== file:// source


def test_install_from_a_file_url(kit, tmp_path):
    data = payload(2_500_000, 70)
    src = tmp_path / "mirror" / "model weights.bin"
    src.parent.mkdir()
    src.write_bytes(data)
    kit.write({"name": "a", "url": src.as_uri(), "path": "models/a.bin", "sha256": sha(data), "size": len(data)})
    result = kit.manager().install()
    assert result["ok"] is True and result["assets"]["a"]["action"] == "downloaded"
    assert kit.target("a").read_bytes() == data
    assert leftovers(kit.target("a").parent) == []


def test_missing_file_url_fails_fast(kit, tmp_path):
    kit.write({"name": "a", "url": (tmp_path / "nope.bin").as_uri(), "path": "models/a.bin"})
    result = kit.manager().install()
    assert result["ok"] is False and "no such file" in result["assets"]["a"]["error"]
    assert kit.sleeps == []


def test_file_url_partial_is_resumed(kit, tmp_path):
    mib = 1 << 20
    data = payload(3 * mib + 123, 71)
    src = tmp_path / "mirror" / "a.bin"
    src.parent.mkdir()
    src.write_bytes(data)
    kit.write({"name": "a", "url": src.as_uri(), "path": "models/a.bin", "sha256": sha(data), "size": len(data)})

    class Crash(Exception):
        pass

    def crash_after_first_chunk(asset):
        def progress(done, total):
            raise Crash

        return progress

    with pytest.raises(Crash):  # the process "dies" after the first MiB
        kit.manager().install(progress=crash_after_first_chunk)
    assert kit.part("a").stat().st_size == mib and not kit.target("a").exists()

    seen: list[int] = []
    result = kit.manager().install(progress=lambda asset: lambda done, total: seen.append(done))
    assert result["ok"] is True and kit.target("a").read_bytes() == data
    assert seen[0] == 2 * mib  # went on from the first MiB rather than starting over
    assert seen[-1] == len(data)


def test_file_url_partial_of_a_changed_source_starts_over(kit, tmp_path):
    mib = 1 << 20
    old, new = payload(2 * mib, 72), payload(2 * mib, 73)
    src = tmp_path / "mirror" / "a.bin"
    src.parent.mkdir()
    src.write_bytes(old)
    kit.write({"name": "a", "url": src.as_uri(), "path": "models/a.bin", "sha256": sha(new)})

    class Crash(Exception):
        pass

    def crash(asset):
        def progress(done, total):
            raise Crash

        return progress

    with pytest.raises(Crash):
        kit.manager().install(progress=crash)
    src.write_bytes(new)
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    seen: list[int] = []
    result = kit.manager().install(progress=lambda asset: lambda done, total: seen.append(done))
    assert result["ok"] is True and kit.target("a").read_bytes() == new
    assert seen[0] == mib  # from the start


# =========================================================================== HTTP


@pytest.fixture
def client(vidax):
    return testing.TestClient(create_app(vidax), headers={"X-API-Key": API_KEY})


def test_http_status_and_install(kit, vidax, client):
    a, b = payload(30_000, 80), payload(20_000, 81)
    kit.write(kit.entry("a", a), kit.entry("b", b))
    kit.place("b", b)

    r = client.simulate_get("/install/status")
    assert r.status_code == 200
    assert r.json["ok"] is False
    assert r.json["assets"]["a"] == {"status": "missing", "path": str(kit.target("a")), "sha256": sha(a)}
    assert r.json["assets"]["b"]["status"] == "ok"
    assert kit.server.count(method=None) == 0

    r = client.simulate_post("/install")
    assert r.status_code == 200, r.text
    assert r.json["ok"] is True
    assert r.json["assets"]["a"]["action"] == "downloaded" and r.json["assets"]["b"]["action"] == "present"
    assert kit.target("a").read_bytes() == a

    r = client.simulate_get("/install/status")
    assert r.status_code == 200 and r.json["ok"] is True
    assert {n: s["status"] for n, s in r.json["assets"].items()} == {"a": "ok", "b": "ok"}


def test_http_install_failure_is_400_with_per_asset_details(kit, vidax, client):
    good = payload(10_000, 82)
    kit.write(kit.entry("good", good), kit.entry("gone", payload(100, 83), serve=False))
    r = client.simulate_post("/install")
    assert r.status_code == 400
    err = r.json["error"]
    assert r.json["ok"] is False and err["code"] == "VALIDATION_ERROR"
    assert "gone" in err["message"]
    (d,) = err["details"]
    assert d["field"] == "assets.gone" and d["asset"] == "gone" and "404" in d["problem"]
    assert d["status"] == "missing" and d["action"] == "failed"
    assert kit.target("good").read_bytes() == good  # the other one was installed all the same


def test_http_without_manifest_is_404(vidax, client):
    assert not vidax.settings.assets_config.exists()
    for r in (client.simulate_get("/install/status"), client.simulate_post("/install")):
        assert r.status_code == 404
        assert r.json["error"]["code"] == "INPUT_NOT_FOUND"


@pytest.mark.parametrize("text", ["{broken", json.dumps({"assets": [{**GOOD, "on_missing": "maybe"}]})],
                         ids=["not-json", "invalid"])
def test_http_invalid_manifest_is_400(vidax, client, text):
    vidax.settings.assets_config.write_text(text)
    for r in (client.simulate_get("/install/status"), client.simulate_post("/install")):
        assert r.status_code == 400
        assert r.json["error"]["code"] == "VALIDATION_ERROR"
        assert r.json["error"]["details"]
    if "maybe" in text:
        assert r.json["error"]["details"][0]["field"] == "assets.a.on_missing"


def test_http_install_endpoints_need_the_key(vidax):
    bare = testing.TestClient(create_app(vidax))
    assert bare.simulate_get("/install/status").status_code == 401
    assert bare.simulate_post("/install", headers={"X-API-Key": "wrong-key-0000000000"}).status_code == 403


# =========================================================================== job start


class NeedsModel(BasePhase):
    """A phase between prepare and encode that only needs an asset."""

    name = "needs_model"
    order = 150

    def enabled(self, job):
        return True

    def required_assets(self, job):
        return ["lip_model"]

    def run(self, ctx):
        return {}


class NeedsModelPlugin:
    @hookimpl
    def register_phases(self, register):
        register(NeedsModel())


@pytest.fixture
def job_vidax(settings):
    pm = get_plugin_manager(extra=[NeedsModelPlugin()])
    vx = Vidax(settings, plugin_manager=pm, executor="inline")
    yield vx
    vx.close()


def _job(media):
    from conftest import simple_job

    return simple_job(audio=str(media.wav), image=str(media.png), fps=10)


def test_job_start_with_missing_asset_is_input_not_found(kit, job_vidax, media):
    data = payload(1000, 90)
    kit.write(kit.entry("lip_model", data))
    run_id = job_vidax.create_run(_job(media))["run_id"]
    with pytest.raises(InputNotFound) as ei:
        job_vidax.start_run(run_id)
    assert "lip_model" in ei.value.message
    assert job_vidax.status(run_id)["run_status"] == "queued"
    assert kit.server.count(method=None) == 0  # the start check never downloads


def test_job_start_with_asset_not_in_the_manifest_is_input_not_found(kit, job_vidax, media):
    kit.write(kit.entry("something_else", b"x"))
    run_id = job_vidax.create_run(_job(media))["run_id"]
    with pytest.raises(InputNotFound) as ei:
        job_vidax.start_run(run_id)
    assert "lip_model" in ei.value.message


def test_job_start_with_mismatching_asset_is_validation_error(kit, job_vidax, media):
    data = payload(1000, 91)
    kit.write(kit.entry("lip_model", data))
    kit.place("lip_model", b"not the model")
    run_id = job_vidax.create_run(_job(media))["run_id"]
    with pytest.raises(ValidationError) as ei:
        job_vidax.start_run(run_id)
    assert fields(ei.value) == {"assets.lip_model"}
    assert job_vidax.status(run_id)["run_status"] == "queued"


def test_job_start_with_asset_present_runs(kit, job_vidax, media):
    data = payload(1000, 92)
    kit.write(kit.entry("lip_model", data))
    kit.place("lip_model", data)
    run_id = job_vidax.create_run(_job(media))["run_id"]
    assert job_vidax.start_run(run_id)["run_status"] == "running"
    st = job_vidax.status(run_id)
    assert st["run_status"] == "completed", st
    assert st["phases"]["needs_model"]["status"] == "completed"


def test_job_start_http_maps_asset_errors(kit, settings, media):
    pm = get_plugin_manager(extra=[NeedsModelPlugin()])
    vx = Vidax(settings, plugin_manager=pm, executor="inline")
    try:
        client = testing.TestClient(create_app(vx), headers={"X-API-Key": API_KEY})
        data = payload(1000, 93)
        kit.write(kit.entry("lip_model", data))
        run_id = vx.create_run(_job(media))["run_id"]
        r = client.simulate_post(f"/jobs/{run_id}/start")
        assert r.status_code == 404 and r.json["error"]["code"] == "INPUT_NOT_FOUND"
        kit.place("lip_model", b"wrong")
        r = client.simulate_post(f"/jobs/{run_id}/start")
        assert r.status_code == 400 and r.json["error"]["code"] == "VALIDATION_ERROR"
    finally:
        vx.close()


# =========================================================================== CLI


def cli(cwd: Path, manifest: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDAX_")}
    env.update(VIDAX_ASSETS_CONFIG=str(manifest), VIDAX_API_KEY=API_KEY, VIDAX_LOAD_PLUGINS="")
    return subprocess.run([str(VIDAX), "install", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


def test_cli_check_install_check(kit, tmp_path):
    datas = {"alpha_model": payload(40_000, 100), "beta_model": payload(30_000, 101)}
    kit.write(*(kit.entry(n, d) for n, d in datas.items()))
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    r = cli(cwd, kit.manifest, "--check")
    assert r.returncode != 0, r
    assert "alpha_model" in r.stdout and "beta_model" in r.stdout and "missing" in r.stdout
    assert kit.server.count(method=None) == 0

    r = cli(cwd, kit.manifest)
    assert r.returncode == 0, (r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    for name in datas:
        (row,) = [line for line in lines if line.startswith(name)]
        assert "ok" in row and "downloaded" in row
        assert kit.target(name).read_bytes() == datas[name]
    assert "all assets present and verified" in r.stdout
    assert kit.server.count("alpha_model.bin") == 1

    r = cli(cwd, kit.manifest, "--check")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert kit.server.count(method=None) == 2
    assert not (cwd / "runs").exists() or not any((cwd / "runs").iterdir())


def test_cli_install_exits_non_zero_when_one_fails(kit, tmp_path):
    good = payload(20_000, 102)
    kit.write(kit.entry("good_model", good), kit.entry("gone_model", payload(100, 103), serve=False))
    r = cli(tmp_path, kit.manifest)
    assert r.returncode == 1, (r.stdout, r.stderr)
    (row,) = [line for line in r.stdout.splitlines() if line.startswith("gone_model")]
    assert "failed" in row and "404" in row
    assert any(line.startswith("good_model") and "ok" in line for line in r.stdout.splitlines())
    assert kit.target("good_model").read_bytes() == good


def test_cli_invalid_or_missing_manifest(kit, tmp_path):
    r = cli(tmp_path, tmp_path / "nope.json", "--check")
    assert r.returncode == 1 and "INPUT_NOT_FOUND" in r.stderr
    kit.manifest.write_text(json.dumps({"assets": [{**GOOD, "sha256": "zz"}]}))
    r = cli(tmp_path, kit.manifest)
    assert r.returncode == 2 and "assets.a.sha256" in r.stderr


def test_settings_point_at_the_manifest(tmp_path):
    s = load_settings(env={"VIDAX_ASSETS_CONFIG": "conf/assets.json"}, cwd=tmp_path)
    assert s.assets_config == tmp_path / "conf" / "assets.json"
