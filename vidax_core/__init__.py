"""VIDAX: turn audio, an image or video and a ComfyUI workflow into a finished talking-head video.

The library's front door is :class:`Vidax`; plugins implement the hooks of :mod:`vidax_core.hookspecs`
and mark their functions with :data:`hookimpl`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from .config import Settings
from .config import load_settings
from .core import Vidax
from .errors import VidaxError
from .hookspecs import hookimpl
from .phases import BasePhase
from .phases import PhaseContext

try:
    __version__ = _version("vidax")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without an install
    __version__ = "0+unknown"

__all__ = [
    "BasePhase",
    "PhaseContext",
    "Settings",
    "Vidax",
    "VidaxError",
    "__version__",
    "hookimpl",
    "load_settings",
]
