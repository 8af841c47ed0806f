"""Driving ComfyUI: the supervised process (:mod:`.process`), the HTTP + websocket client (:mod:`.client`) and
workflow placeholder binding (:mod:`.workflow`)."""

from .client import ComfyUIClient
from .process import ComfyUIProcess
from .workflow import bind_workflow
from .workflow import find_placeholders
from .workflow import load_workflow

__all__ = ["ComfyUIClient", "ComfyUIProcess", "bind_workflow", "find_placeholders", "load_workflow"]
