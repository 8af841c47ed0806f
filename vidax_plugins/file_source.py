"""The ``file`` asset source: ``file:///abs/path`` URLs, for assets mirrored on a local or network disk."""

from __future__ import annotations

import os
import shutil
from typing import BinaryIO
from urllib.parse import unquote
from urllib.parse import urlsplit

from vidax_core import hookimpl
from vidax_core.errors import FetchError

CHUNK = 1 << 20


class FileSource:
    schemes = ("file",)

    def fetch(self, url: str, dest: BinaryIO, *, resume_from: int = 0, validator=None, headers=None,
              progress=None, on_validator=None) -> int:
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise FetchError(f"file URL {url} names a host; only file:///path is supported")
        path = unquote(parts.path)
        try:
            src = open(path, "rb")
        except FileNotFoundError:
            raise FetchError(f"{url}: no such file", status=404) from None
        except OSError as exc:
            raise FetchError(f"{url}: {exc.strerror}") from None
        with src:
            st = os.fstat(src.fileno())
            total = st.st_size
            if on_validator is not None:
                on_validator(f"{st.st_size}-{st.st_mtime_ns}")
            if validator is not None and validator != f"{st.st_size}-{st.st_mtime_ns}":
                resume_from = 0  # the file changed since the partial copy began
            if resume_from > total:
                resume_from = 0
            src.seek(resume_from)
            dest.seek(resume_from)
            dest.truncate()
            done = resume_from
            if progress is None:
                shutil.copyfileobj(src, dest, CHUNK)
                done = total
            else:
                while chunk := src.read(CHUNK):
                    dest.write(chunk)
                    done += len(chunk)
                    progress(done, total)
        return done


@hookimpl
def register_asset_sources(register):
    register(FileSource())
