"""The one cattrs converter of VIDAX: JSON-ready dicts into the attrs models and back.

Input is validated against the JSON Schemas before it is structured, so the hooks here only shape data;
``forbid_extra_keys`` stays on as a second guard against keys the schema and the models disagree on.
"""

from __future__ import annotations

from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn
from cattrs.gen import override

from .models import ComfyUIJob
from .models import LipsyncJob
from .models import PhaseState


def make_converter() -> cattrs.Converter:
    """A new converter with every VIDAX hook registered."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    register_hooks(converter)
    return converter


def register_hooks(converter: cattrs.Converter) -> None:
    _register_union_hooks(converter)
    _register_phase_hooks(converter)


def _register_union_hooks(converter: cattrs.Converter) -> None:
    # a workflow is a path or the workflow object itself; the schema has checked which
    workflow_type = attrs.fields(attrs.resolve_types(ComfyUIJob)).workflow.type
    converter.register_structure_hook_func(lambda t: t == workflow_type, _passthrough)
    converter.register_structure_hook(Any, _passthrough)


def _register_phase_hooks(converter: cattrs.Converter) -> None:
    # a disabled section has no workflow / provider: leave the key out rather than write a null the job
    # schema would refuse, so job.json stays a valid job
    for cls, name in ((ComfyUIJob, "workflow"), (LipsyncJob, "provider")):
        converter.register_unstructure_hook(
            cls, make_dict_unstructure_fn(cls, converter, **{name: override(omit_if_default=True)})
        )
    converter.register_unstructure_hook(
        PhaseState,
        make_dict_unstructure_fn(
            PhaseState,
            converter,
            provider=override(omit_if_default=True),
            reason=override(omit_if_default=True),
            files=override(omit_if_default=True),
        ),
    )


def _passthrough(value: Any, _type: Any) -> Any:
    return value


converter = make_converter()
