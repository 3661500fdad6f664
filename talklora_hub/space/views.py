"""The Space's HTML: the text with every token coloured by its top expert (no Gradio component does
this), the balance table, the chosen expert of a TT-LoRA MoE, the status line, and the message a view
shows instead of a figure. Self-contained (inline CSS, no external assets), every user text escaped.
"""

from __future__ import annotations

import colorsys
import html
from typing import Any, Optional, Sequence

from ..analysis.routing_stats import balance_summary
from .capture import Routing
from .errors import SpaceError
from .models import LoadedModel, model_label
from .selection import ALL, selection_label, selection_weights, token_view_data

TITLES = {"tokens": "Tokens by top expert", "balance": "Balance", "sequence": "Expert per sequence (TT-LoRA MoE)"}
EXPERT_COLORS = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#EECA3B", "#9D755D",
                 "#FF9DA6", "#79706E"]
CSS = """<style>
.trl-view{font-family:ui-sans-serif,system-ui,-apple-system,'Segoe UI',sans-serif;color:#1f2328;background:#fff;
 border:1px solid #d8dee4;border-radius:8px;padding:10px 12px;margin:2px 0}
.trl-view h4{margin:0 0 6px 0;font-size:14px;font-weight:600;color:#1f2328}
.trl-sub{font-size:12px;color:#57606a;margin:0 0 8px 0}
.trl-tokens{white-space:pre-wrap;word-break:break-word;line-height:2.0;
 font-family:ui-monospace,Menlo,Consolas,monospace;
 font-size:15px;color:#111}
.trl-tok{border-radius:3px;padding:1px 0;margin-right:1px;cursor:help}
.trl-gen{outline:1px dashed #57606a;outline-offset:-1px}
.trl-pending{background:#eaeef2;color:#8c959f}
.trl-special{font-style:italic;color:#57606a}
.trl-legend{display:flex;flex-wrap:wrap;gap:6px 14px;font-size:12px;margin:6px 0 2px 0;color:#1f2328}
.trl-legend span.sw{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:-2px}
.trl-table{border-collapse:collapse;font-size:12px;margin-top:6px}
.trl-table, .trl-table tr, .trl-table td{border:none !important;background:transparent !important}
.trl-table td{padding:2px 12px 2px 0 !important;color:#1f2328}
.trl-table td.v{font-family:ui-monospace,Menlo,Consolas,monospace;text-align:right}
.trl-empty{font-size:13px;color:#57606a}
</style>"""


def expert_color(expert: int, num_experts: int) -> str:
    """The colour of an expert in every view (tokens, bars, legends): a fixed palette up to 10 experts."""
    if num_experts <= len(EXPERT_COLORS):
        return EXPERT_COLORS[expert]
    r, g, b = colorsys.hls_to_rgb(expert / num_experts, 0.5, 0.6)
    return "#%02x%02x%02x" % (round(r * 255), round(g * 255), round(b * 255))


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha:.3f})"


def esc(text: Any) -> str:
    """HTML-escape, also braces and dollars (the Gradio HTML component treats ${...} and {{...}} as templates)."""
    return html.escape(str(text), quote=True).replace("$", "&#36;").replace("{", "&#123;").replace("}", "&#125;")


def show_token(piece: str, limit: Optional[int] = None) -> str:
    """A token's text for labels: newlines, tabs and edge spaces made visible."""
    shown = piece.replace("\n", "↵").replace("\t", "⇥")
    stripped = shown.strip(" ")
    if stripped != shown:
        left, right = len(shown) - len(shown.lstrip(" ")), len(shown) - len(shown.rstrip(" "))
        shown = "·" * left + stripped + "·" * right if stripped else "·" * len(shown)
    if limit and len(shown) > limit:
        shown = shown[:limit - 1] + "…"
    return shown


def view(title: str, body: str, subtitle: str = "", name: str = "") -> str:
    """A titled card; `name` goes to data-view (tests and the browser find views by it)."""
    sub = f'<p class="trl-sub">{subtitle}</p>' if subtitle else ""
    return f'{CSS}<div class="trl-view" data-view="{esc(name)}"><h4>{esc(title)}</h4>{sub}{body}</div>'


