"""Falcon resources: plain noun classes that call the core and shape its answers."""
