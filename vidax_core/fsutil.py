"""Small file-system primitives: atomic replacement and directory fsync."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp file in the same folder, fsync, rename, fsync the folder.

    Readers see the old content or the new one, never a mix, and a crash leaves one of the two."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or creation in ``path`` durable (best effort where the platform refuses)."""
    try:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def file_mode() -> int:
    """The mode a plainly created file gets here (0o666 less the umask): temp files from ``mkstemp`` are 0o600,
    which would keep a web server running as another user from serving results."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o644


def temp_file_beside(dest: Path, suffix: str = ".part") -> str:
    """A new, empty temp file in ``dest``'s folder, with the mode a plain file would get."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    try:
        os.fchmod(fd, file_mode())
    finally:
        os.close(fd)
    return tmp
