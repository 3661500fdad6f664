"""The routing Space (issue 5): a Gradio app that shows which expert every token goes to.

routing_views.py (computation and drawing) and app.py (the Gradio UI) are the one source; build.py copies
them into the self-contained, deployable folder spaces/talklora-routing/ (no talklora_hub import there).
"""

from . import routing_views
from .build import DEFAULT_MODELS, GRADIO_VERSION, SPACE_DIR, build_space, check_space
from .routing_views import (LoadedModel, ModelCache, Routing, SpaceError, analyze_text, balance_summary,
                            generate_routing, list_zoo_models, load_model, register_zoo_lister, render_all,
                            render_compare_column, render_layer_heatmap, render_sequence_router, render_stats,
                            render_token_heatmap, render_tokens, resolve_model_choices)

__all__ = ["routing_views", "DEFAULT_MODELS", "GRADIO_VERSION", "SPACE_DIR", "build_space", "check_space",
           "LoadedModel", "ModelCache", "Routing", "SpaceError", "analyze_text", "balance_summary",
           "generate_routing", "list_zoo_models", "load_model", "register_zoo_lister", "render_all",
           "render_compare_column", "render_layer_heatmap", "render_sequence_router", "render_stats",
           "render_token_heatmap", "render_tokens", "resolve_model_choices", "build_app", "launch_app"]


def build_app(*args, **kwargs):
    """talklora_hub.space.app.build_app (imported lazily: gradio is heavy)."""
    from .app import build_app as build

    return build(*args, **kwargs)


def launch_app(*args, **kwargs):
    from .app import launch_app as launch

    return launch(*args, **kwargs)
