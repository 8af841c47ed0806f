"""The builtin VIDAX plugins: one module per concern, each a plain module of ``@hookimpl`` functions.

They are loaded by the plugin manager from ``vidax_core.plugins.DEFAULT_PLUGINS`` (dotted module paths),
through the same hooks a third-party plugin uses.
"""
