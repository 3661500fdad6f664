"""Selections: which routed modules a view averages, picked by layer and module in the UI.

A selection is (layer, module): "all" layers and/or "all" modules, a layer index ("3") and/or a module's
short name ("self_attn.q_proj"). The statistics of a selection come from talklora_hub.analysis.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..analysis.module_names import layer_index_of, short_module_name
from ..analysis.routing_stats import layer_load_matrix, token_routing
from .capture import Routing
from .errors import SpaceError

ALL = "all"


def is_all(value: Optional[str]) -> bool:
    """Whether a dropdown value means "all" (also unset: an empty dropdown)."""
    return value in (ALL, None, "")


def layer_choices(routing: Optional[Routing]) -> List[Tuple[str, str]]:
    """(label, value) pairs for the layer dropdown: "all" first, then the routed layers."""
    choices = [("all layers (mean)", ALL)]
    if routing is not None and routing.token_routed:
        choices += [(f"layer {layer}", str(layer)) for layer in sorted(set(routing.layers))]
    return choices


def module_choices(routing: Optional[Routing]) -> List[Tuple[str, str]]:
    """(label, value) pairs for the module dropdown: "all" first, then the short names in model order."""
    choices = [("all modules (mean)", ALL)]
    if routing is not None and routing.token_routed:
        seen: List[str] = []
        for name in routing.module_names:
            short = short_module_name(name)
            if short not in seen:
                seen.append(short)
        choices += [(s, s) for s in seen]
    return choices


def selected_modules(routing: Routing, layer: str = ALL, module: str = ALL) -> List[int]:
    """Indices of the modules matching the selection (empty when none matches)."""
    layer, module = str(ALL if is_all(layer) else layer), str(ALL if is_all(module) else module)
    return [i for i, name in enumerate(routing.module_names)
            if (layer == ALL or str(layer_index_of(name)) == layer)
            and (module == ALL or short_module_name(name) == module)]


def selection_label(layer: str, module: str) -> str:
    where = "all layers" if is_all(layer) else f"layer {layer}"
    what = "all modules" if is_all(module) else module
    return f"{what}, {where}" if (is_all(layer) or is_all(module)) else f"{what} of {where}"


def selection_weights(routing: Routing, layer: str = ALL, module: str = ALL) -> torch.Tensor:
    """(selected modules, routed tokens, E) for the selection; SpaceError if nothing matches."""
    if not routing.token_routed:
        raise SpaceError("This model has no token routing.")
    index = selected_modules(routing, layer, module)
    if not index:
        raise SpaceError(f"No routed module matches {selection_label(layer, module)}: pick another layer or module.")
    return routing.weights[index]


def token_view_data(routing: Routing, layer: str = ALL, module: str = ALL) -> Dict[str, Any]:
    """Per routed token, over the selected modules: "mean" (tokens, E) weights, "top" and "top_weight"
    (lists: the top expert and its weight) and "entropy" (list: mean of the modules' entropies)."""
    per_token = token_routing(selection_weights(routing, layer, module))
    return {"mean": per_token["mean"], "top": per_token["top"].tolist(),
            "top_weight": per_token["top_weight"].tolist(), "entropy": per_token["entropy"].tolist()}


def layer_load(routing: Routing, module: str = ALL) -> "OrderedDict[int, torch.Tensor]":
    """{layer: (E,) mean load over the text of the chosen module (all: mean of the layer's modules)}."""
    index = selected_modules(routing, ALL, module)
    return layer_load_matrix([routing.weights[i] for i in index], [routing.module_names[i] for i in index])
