"""JSON Schemas shipped with VIDAX, and their errors turned into :class:`Problem` lists.

The schemas are package data (``vidax_core/schemas``) so an installed VIDAX carries them; the job schema is
published as ``docs/job.schema.json`` too (a test keeps the two identical) and served at ``GET /schema/job``.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from .errors import Problem


@cache
def _load(name: str) -> dict[str, Any]:
    text = resources.files("vidax_core").joinpath("schemas", f"{name}.schema.json").read_text("utf-8")
    return json.loads(text)


def load_schema(name: str) -> dict[str, Any]:
    """A copy of the named schema (``job``, ``config``, ...), safe to hand out."""
    return copy.deepcopy(_load(name))


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = _load(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def dotted(path, key: str | None = None) -> str:
    """``['inputs', 'audio']`` -> ``inputs.audio``; list indexes as ``[n]``."""
    out = ""
    for part in [*path, *([key] if key is not None else [])]:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(root)"


def schema_problems(name: str, instance: Any) -> list[Problem]:
    """Every violation of schema ``name`` by ``instance``, each naming its field.

    Unknown keys are reported one by one (``field`` is the unknown key's path), and a missing required key
    names that key, so a user reads which field to fix rather than which object."""
    problems: list[Problem] = []
    for err in _validator(name).iter_errors(instance):
        problems.extend(explain_error(err))
    # stable and free of repeats (if/then/else can report one missing key twice)
    seen: dict[Problem, None] = {}
    for p in sorted(problems, key=lambda p: p.field):
        seen.setdefault(p, None)
    return list(seen)


def explain_error(err: jsonschema.ValidationError) -> list[Problem]:
    path = list(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = set(err.schema.get("properties", {}))
        extra = sorted(k for k in err.instance if k not in allowed)
        return [Problem(dotted(path, k), "unknown key") for k in extra]
    if err.validator == "required" and isinstance(err.instance, dict):
        missing = [k for k in err.validator_value if k not in err.instance]
        return [Problem(dotted(path, k), "is required") for k in missing]
    if err.validator in ("anyOf", "oneOf") and err.context:
        # name the expected types instead of echoing the whole sub-schema
        types = sorted({str(e.validator_value) for e in err.context if e.validator == "type"})
        if types:
            return [Problem(dotted(path), f"must be of type {' or '.join(types)}, not {_kind(err.instance)}")]
    if err.validator == "type":
        return [Problem(dotted(path), f"must be of type {err.validator_value}, not {_kind(err.instance)}")]
    if err.validator == "enum":
        choices = ", ".join(json.dumps(c) for c in err.validator_value)
        return [Problem(dotted(path), f"must be one of {choices}, not {json.dumps(err.instance)}")]
    return [Problem(dotted(path), err.message)]


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
            int: "integer", float: "number"}.get(type(value), type(value).__name__)
