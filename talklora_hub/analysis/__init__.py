"""Routing analysis, one home: statistics of routing weights (routing_stats), where a module sits in the
model (module_names), and the routing heatmap figure (routing_figures, needs matplotlib: import it
explicitly). Pure functions on torch tensors; training, model cards and the routing Space call them, and
`talklora-hub space build` copies these modules into the Space folder (so they import only the standard
library, torch and, for the figure, matplotlib).
"""

from .module_names import group_by_layer, layer_index_of, short_module_name
from .routing_stats import (DEAD_THRESHOLD, balance_figures, balance_summary, expert_load, layer_load_matrix,
                            layer_means, routing_sums, token_entropy, token_routing, top_expert_per_layer)

__all__ = ["group_by_layer", "layer_index_of", "short_module_name", "DEAD_THRESHOLD", "balance_figures",
           "balance_summary", "expert_load", "layer_load_matrix", "layer_means", "routing_sums", "token_entropy",
           "token_routing", "top_expert_per_layer"]