def empty_view(title: str, message: str, name: str = "") -> str:
    return view(title, f'<p class="trl-empty">{esc(message)}</p>', name=name)


def expert_legend(num_experts: int) -> str:
    items = "".join(f'<span><span class="sw" style="background:{expert_color(e, num_experts)}"></span>expert {e}</span>'
                    for e in range(num_experts))
    return f'<div class="trl-legend">{items}</div>'


def _weights_line(row: Sequence[float]) -> str:
    return " · ".join(f"E{e} {w:.2f}" for e, w in enumerate(row))


def render_tokens(routing: Routing, layer: str = ALL, module: str = ALL) -> str:
    """The text with every token coloured by its top expert (shade: how sure the router is); hover shows
    the token's weights. Generated tokens are outlined; tokens not yet routed are grey."""
    title = TITLES["tokens"]
    num_experts = routing.num_experts
    data = None
    if routing.token_routed:
        try:
            data = token_view_data(routing, layer, module)
        except SpaceError as error:
            return empty_view(title, str(error), "tokens")
    chosen = routing.chosen_expert
    most = 1.0  # the most decided token's sureness: shades are relative to it
    if data is not None and data["top_weight"] and num_experts > 1:
        most = max(max((w - 1 / num_experts) / (1 - 1 / num_experts) for w in data["top_weight"]), 1e-6)
    spans = []
    for t, piece in enumerate(routing.tokens):
        shown = piece if piece else "∅"
        if piece.endswith("\n"):
            shown = piece[:-1] + "↵\n"
        classes = ["trl-tok"]
        if routing.special[t] if t < len(routing.special) else False:
            classes.append("trl-special")
        if t >= routing.prompt_length:
            classes.append("trl-gen")
        where = f"token {t}{' (generated)' if t >= routing.prompt_length else ''}: {piece!r}"
        style, tip = "", where
        if data is not None and t < len(data["top"]):
            top, weight = data["top"][t], data["top_weight"][t]
            sureness = (weight - 1 / num_experts) / (1 - 1 / num_experts) if num_experts > 1 else 1.0
            color = expert_color(top, num_experts)
            style = (f"background:{_rgba(color, 0.15 + 0.6 * max(0.0, min(1.0, sureness / most)))};"
                     f"box-shadow:inset 0 -3px 0 {color}")
            tip = (f"{where}\ntop expert {top} (weight {weight:.3f})\n{_weights_line(data['mean'][t].tolist())}"
                   f"\nentropy {data['entropy'][t]:.3f} nats")
            spans.append(f'<span class="{" ".join(classes)}" data-expert="{top}" style="{style}" '
                         f'title="{esc(tip)}">{esc(shown)}</span>')
            continue
        if data is not None:
            classes.append("trl-pending")
            tip = f"{where}\nrouted when the model reads it (next step)"
        elif chosen is not None:
            color = expert_color(chosen, num_experts)
            style = f"background:{_rgba(color, 0.35)};box-shadow:inset 0 -3px 0 {color}"
            tip = f"{where}\nwhole sequence → expert {chosen} (p = {routing.sequence_probs[chosen]:.3f})"
            spans.append(f'<span class="{" ".join(classes)}" data-expert="{chosen}" style="{style}" '
                         f'title="{esc(tip)}">{esc(shown)}</span>')
            continue
        spans.append(f'<span class="{" ".join(classes)}" title="{esc(tip)}">{esc(shown)}</span>')
    if data is not None:
        best = max(data["top_weight"]) if data["top_weight"] else 0.0
        subtitle = (f"{esc(selection_label(layer, module))} · colour: top expert · shade: its weight, full at the "
                    f"most decided token ({best:.2f}), pale = undecided · hover a token for its weights")
        legend = expert_legend(num_experts)
    elif chosen is not None:
        subtitle = f"TT-LoRA MoE: the whole sequence goes to expert {chosen}"
        legend = expert_legend(num_experts)
    else:
        subtitle, legend = "no routing: tokens only", ""
    if routing.generated:
        subtitle += " · dashed outline: generated"
    body = f'{legend}<div class="trl-tokens">{"".join(spans)}</div>'
    return view(title, body, subtitle, "tokens")


