"""``GET /schema/job`` and ``GET /openapi.json``."""

from __future__ import annotations


class JobSchema:
    def __init__(self, core):
        self._core = core

    def on_get(self, req, resp):
        resp.media = self._core.job_schema()


class OpenApi:
    def __init__(self, document):
        self._document = document

    def on_get(self, req, resp):
        resp.media = self._document
