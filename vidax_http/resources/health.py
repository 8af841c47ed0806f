from __future__ import annotations


class Health:
    """``GET /health``: the process answers."""

    def on_get(self, req, resp):
        resp.media = {"ok": True}
