"""The Falcon HTTP API over :class:`vidax_core.Vidax`. It turns requests into core calls and core results
into responses; it holds no business logic. ``create_app(core)`` builds the app; ``vidax_http.wsgi:app`` is
the module-level app for gunicorn."""

from .app import create_app

__all__ = ["create_app"]
