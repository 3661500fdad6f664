"""TalkLoRA routing Space: see which expert every token goes to.

Pick a mixture-of-LoRA-experts model (TalkLoRA, MoELoRA, TT-LoRA MoE; plain LoRA for contrast), type a
text or a prompt to continue, and read the routing: tokens coloured by their top expert, heatmaps of
routing weights and per-layer load, entropy and balance, two models side by side, and the expert a
TT-LoRA MoE picks per sequence.

Source of truth: talklora_hub/space/app.py; spaces/talklora-routing/app.py is the copy `talklora-hub space
build` makes (imports rewritten to the Space's own packages). Needs only gradio, matplotlib, torch,
transformers and huggingface_hub: the models bring their own code (trust_remote_code).
Run: `python app.py [--models ID ...] [--port N]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from typing import Any, Iterator, List, Optional, Sequence

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402

from . import page  # noqa: E402
from .capture import Routing, analyze_text, generate_routing  # noqa: E402
from .catalog import MODELS_ENV, ModelChoice, allow_any_model, resolve_model_choices  # noqa: E402
from .errors import SpaceError  # noqa: E402
from .models import LoadedModel, ModelCache  # noqa: E402
from .plots import EXPERT_COLOR_MAP  # noqa: E402
from .selection import ALL, layer_choices, module_choices  # noqa: E402
from .views import empty_view, render_status  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TITLE = "TalkLoRA routing: which expert does every token go to?"
EXAMPLES = [
    "The Senate met today to discuss the budget. def add(a, b): return a + b. 12 + 30 = 42.",
    "Call me Ishmael. Some years ago, never mind how long precisely, having little money in my purse,",
    "Q: What is the capital of France?\nA:",
]
INTRO = """
Mixture-of-LoRA-experts adapters (**TalkLoRA**, **MoELoRA**) route each token to a soft mix of E low-rank
experts in every adapted module; a **TT-LoRA MoE** picks one expert per sequence; plain **LoRA** has no
routing. Type a text and press **Analyse**, or press **Continue with generate()** to watch new tokens
being routed as they appear. Choose a layer and module (or the mean over all) to redraw the views.
Hover tokens and bars for exact weights.
"""
APP_CSS = ".trl-app-status p{margin:2px 0}"
HEATMAP_EVERY_S = 2.0  # while generating, the heatmaps are redrawn at most this often (and at the end)


def app_theme() -> gr.themes.Base:
    """Gradio's default look with system fonts: no font files to fetch, the same on every machine."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
                             font_mono=["ui-monospace", "Menlo", "Consolas", "DejaVu Sans Mono", "monospace"])


def _unexpected(error: Exception) -> str:
    """A failure nobody planned for: logged with its traceback, shown as one line."""
    traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    return f"Something went wrong: {type(error).__name__}: {first}"