def render_balance(routing: Routing, layer: str = ALL, module: str = ALL) -> str:
    """The balance figures of the selection (talklora_hub.analysis.routing_stats.balance_summary)."""
    title = TITLES["balance"]
    if not routing.token_routed:
        if routing.sequence_probs is not None:
            return empty_view(title, "TT-LoRA MoE: no per-token routing; see Expert per sequence.", "balance")
        return empty_view(title, "No routing for this model.", "balance")
    try:
        stacked = selection_weights(routing, layer, module)
    except SpaceError as error:
        return empty_view(title, str(error), "balance")
    summary = balance_summary(stacked)
    rows = [("mean entropy", f"{summary['mean_entropy']:.3f} nats"),
            ("normalised entropy", f"{summary['normalized_entropy']:.3f}  (1 = uniform)"),
            ("load CV", f"{summary['load_cv']:.3f}  (0 = balanced)"),
            ("max share", f"{summary['max_share']:.3f}  (uniform {1 / routing.num_experts:.3f})"),
            ("dead experts", f"{summary['dead_experts']}  (load < 2%)"),
            ("tokens", f"{stacked.shape[1]}"), ("modules", f"{stacked.shape[0]}")]
    table = "".join(f'<tr><td>{esc(k)}</td><td class="v" data-stat="{esc(k)}">{esc(v)}</td></tr>' for k, v in rows)
    return view(title, f'<table class="trl-table">{table}</table>', esc(selection_label(layer, module)), "balance")


def render_sequence_router(routing: Routing) -> str:
    """TT-LoRA MoE: the expert chosen for the whole sequence (its probabilities are a bar plot)."""
    title = TITLES["sequence"]
    if routing.sequence_probs is None:
        if routing.token_routed:
            return empty_view(title, "This model routes every token (see above); per-sequence routing is "
                              "TT-LoRA MoE's.", "sequence")
        return empty_view(title, "No per-sequence router in this model.", "sequence")
    probs, chosen = routing.sequence_probs, routing.chosen_expert
    body = (f'<p style="font-size:14px;margin:4px 0 8px 0" data-chosen="{chosen}">Chosen expert: '
            f'<b style="color:{expert_color(chosen, len(probs))}">expert {chosen}</b> (p = {probs[chosen]:.3f}), '
            "serving every token of the sequence.</p>"
            f'<p class="trl-sub">router probabilities below: softmax of the router logits on the '
            f'{"prompt" if routing.generated else "text"}; the router reads the frozen base model\'s last-token '
            "state</p>")
    return view(title, body, "", "sequence")


def render_status(routing: Optional[Routing] = None, loaded: Optional[LoadedModel] = None,
                  error: Optional[str] = None) -> str:
    """Markdown for the status line: what was read, and any note or error."""
    lines = []
    if error:
        lines.append(f"**⚠ {error}**")
    if routing is not None:
        kind = loaded.kind if loaded is not None else (routing.method or "no adapter")
        head = f"**{model_label(routing.model_id)}** · {kind} · {len(routing.tokens)} tokens"
        if routing.token_routed:
            layers = sorted(set(routing.layers))
            head += f" · {len(routing.module_names)} routed modules in {len(layers)} layers"
        if routing.generated:
            new = len(routing.tokens) - routing.prompt_length
            head += f" · {new} generated" + ("" if routing.done else " (generating…)")
        lines.append(head)
        lines.extend(f"- {note}" for note in routing.notes)
    return "\n".join(lines)


def render_compare_header(routing: Routing, loaded: Optional[LoadedModel] = None) -> str:
    """The head of one model's column in the side-by-side view: its name, kind, tokens and notes."""
    kind = loaded.kind if loaded is not None else (routing.method or "")
    return (f'{CSS}<div class="trl-view" data-view="compare-header"><h4>{esc(model_label(routing.model_id))}</h4>'
            f'<p class="trl-sub">{esc(kind)} · {len(routing.tokens)} tokens</p>'
            + "".join(f'<p class="trl-sub">{esc(n.replace("*", "").replace("`", ""))}</p>' for n in routing.notes)
            + "</div>")

