"""The asset manifest and its checker: which models and large files VIDAX needs, and whether they are there.

* :func:`load_asset_manifest` reads and validates ``config/assets.json`` (every problem at once, each naming the
  asset and the field);
* :class:`HashCache` remembers the sha256 of a file by (size, mtime, inode), in a small sidecar file beside it,
  so checking unchanged multi-GB models again hashes nothing;
* :class:`AssetManager` answers ``status()`` (never downloads), ``install()`` (downloads through the asset
  sources, see :mod:`vidax_core.download`) and ``require(names)`` (the check at job start).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import os
import stat
from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import Factory
from attrs import define
from attrs import frozen

from .errors import InputNotFound
from .errors import Problem
from .errors import ValidationError
from .fsutil import atomic_write
from .schema import schema_problems
from .urls import scheme_of

log = logging.getLogger("vidax.assets")

HASH_BUFFER = 1 << 20
SIDECAR_PREFIX = "."
SIDECAR_SUFFIX = ".vidax-sha256.json"


@frozen
class Asset:
    """One entry of the manifest, with its path resolved."""

    name: str
    url: str
    path: Path
    sha256: str | None = None
    size: int | None = None
    on_missing: str = "download"
    on_hash_mismatch: str = "fail"
    headers: Mapping[str, str] = Factory(dict)


@frozen
class AssetManifest:
    path: Path
    root: Path
    assets: tuple[Asset, ...]

    def get(self, name: str) -> Asset | None:
        for a in self.assets:
            if a.name == name:
                return a
        return None


def load_asset_manifest(path: Path, schemes: Collection[str]) -> AssetManifest:
    """Read and validate the manifest at ``path``.

    :param schemes: URL schemes some asset source handles.
    :raises InputNotFound: there is no file at ``path``.
    :raises ValidationError: it is not JSON or does not validate; ``details`` names asset and field.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"asset manifest {path} not found (set VIDAX_ASSETS_CONFIG or \"assets_config\")")
    what = f"asset manifest {path}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ValidationError.from_problems([Problem("(file)", f"not valid JSON{where}")], what) from None
    except OSError as exc:
        raise InputNotFound(f"{what} cannot be read: {exc.strerror}") from None

    problems = [_name_asset(p, data) for p in schema_problems("assets", data)]
    if not isinstance(data, dict) or not isinstance(data.get("assets"), list):
        raise ValidationError.from_problems(problems, what)
    root_value = data.get("root", ".")
    root = (path.parent / (root_value if isinstance(root_value, str) else ".")).resolve()

    # the checks a schema cannot make run on every entry that has what they need, so a manifest's problems
    # are all reported at once
    assets: list[Asset] = []
    names: set[str] = set()
    targets: dict[Path, str] = {}
    for i, entry in enumerate(data["assets"]):
        if not isinstance(entry, dict):
            continue
        name = entry.get("name") if isinstance(entry.get("name"), str) else f"[{i}]"
        field = f"assets.{name}"
        if name in names:
            problems.append(Problem(f"{field}.name", "duplicate asset name"))
        names.add(name)
        target = None
        if isinstance(entry.get("path"), str) and entry["path"]:
            raw_path = Path(os.path.expanduser(entry["path"]))
            if raw_path.is_absolute():
                target = Path(os.path.normpath(raw_path))
            else:
                target = Path(os.path.normpath(root / raw_path))
                if root not in target.parents:
                    problems.append(Problem(f"{field}.path", f"{entry['path']!r} does not name a file inside the "
                                                             f"asset root {root}"))
            if target in targets:
                problems.append(Problem(f"{field}.path", f"is also the path of asset {targets[target]!r}"))
            targets.setdefault(target, name)
        if isinstance(entry.get("url"), str):
            scheme = scheme_of(entry["url"])
            if scheme is not None and scheme not in schemes:
                known = ", ".join(sorted(schemes)) or "none"
                problems.append(Problem(f"{field}.url", f"no asset source handles {scheme}:// URLs (known: {known})"))
        if not problems and target is not None:
            assets.append(Asset(
                name=name, url=entry["url"], path=target,
                sha256=entry["sha256"].lower() if entry.get("sha256") else None,
                size=entry.get("size"), on_missing=entry.get("on_missing", "download"),
                on_hash_mismatch=entry.get("on_hash_mismatch", "fail"), headers=dict(entry.get("headers", {})),
            ))
    if problems:
        raise ValidationError.from_problems(list(dict.fromkeys(problems)), what)
    return AssetManifest(path=path, root=root, assets=tuple(assets))