class RoutingApp:
    """The event handlers, independent of the UI so they can be called directly. Expected problems (bad
    input, unknown model) come back as messages in the status line, and so do unexpected ones."""

    def __init__(self, choices: Sequence[ModelChoice], allow_any: bool = False, cache: Optional[ModelCache] = None):
        self.choices = list(choices)
        self.allow_any = allow_any
        self.cache = cache or ModelCache()

    @property
    def model_ids(self) -> List[str]:
        return [model_id for _, model_id in self.choices]

    def get_model(self, model_id: Optional[str]) -> LoadedModel:
        model_id = (model_id or "").strip()
        if not model_id:
            raise SpaceError("No model chosen: pick one from the list." if self.choices else
                             f"This Space has no models configured: set {MODELS_ENV}=id1,id2 or "
                             "start it with --models.")
        if not self.allow_any and model_id not in self.model_ids:
            raise SpaceError(f"`{model_id}` is not one of this Space's models: pick one from the list.")
        return self.cache.get(model_id)

    # ---- events ---------------------------------------------------------------------------
    def _outputs(self, routing: Optional[Routing], loaded: Optional[LoadedModel], layer: str, module: str,
                 error: Optional[str] = None, heatmaps: bool = True) -> tuple:
        """(state, status, layer dropdown, module dropdown) + page.Views. heatmaps False: the heatmaps are
        left as they are on the page (gr.skip)."""
        if routing is None:
            return (None, render_status(error=error), gr.update(choices=layer_choices(None), value=ALL),
                    gr.update(choices=module_choices(None), value=ALL)) + tuple(page.placeholder_views(
                        error or "Press Analyse to see the routing."))
        layers, modules = layer_choices(routing), module_choices(routing)
        layer = layer if layer in [v for _, v in layers] else ALL
        module = module if module in [v for _, v in modules] else ALL
        shown = page.render_all(routing, layer, module, heatmaps)
        if not heatmaps:
            shown = shown._replace(token_heatmap=gr.skip(), layer_heatmap=gr.skip())
        return ((routing, render_status(routing, loaded, error), gr.update(choices=layers, value=layer),
                 gr.update(choices=modules, value=module)) + tuple(shown))

    def analyze(self, model_id: str, text: str, layer: str = ALL, module: str = ALL) -> tuple:
        try:
            loaded = self.get_model(model_id)
            routing = analyze_text(loaded, text)
        except SpaceError as error:
            return self._outputs(None, None, layer, module, str(error))
        except Exception as error:  # noqa: BLE001  the page must answer, not hang on an error
            return self._outputs(None, None, layer, module, _unexpected(error))
        return self._outputs(routing, loaded, layer, module)

    def generate(self, model_id: str, prompt: str, max_new_tokens: float = 24, layer: str = ALL,
                 module: str = ALL) -> Iterator[tuple]:
        try:
            loaded = self.get_model(model_id)
            drawn = None  # when the heatmaps were last drawn: every update would slow the stream down
            for routing in generate_routing(loaded, prompt, int(max_new_tokens or 1)):
                due = routing.done or drawn is None or time.monotonic() - drawn >= HEATMAP_EVERY_S
                yield self._outputs(routing, loaded, layer, module, heatmaps=due)
                drawn = time.monotonic() if due else drawn
        except SpaceError as error:
            yield self._outputs(None, None, layer, module, str(error))
        except Exception as error:  # noqa: BLE001
            yield self._outputs(None, None, layer, module, _unexpected(error))

    def rerender(self, routing: Optional[Routing], layer: str, module: str) -> tuple:
        """Redraws the selection's views for another layer/module without reading the text again."""
        if routing is None:
            return tuple(page.placeholder_views())[:page.SELECTION_VIEWS]
        return tuple(page.render_all(routing, layer or ALL, module or ALL))[:page.SELECTION_VIEWS]

    def compare(self, model_a: str, model_b: str, text: str) -> tuple:
        """Both models on the same text, side by side (each over its whole model): (notes, then per model
        its HTML column, layer heatmap and bars)."""
        columns, notes = [], []
        for model_id in (model_a, model_b):
            try:
                loaded = self.get_model(model_id)
                routing = analyze_text(loaded, text)
                columns.extend(page.compare_column(routing, loaded))
                notes.append(render_status(routing, loaded))
            except Exception as error:  # noqa: BLE001  SpaceError, or anything unexpected
                message = str(error) if isinstance(error, SpaceError) else _unexpected(error)
                columns.extend((empty_view(model_id or "(no model)", message, "compare-error"), None, None))
                notes.append(render_status(error=message))
        return ("\n\n".join(notes), *columns)


def _heatmap(elem_id: str, label: str) -> gr.Plot:
    """A heatmap from talklora_hub.analysis.routing_figures (its title is in the figure, so the label
    names it in the API only). PNG: the cell values stay sharp (webp, Gradio's default, blurs them)."""
    return gr.Plot(label=label, show_label=False, format="png", elem_id=elem_id)


def _bars(elem_id: str, x: str, y: str, label: str, **kwargs: Any) -> gr.BarPlot:
    """A bar plot coloured by expert like the tokens (x: the column naming the bar, y: its height)."""
    kwargs.setdefault("color", x)
    return gr.BarPlot(x=x, y=y, color_map=EXPERT_COLOR_MAP, label=label, y_lim=[0, None], elem_id=elem_id, **kwargs)


