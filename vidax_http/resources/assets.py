"""``GET /install/status`` and ``POST /install``."""

from __future__ import annotations


class InstallStatus:
    """Every asset's status; never downloads."""

    def __init__(self, core):
        self._core = core

    def on_get(self, req, resp):
        resp.media = self._core.asset_status()


class Install:
    """Install and verify every asset; 400 with per-asset details when any fails."""

    def __init__(self, core):
        self._core = core

    def on_post(self, req, resp):
        resp.media = self._core.install()
