"""``GET /comfyui/health`` and ``POST /comfyui/start``."""

from __future__ import annotations

import falcon

from vidax_core.errors import VidaxError

from ..errors import from_vidax_error


class ComfyUIHealth:
    def __init__(self, core):
        self._core = core

    def on_get(self, req, resp):
        resp.media = self._core.comfyui_health()


class ComfyUIStart:
    def __init__(self, core):
        self._core = core

    def on_post(self, req, resp):
        try:
            resp.media = self._core.comfyui_start()
        except VidaxError as exc:
            # SPEC: a failed start answers 500 here (COMFYUI_TIMEOUT, COMFYUI_START_FAILED), whereas the same
            # codes at job start are 424, where ComfyUI is a dependency of the request rather than its subject
            raise from_vidax_error(exc, status=500) from None
        resp.status = falcon.HTTP_202