def build_app(models: Optional[Sequence[str]] = None, allow_any: Optional[bool] = None,
              cache: Optional[ModelCache] = None) -> gr.Blocks:
    """The Gradio Blocks app. models: ids to offer (default: $TALKLORA_SPACE_MODELS, the zoo index, then
    the README's `models:`); allow_any: also accept ids typed by the user (default: $TALKLORA_SPACE_ALLOW_ANY_MODEL;
    off on a public Space, since every model runs its own code)."""
    choices = resolve_model_choices(models, os.path.join(HERE, "README.md"))
    allow_any = allow_any_model() if allow_any is None else allow_any
    handlers = RoutingApp(choices, allow_any, cache)
    first = choices[0][1] if choices else None
    second = choices[1][1] if len(choices) > 1 else first
    blank = page.placeholder_views()
    with gr.Blocks(title="TalkLoRA routing", analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        state = gr.State(None)
        with gr.Tab("Routing"):
            with gr.Row():
                model = gr.Dropdown(choices=choices, value=first, label="Model", allow_custom_value=allow_any,
                                    scale=3, elem_id="trl-model")
                max_new = gr.Slider(1, 128, value=24, step=1, label="New tokens (generate)", scale=1)
            text = gr.Textbox(value=EXAMPLES[0], label="Text (or prompt to continue)", lines=3, max_lines=12,
                              elem_id="trl-text")
            with gr.Row():
                analyse_btn = gr.Button("Analyse", variant="primary", elem_id="trl-analyse")
                generate_btn = gr.Button("Continue with generate()", elem_id="trl-generate")
            gr.Examples(EXAMPLES, inputs=[text], label="Examples")
            with gr.Row():
                layer = gr.Dropdown(choices=layer_choices(None), value=ALL, label="Layer",
                                    allow_custom_value=True, elem_id="trl-layer")
                module = gr.Dropdown(choices=module_choices(None), value=ALL, label="Module",
                                     allow_custom_value=True, elem_id="trl-module")
            status = gr.Markdown(elem_classes=["trl-app-status"], elem_id="trl-status")
            tokens = gr.HTML(blank.tokens, elem_id="trl-tokens")
            with gr.Row(equal_height=False):
                token_heat = _heatmap("trl-token-heatmap", "Routing weights: tokens × experts")
                layer_heat = _heatmap("trl-layer-heatmap", "Expert load per layer: layers × experts")
            with gr.Row(equal_height=False):
                entropy = _bars("trl-entropy", "token", "entropy", "Per-token routing entropy (nats; colour: top "
                                "expert; ln E = uniform)", color="top expert", x_axis_labels_visible=False,
                                tooltip=["token", "entropy", "top expert"], scale=2)
                load = _bars("trl-load", "expert", "weight", "Expert load: mean routing weight (uniform = 1/E)",
                             y_title="load")
                balance = gr.HTML(blank.balance, elem_id="trl-balance")
            sequence = gr.HTML(blank.sequence, elem_id="trl-sequence")
            sequence_probs = _bars("trl-sequence-probs", "expert", "weight", "Router probabilities (TT-LoRA MoE)",
                                   y_title="probability")
        with gr.Tab("Compare two models"):
            with gr.Row():
                model_a = gr.Dropdown(choices=choices, value=first, label="Model A", allow_custom_value=allow_any)
                model_b = gr.Dropdown(choices=choices, value=second, label="Model B", allow_custom_value=allow_any)
            compare_text = gr.Textbox(value=EXAMPLES[0], label="Text", lines=3, elem_id="trl-compare-text")
            compare_btn = gr.Button("Compare", variant="primary", elem_id="trl-compare")
            compare_status = gr.Markdown(elem_classes=["trl-app-status"])
            columns = []
            with gr.Row(equal_height=False):
                for side in ("a", "b"):
                    with gr.Column():
                        columns += [gr.HTML(elem_id=f"trl-compare-{side}"),
                                    _heatmap(f"trl-compare-{side}-heatmap", "Expert load per layer"),
                                    _bars(f"trl-compare-{side}-bars", "expert", "weight",
                                          "Expert load (or router probabilities)")]

        views = [tokens, token_heat, layer_heat, entropy, load, balance, sequence, sequence_probs]
        outputs = [state, status, layer, module] + views
        analyse_btn.click(handlers.analyze, [model, text, layer, module], outputs, api_name="analyze")
        text.submit(handlers.analyze, [model, text, layer, module], outputs, api_visibility="private")
        generate_btn.click(handlers.generate, [model, text, max_new, layer, module], outputs, api_name="generate")
        for selector in (layer, module):
            selector.input(handlers.rerender, [state, layer, module], views[:page.SELECTION_VIEWS],
                           api_visibility="private")
        compare_btn.click(handlers.compare, [model_a, model_b, compare_text], [compare_status] + columns,
                          api_name="compare")
    demo.routing_app = handlers  # for tests and embedding
    return demo


def launch_app(models: Optional[Sequence[str]] = None, host: Optional[str] = None, port: Optional[int] = None,
               allow_any: Optional[bool] = None, **launch_kwargs: Any):
    """Builds and launches the app (never with a share link). host None: $GRADIO_SERVER_NAME or 127.0.0.1."""
    demo = build_app(models, allow_any)
    demo.queue(default_concurrency_limit=2)
    launch_kwargs.setdefault("css", APP_CSS)
    launch_kwargs.setdefault("theme", app_theme())
    return demo.launch(server_name=host, server_port=port, share=False, **launch_kwargs)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=TITLE)
    parser.add_argument("--models", nargs="*", default=None, help="model ids (local folders or repo ids) to offer")
    parser.add_argument("--host", default=None, help="address to bind (default $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--allow-any-model", action="store_true", default=None,
                        help="also accept model ids typed in the picker (runs their code: local use only)")
    args = parser.parse_args(argv)
    launch_app(args.models, args.host, args.port, args.allow_any_model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
