"""Where a routed module sits in the model, read from its name: its layer and its short name.

Routed modules are named by their path in the model, e.g. "base.model.layers.3.self_attn.q_proj": the
first integer path component is the transformer block. Standard library only, so the Space carries a copy.
(The modeling bundle keeps its own one-line copy of `layer_index_of`: it travels inside every saved model
and may not import this package; tests/analysis checks the two agree.)
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import List, Sequence

_LAYER_INDEX = re.compile(r"\.(\d+)\.")


def layer_index_of(name: str) -> int:
    """The transformer block a module belongs to: its first integer path component, or -1 (no layer)."""
    match = _LAYER_INDEX.search(f".{name}.")
    return int(match.group(1)) if match else -1


def short_module_name(name: str) -> str:
    """"base.model.layers.3.self_attn.q_proj" -> "self_attn.q_proj" (the part after the layer index)."""
    match = _LAYER_INDEX.search(f".{name}.")
    if not match:
        return name[5:] if name.startswith("base.") else name
    return f".{name}."[match.end():].strip(".")


def group_by_layer(names: Sequence[str]) -> "OrderedDict[int, List[int]]":
    """{layer index: positions of the names in that layer}, layers ascending, positions in their order."""
    groups: "OrderedDict[int, List[int]]" = OrderedDict()
    for position, name in enumerate(names):
        groups.setdefault(layer_index_of(name), []).append(position)
    return OrderedDict(sorted(groups.items()))
