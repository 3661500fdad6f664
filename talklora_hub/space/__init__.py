"""The routing Space: a Gradio app that shows which expert every token goes to.

One module per job, the one source of the deployed Space:
  errors.py    SpaceError, the message shown to the user as is
  models.py    loading a model (trust_remote_code), its kind and token limit, the model cache
  catalog.py   which models the picker offers (list, zoo index, README)
  capture.py   reading a text or generating from it, capturing every token's routing (Routing)
  selection.py the layer/module selection a view averages
  views.py     HTML: tokens coloured by expert, balance table, status line
  plots.py     values for gr.Plot (heatmaps, via talklora_hub.analysis.routing_figures) and gr.BarPlot
  page.py      all views of one analysis, in the app's output order
  app.py       the Gradio UI and its event handlers
build.py writes the self-contained deployable folder spaces/talklora-routing/ (these modules and the
talklora_hub.analysis modules they use, with no talklora_hub import); screenshot.py is dev tooling.
"""

from .build import DEFAULT_MODELS, GRADIO_VERSION, SPACE_DIR, build_space, check_space
from .capture import Routing, analyze_text, generate_routing, token_texts
from .catalog import list_zoo_models, register_zoo_lister, resolve_model_choices
from .errors import SpaceError
from .models import LoadedModel, ModelCache, load_model
from .page import Views, compare_column, render_all
from .plots import entropy_frame, layer_heatmap, load_frame, sequence_frame, token_heatmap
from .views import render_balance, render_sequence_router, render_status, render_tokens

__all__ = ["DEFAULT_MODELS", "GRADIO_VERSION", "SPACE_DIR", "build_space", "check_space", "Routing",
           "analyze_text", "generate_routing", "token_texts", "list_zoo_models", "register_zoo_lister",
           "resolve_model_choices", "SpaceError", "LoadedModel", "ModelCache", "load_model", "Views",
           "compare_column", "render_all", "entropy_frame", "layer_heatmap", "load_frame", "sequence_frame",
           "token_heatmap", "render_balance", "render_sequence_router", "render_status", "render_tokens",
           "build_app", "launch_app"]


def build_app(*args, **kwargs):
    """talklora_hub.space.app.build_app (imported lazily: gradio is heavy)."""
    from .app import build_app as build

    return build(*args, **kwargs)


def launch_app(*args, **kwargs):
    from .app import launch_app as launch

    return launch(*args, **kwargs)
