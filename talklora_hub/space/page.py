"""Everything one analysis shows, in the order of the app's output components: the HTML views from
views.py and the plot values from plots.py, for a selection, for an empty page, and for one column of
the side-by-side comparison.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Tuple

from . import plots
from .capture import Routing
from .models import LoadedModel
from .selection import ALL
from .views import TITLES, empty_view, render_balance, render_compare_header, render_sequence_router, render_tokens


class Views(NamedTuple):
    """One value per output component. HTML strings; Figures for gr.Plot; DataFrames for gr.BarPlot;
    None clears a plot (the HTML views then say why)."""

    tokens: str
    token_heatmap: Any
    layer_heatmap: Any
    entropy: Any
    load: Any
    balance: str
    sequence: str
    sequence_probs: Any


SELECTION_VIEWS = 6  # the first six views depend on the layer/module selection; redrawn when it changes


def render_all(routing: Routing, layer: str = ALL, module: str = ALL, heatmaps: bool = True) -> Views:
    """Every view of one text for one selection (layer, module). heatmaps False: leave the two heatmaps
    None (drawing them is the slow part; generation redraws them only now and then)."""
    token_heatmap = plots.token_heatmap(routing, layer, module) if heatmaps else None
    layer_heatmap = plots.layer_heatmap(routing, module, layer) if heatmaps else None
    return Views(render_tokens(routing, layer, module), token_heatmap, layer_heatmap,
                 plots.entropy_frame(routing, layer, module),
                 plots.load_frame(routing, layer, module), render_balance(routing, layer, module),
                 render_sequence_router(routing), plots.sequence_frame(routing))


def placeholder_views(message: str = "Press Analyse to see the routing.") -> Views:
    """The page before (or instead of) an analysis: the HTML views carry the message, the plots are empty."""
    return Views(empty_view(TITLES["tokens"], message, "tokens"), None, None, None, None,
                 empty_view(TITLES["balance"], message, "balance"), empty_view(TITLES["sequence"], message, "sequence"),
                 None)


def compare_column(routing: Routing, loaded: Optional[LoadedModel] = None) -> Tuple[str, Any, Any]:
    """One model's column in the side-by-side view, over the whole model: (HTML: header, tokens and
    balance or chosen expert; layer heatmap; bars: expert load, or a TT-LoRA MoE's router probabilities)."""
    parts = [render_compare_header(routing, loaded), render_tokens(routing)]
    bars = None
    if routing.token_routed:
        parts.append(render_balance(routing))
        bars = plots.load_frame(routing)
    elif routing.sequence_probs is not None:
        parts.append(render_sequence_router(routing))
        bars = plots.sequence_frame(routing)
    return "".join(parts), plots.layer_heatmap(routing), bars
