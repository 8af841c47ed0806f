"""The module-level WSGI app for gunicorn: ``gunicorn vidax_http.wsgi:app``.

Configuration comes from the environment and ``config/vidax.json`` (see ``docs/configuration.md``).
"""

from __future__ import annotations

import logging
import os

from vidax_core import Vidax
from vidax_core import load_settings

from .app import create_app

logging.basicConfig(level=os.environ.get("VIDAX_LOG_LEVEL", "INFO").upper(),
                    format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")

core = Vidax(load_settings())
app = create_app(core)
