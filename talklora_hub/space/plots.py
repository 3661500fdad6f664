"""What the Space's plot components show: the routing heatmaps as matplotlib Figures for gr.Plot (drawn by
talklora_hub.analysis.routing_figures.routing_heatmap, the model cards' figure too) and the bar charts as
pandas DataFrames for gr.BarPlot (per-token entropy, expert load, a TT-LoRA MoE's router probabilities).

Each function returns None when the model or the selection has nothing to draw (the HTML views say why).
"""

from __future__ import annotations

from typing import Dict, Optional

import pandas as pd
from matplotlib.figure import Figure

from ..analysis.routing_figures import routing_heatmap
from ..analysis.routing_stats import expert_load
from .capture import Routing
from .errors import SpaceError
from .selection import ALL, is_all, layer_load, selection_label, selection_weights, token_view_data
from .views import EXPERT_COLORS, show_token

TOKEN_HEATMAP_MAX_HEIGHT = 14.0  # inches: a 512-token text still fits one screen (rows get thinner)


def expert_name(expert: int) -> str:
    return f"expert {expert}"


# The bar colours match the token colours: a fixed palette keyed by the expert's name (gr.BarPlot takes
# its color_map once, when the UI is built, so it covers the palette rather than one model's E).
EXPERT_COLOR_MAP: Dict[str, str] = {expert_name(e): color for e, color in enumerate(EXPERT_COLORS)}


def _token_label(routing: Routing, t: int, position: str) -> str:
    """position + text of token t; just the position while generate() has routed a token the view has not
    received yet (the worker thread runs ahead of the stream)."""
    return f"{position} {show_token(routing.tokens[t], 14)}" if t < len(routing.tokens) else position


def token_heatmap(routing: Routing, layer: str = ALL, module: str = ALL) -> Optional[Figure]:
    """tokens × experts: the routing weight of every routed token (rows) to every expert (columns), mean
    over the selected modules; a dashed line where generated tokens start."""
    if not routing.token_routed:
        return None
    try:
        mean = token_view_data(routing, layer, module)["mean"]
    except SpaceError:
        return None
    labels = [_token_label(routing, t, str(t)) for t in range(mean.shape[0])]
    title = (f"routing weight per token · {selection_label(layer, module)}\n"
             f"white = uniform 1/{routing.num_experts}, red above, blue below")
    split = routing.prompt_length if routing.generated else None
    return routing_heatmap(mean, labels, row_title="token", title=title, split_row=split,
                           max_height=TOKEN_HEATMAP_MAX_HEIGHT)


def layer_heatmap(routing: Routing, module: str = ALL, layer: str = ALL) -> Optional[Figure]:
    """layers × experts: each expert's mean load over the text, per layer, for the chosen module (all:
    mean of the layer's modules); the chosen layer is outlined."""
    if not routing.token_routed:
        return None
    loads = layer_load(routing, module)
    if not loads:
        return None
    layers = list(loads)
    chosen = layers.index(int(layer)) if str(layer).lstrip("-").isdigit() and int(layer) in layers else None
    what = "all modules (mean)" if is_all(module) else module
    title = f"expert load per layer · {what}\nwhite = uniform 1/{routing.num_experts}"
    return routing_heatmap([load.tolist() for load in loads.values()], layers, row_title="layer", title=title,
                           highlight_row=chosen)


def entropy_frame(routing: Routing, layer: str = ALL, module: str = ALL) -> Optional[pd.DataFrame]:
    """One row per routed token: "token" (position and text, zero-padded so the bars keep text order),
    "entropy" (nats, mean over the selected modules) and "top expert" (the bar's colour)."""
    if not routing.token_routed:
        return None
    try:
        data = token_view_data(routing, layer, module)
    except SpaceError:
        return None
    count = len(data["entropy"])
    width = len(str(max(0, count - 1)))
    return pd.DataFrame({
        "token": [_token_label(routing, t, f"{t:0{width}d}") for t in range(count)],
        "entropy": data["entropy"],
        "top expert": [expert_name(e) for e in data["top"]],
    })


def load_frame(routing: Routing, layer: str = ALL, module: str = ALL) -> Optional[pd.DataFrame]:
    """One row per expert: "expert" and "weight", its load (mean routing weight over the selection's tokens)."""
    if not routing.token_routed:
        return None
    try:
        load = expert_load(selection_weights(routing, layer, module))
    except SpaceError:
        return None
    return pd.DataFrame({"expert": [expert_name(e) for e in range(load.numel())], "weight": load.tolist()})


def sequence_frame(routing: Routing) -> Optional[pd.DataFrame]:
    """A TT-LoRA MoE's router: one row per expert, "expert" and "weight", its probability for the sequence."""
    if routing.sequence_probs is None:
        return None
    return pd.DataFrame({"expert": [expert_name(e) for e in range(len(routing.sequence_probs))],
                         "weight": list(routing.sequence_probs)})

