"""Model cards: rendered from the Jinja2 templates in talklora_hub/publish/templates/, with YAML metadata that
huggingface_hub's ModelCard parses (library, base model, pipeline, tags, datasets, license,
model-index), and a routing picture where the model routes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ..analysis.routing_stats import balance_summary, layer_load_matrix

# Inside the package (package-data), so a pip-installed talklora_hub renders cards too.
TEMPLATES = Path(os.environ.get("TALKLORA_CARD_TEMPLATES", Path(__file__).resolve().parent / "templates"))
PIPELINES = {"causal": "text-generation", "seqcls": "text-classification", "bare": "feature-extraction"}
PROBE_TEXTS = ["The quick brown fox jumps over the lazy dog.",
               "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
               "Q: A shop sells 3 apples for 2 dollars. How much do 12 apples cost? A:"]


def measure_routing(model, tokenizer=None, texts: Sequence[str] = PROBE_TEXTS,
                    source: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """Routing balance of a token-routed model on `texts`: summary, per-layer load and a markdown table.
    None for models that do not route per token."""
    if not model.adapter_settings.is_routed:
        return None
    if tokenizer is None:
        ids = torch.randint(3, model.config.get_text_config().vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
        batch, source = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, source or "random token ids"
    else:
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        batch = tokenizer(list(texts), return_tensors="pt", padding=True)
        source = source or f"{len(texts)} probe texts"
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(**batch, output_router_logits=True)
    model.train(was_training)
    mask = batch["attention_mask"]
    weights = list(out.routing_weights)
    summary = balance_summary(torch.stack(weights), mask.expand(len(weights), *mask.shape))
    layers = layer_load_matrix(weights, out.router_module_names, mask)
    num_experts = weights[0].shape[-1]
    header = "| layer | " + " | ".join(f"expert {e}" for e in range(num_experts)) + " |"
    rows = [header, "|---|" + "---|" * num_experts]
    rows += [f"| {layer} | " + " | ".join(f"{v:.3f}" for v in load.tolist()) + " |" for layer, load in layers.items()]
    return {**summary, "num_experts": num_experts, "source": source, "table": "\n".join(rows),
            "layers": [(layer, load.tolist()) for layer, load in layers.items()]}


def routing_picture(routing: Dict[str, Any], path: Path) -> Path:
    """A layers x experts heatmap of mean routing weight, as PNG: talklora_hub.analysis.routing_figures's
    heatmap (the routing Space draws the same one), colours diverging around the uniform share 1/E."""
    from ..analysis.routing_figures import routing_heatmap

    layers = [layer for layer, _ in routing["layers"]]
    figure = routing_heatmap([load for _, load in routing["layers"]], layers, row_title="layer", annotate=False)
    figure.savefig(path)
    return path


def evaluation_rows(result: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Normalises a training result's evaluation to rows {task, split, metric, value, count, dataset}."""
    if not result:
        return []
    rows = result.get("evaluation")
    if isinstance(rows, list):
        return [r for r in rows if isinstance(r.get("value"), (int, float)) and not math.isnan(r["value"])]
    rows = []
    for task, metrics in (result.get("metrics") or {}).items():
        for metric, value in metrics.items():
            if isinstance(value, (int, float)) and metric not in ("count", "examples"):
                rows.append({"task": task, "split": metrics.get("split", "test"), "metric": metric, "value": value,
                             "count": metrics.get("count", metrics.get("examples", "")), "dataset": None})
    return rows


def card_data(kind: str, model_type_head: str, method: str, base_repo: Optional[str], result: Optional[Dict[str, Any]],
              repo_id: str, license: str = "apache-2.0") -> ModelCardData:
    rows = [r for r in evaluation_rows(result) if r.get("model_index", True)]
    evals = [EvalResult(task_type=PIPELINES.get(model_type_head, "text-generation"), dataset_type=r.get("dataset") or r["task"],
                        dataset_name=r["task"], dataset_split=r.get("split"), metric_type=r["metric"],
                        metric_value=float(r["value"])) for r in rows]
    datasets = (result or {}).get("datasets") or None
    tags = ["talklora", "mixture-of-experts", "lora", method, "talklora_hub", f"talklora-{kind}"]
    if kind == "model":
        tags.append("custom_code")
    return ModelCardData(
        library_name="transformers" if kind == "model" else "talklora_hub",
        base_model=base_repo, pipeline_tag=PIPELINES.get(model_type_head, "text-generation"), tags=tags,
        datasets=datasets, license=license, model_name=repo_id, eval_results=evals or None,
        base_model_relation="finetune" if kind == "model" else "adapter")


def render_card(kind: str, **context: Any) -> str:
    """Renders templates/{kind}.md.j2 and checks huggingface_hub parses it back."""
    environment = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                              keep_trailing_newline=True)
    context = {"picture": None, "routing": None, "training": None, "evaluation": [],
               "routing_note": "This adapter does not route per token.", "output_router_logits": False,
               "comparison": None, **context}
    context["card_data"] = context["card_data"].to_yaml()
    text = environment.get_template(f"{kind}.md.j2").render(**context)
    ModelCard(text)  # raises if the metadata does not parse
    return text


def adapter_rows(adapter: Dict[str, Any], targets: Optional[List[str]] = None) -> List[tuple]:
    """(setting, value) rows; `targets` (the adapted modules' names) replaces a None target_modules."""
    adapter = {**adapter, "target_modules": adapter.get("target_modules") or targets}
    keep = ("method", "r", "num_experts", "num_experts_per_tok", "lora_alpha", "lora_dropout", "target_modules",
            "share_expert_banks", "talk_init", "router_aux_loss_coef", "router_jitter_noise")
    if adapter.get("method") == "ttlora":
        keep = ("method", "num_experts", "tt_rank", "tt_alpha", "tt_factors", "target_modules", "lora_dropout")
    return [(k, adapter.get(k)) for k in keep]
