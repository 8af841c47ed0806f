"""API-format workflows and their ``{{placeholders}}``.

Any string value of the form ``{{name}}`` is replaced by ``params[name]``, keeping the param's JSON type when
the placeholder is the whole string; inside a longer string it is replaced as text. ``{{inputs.image}}``,
``{{inputs.audio}}``, ``{{inputs.video}}`` become the uploaded files' names as ComfyUI references uploads
(``subfolder/name``), ``{{inputs.prompt}}`` the prompt. Links (``["4", 0]``) and keys are never touched.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import Problem

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*\}\}")
WHOLE = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*\}\}$")
INPUT_NAMES = ("inputs.image", "inputs.audio", "inputs.video", "inputs.prompt")


def load_workflow(ref: str | Mapping[str, Any], base: Path | None = None) -> dict[str, Any]:
    """The workflow object: ``ref`` itself, or the JSON file it names (relative to ``base``).

    :raises ValueError: with a message fit for a user (not JSON, not API format, UI format given).
    """
    if isinstance(ref, Mapping):
        wf = dict(ref)
    else:
        path = Path(os.path.expanduser(ref))
        if not path.is_absolute() and base is not None:
            path = base / path
        try:
            wf = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"workflow file not found: {ref}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"workflow file {ref} cannot be read: {exc}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"workflow file {ref} is not JSON: {exc.msg} at line {exc.lineno}") from None
    check_api_format(wf)
    return wf


def check_api_format(wf: Any) -> None:
    """Raise ValueError unless ``wf`` looks like an API-format graph ``{id: {class_type, inputs}}``."""
    if not isinstance(wf, dict) or not wf:
        raise ValueError("the workflow must be a non-empty JSON object of nodes (ComfyUI's API format)")
    if "nodes" in wf and "links" in wf:
        raise ValueError("this is a UI-format workflow; in ComfyUI use \"Export (API)\" and give that file")
    for node_id, node in wf.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise ValueError(f"node {node_id!r} has no class_type: not an API-format workflow")
        if not isinstance(node.get("inputs", {}), dict):
            raise ValueError(f"node {node_id!r}: inputs must be an object")


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{where}[{i}]")


def find_placeholders(wf: Mapping[str, Any]) -> dict[str, list[str]]:
    """``{name: [where, ...]}`` for every placeholder in the workflow's input values."""
    found: dict[str, list[str]] = {}
    for node_id, node in wf.items():
        for where, text in _strings(node.get("inputs", {}), f"node {node_id} ({node.get('class_type')}) input"):
            for name in PLACEHOLDER.findall(text):
                found.setdefault(name, []).append(where.replace("input.", "input ", 1))
    return found


def unbound_problems(wf: Mapping[str, Any], params: Mapping[str, Any], inputs: Mapping[str, Any],
                     field: str = "comfyui.workflow") -> list[Problem]:
    """A problem for each placeholder that has no value: a missing param, or an input the job does not give."""
    problems = []
    for name, places in sorted(find_placeholders(wf).items()):
        if name in INPUT_NAMES:
            if not inputs.get(name.split(".", 1)[1]):
                problems.append(Problem(field, f"placeholder {{{{{name}}}}} ({places[0]}) needs {name}, "
                                               "which the job does not give"))
        elif name not in params:
            problems.append(Problem(field, f"placeholder {{{{{name}}}}} ({places[0]}) is unbound: add "
                                           f"\"{name}\" to comfyui.params"))
    return problems


def bind_workflow(wf: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``wf`` with every placeholder replaced from ``values`` (params and ``inputs.*``).

    :raises KeyError: a placeholder has no value (callers validate with :func:`unbound_problems` first).
    """

    def sub(value: Any) -> Any:
        if isinstance(value, str):
            m = WHOLE.match(value)
            if m:
                return copy.deepcopy(values[m.group(1)])
            return PLACEHOLDER.sub(lambda m: _text(values[m.group(1)]), value)
        if isinstance(value, dict):
            return {k: sub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v) for v in value]
        return value

    return {node_id: {**node, "inputs": sub(node.get("inputs", {}))} for node_id, node in wf.items()}


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)