def _name_asset(problem: Problem, data: Any) -> Problem:
    """``assets[2].on_missing`` -> ``assets.wav2lip_gan.on_missing`` where the entry has a usable name."""
    field = problem.field
    if not field.startswith("assets[") or not isinstance(data, dict) or not isinstance(data.get("assets"), list):
        return problem
    index, _, rest = field[len("assets["):].partition("]")
    try:
        entry = data["assets"][int(index)]
    except (ValueError, IndexError):
        return problem
    name = entry.get("name") if isinstance(entry, dict) else None
    if isinstance(name, str) and name:
        return Problem(f"assets.{name}{rest}", problem.problem)
    return problem


# --------------------------------------------------------------------------- hashing


def hash_file(path: Path) -> str:
    """The sha256 of a file, read in large blocks (hashlib releases the GIL while hashing them)."""
    h = hashlib.sha256()
    buf = bytearray(HASH_BUFFER)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


class HashCache:
    """sha256 of files by (size, mtime_ns, inode, device), kept in a sidecar ``.<name>.vidax-sha256.json``.

    A sidecar is written atomically and describes only its own file, so concurrent writers (threads,
    processes) never corrupt each other; a changed file (any of the keys differs) is hashed again."""

    def sidecar(self, path: Path) -> Path:
        return path.with_name(f"{SIDECAR_PREFIX}{path.name}{SIDECAR_SUFFIX}")

    @staticmethod
    def _key(st: os.stat_result) -> dict[str, int]:
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "dev": st.st_dev}

    def get(self, path: Path, st: os.stat_result | None = None) -> str | None:
        try:
            st = st or os.stat(path)
            data = json.loads(self.sidecar(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("key") != self._key(st):
            return None
        sha = data.get("sha256")
        return sha if isinstance(sha, str) and len(sha) == 64 else None

    def put(self, path: Path, sha256: str, st: os.stat_result | None = None) -> None:
        try:
            st = st or os.stat(path)
            atomic_write(self.sidecar(path), json.dumps({"key": self._key(st), "sha256": sha256}).encode())
        except OSError as exc:  # a read-only model folder still works, just without the cache
            log.debug("hash cache for %s not written: %s", path, exc)

    def forget(self, path: Path) -> None:
        try:
            self.sidecar(path).unlink()
        except OSError:
            pass

    def sha256(self, path: Path) -> str:
        """The file's sha256, from the cache when the file is unchanged, else hashed and cached."""
        st = os.stat(path)
        cached = self.get(path, st)
        if cached is not None:
            return cached
        sha = hash_file(path)
        st_after = os.stat(path)
        if self._key(st_after) == self._key(st):  # unchanged while we read it: safe to remember
            self.put(path, sha, st_after)
        return sha


# --------------------------------------------------------------------------- status


@define
class AssetState:
    """What is known about one asset; ``to_dict`` is its entry in ``/install/status`` and ``/install``."""

    name: str
    status: str  # ok | missing | hash_mismatch | unknown | failed
    path: str
    sha256: str | None
    actual_sha256: str | None = None
    size: int | None = None
    action: str | None = None  # present | downloaded | failed (install only)
    error: str | None = None

    @property
    def good(self) -> bool:
        return self.status in ("ok", "unknown")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "path": self.path, "sha256": self.sha256}
        for key in ("actual_sha256", "size", "action", "error"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


def check_asset(asset: Asset, cache: HashCache) -> AssetState:
    """The asset's status on disk; never downloads, never changes the file."""
    state = AssetState(name=asset.name, status="missing", path=str(asset.path), sha256=asset.sha256)
    try:
        st = os.stat(asset.path)
    except FileNotFoundError:
        return state
    except OSError as exc:
        state.error = f"cannot stat: {exc.strerror}"
        return state
    if not stat.S_ISREG(st.st_mode):
        state.error = "something that is not a file is in its place"
        return state
    state.size = st.st_size
    if not asset.sha256:
        state.status = "unknown"
        return state
    try:
        state.actual_sha256 = cache.sha256(asset.path)
    except OSError as exc:
        state.status, state.error = "hash_mismatch", f"cannot read: {exc.strerror}"
        return state
    state.status = "ok" if state.actual_sha256 == asset.sha256 else "hash_mismatch"
    return state


def report(states: Iterable[AssetState]) -> dict[str, Any]:
    """``{"ok": ..., "assets": {name: ...}}``: ok unless an asset is missing, mismatching or failed."""
    states = list(states)
    return {"ok": all(s.good for s in states), "assets": {s.name: s.to_dict() for s in states}}


ProgressFactory = Callable[[Asset], Callable[[int, int | None], None]]


class AssetManager:
    """The asset manifest, checked and installed.

    :param manifest_path: ``settings.assets_config``.
    :param registry: the plugin registry (asset sources by scheme).
    """

    def __init__(self, manifest_path: Path, registry: Any, *, max_parallel: int = 4, installer: Any = None):
        self.manifest_path = Path(manifest_path)
        self.registry = registry
        self.cache = HashCache()
        self.max_parallel = max_parallel
        if installer is None:
            from .download import Installer

            installer = Installer(registry, self.cache)
        self.installer = installer

    def manifest(self) -> AssetManifest:
        return load_asset_manifest(self.manifest_path, self.registry.sources.keys())

    def status(self) -> dict[str, Any]:
        """Every asset's status (``install=false``): hashes from the cache where files are unchanged."""
        manifest = self.manifest()
        return report(self._map(lambda a: check_asset(a, self.cache), manifest.assets))

    def install(self, progress: ProgressFactory | None = None) -> dict[str, Any]:
        """Ensure every asset (``install=true``) by its policies; one asset's failure does not stop the others.

        :return: the report; ``ok`` is false when any asset failed (the caller decides how to say so).
        """
        manifest = self.manifest()

        def one(asset: Asset) -> AssetState:
            return self.installer.ensure(asset, progress=progress(asset) if progress else None)

        return report(self._map(one, manifest.assets))

    def require(self, names: Iterable[str]) -> None:
        """The check at job start: each named asset present and verified.

        :raises InputNotFound: the manifest, an entry or a file is missing.
        :raises ValidationError: a file's hash does not match.
        """
        names = list(dict.fromkeys(names))
        if not names:
            return
        manifest = self.manifest()
        missing, mismatched = [], []
        for name in names:
            asset = manifest.get(name)
            if asset is None:
                missing.append(f"{name} (not in the asset manifest {manifest.path})")
                continue
            state = check_asset(asset, self.cache)
            if state.status == "missing":
                missing.append(f"{name} ({asset.path})")
            elif state.status == "hash_mismatch":
                mismatched.append(Problem(f"assets.{name}", f"sha256 of {asset.path} is {state.actual_sha256}, "
                                                            f"expected {asset.sha256}"))
        if missing:
            raise InputNotFound("assets missing: " + ", ".join(missing) + "; run `vidax install` or POST /install")
        if mismatched:
            raise ValidationError.from_problems(mismatched, "the run's assets")

    def _map(self, fn: Callable[[Asset], AssetState], assets: Iterable[Asset]) -> list[AssetState]:
        assets = list(assets)
        if len(assets) <= 1:
            return [fn(a) for a in assets]
        with cf.ThreadPoolExecutor(min(self.max_parallel, len(assets)), thread_name_prefix="vidax-asset") as ex:
            return list(ex.map(fn, assets))
