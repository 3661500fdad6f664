"""Model cards: rendered from the Jinja2 templates in talklora_hub/publish/templates/, with YAML metadata that
huggingface_hub's ModelCard parses (library, base model, pipeline, tags, datasets, license,
model-index), and a routing picture where the model routes.

What a card shows never depends on this machine: `base_model:` is a Hub repo id or absent (a local base
is named by its folder name only), the Training table holds figures, not paths. Each metric comes with
its sample size (not listed as a metric) and, for proportions, a 95% Wilson interval; a classification
task also shows the majority-class baseline on the same examples, its prompt template and its labels.

Everything a card says about the run comes from one CardFacts (card_facts.py), whichever producer filled it.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path, PurePath
from typing import Any, Dict, List, Optional, Sequence

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ..analysis.routing_stats import balance_summary, layer_load_matrix
from ..data.metrics import majority_baseline, wilson_interval
from ..modeling.methods import CARD_FIELDS, method_spec
from .card_facts import CardFacts

# Inside the package (package-data), so a pip-installed talklora_hub renders cards too.
TEMPLATES = Path(os.environ.get("TALKLORA_CARD_TEMPLATES", Path(__file__).resolve().parent / "templates"))
PIPELINES = {"causal": "text-generation", "seqcls": "text-classification", "bare": "feature-extraction"}
AUTO_CLASSES = {"text-generation": "AutoModelForCausalLM", "text-classification": "AutoModelForSequenceClassification",
                "feature-extraction": "AutoModel"}
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


def evaluation_rows(facts: Optional[CardFacts]) -> List[Dict[str, Any]]:
    """The facts' evaluation rows for the card, each {task, split, metric, value, count, low, high, majority,
    dataset} (a copy; rows without a numeric value are left out). The sample size is each row's count, never a
    metric of its own; proportions get a 95% Wilson interval (unless the row has one); classification tasks
    the majority-class baseline on the same examples (from the facts' task_details)."""
    if facts is None:
        return []
    rows = [dict(r) for r in facts.evaluation
            if isinstance(r.get("value"), (int, float)) and not math.isnan(r["value"])]
    for row in rows:
        _add_interval(row)
        row.setdefault("majority", _majority(facts.task_details.get(row["task"])) if row["metric"] == "accuracy"
                       else None)
    return rows


def _add_interval(row: Dict[str, Any]) -> None:
    """low/high: the 95% Wilson interval of a proportion metric scored on `count` examples."""
    count = row.get("count")
    if row.get("low") is not None or row["metric"] not in _PROPORTIONS or not isinstance(count, int) or count <= 0:
        row.setdefault("low", None)
        row.setdefault("high", None)
        return
    row["low"], row["high"] = wilson_interval(min(count, max(0, round(row["value"] * count))), count)


def _majority(facts: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    if not facts or facts.get("kind") != "classification":
        return None
    baseline = majority_baseline(facts["train_label_counts"], facts["eval_label_counts"])
    return {**baseline, "label_name": facts["label_names"][baseline["label"]]} if baseline else None


def card_data(kind: str, model_type_head: str, method: str, base_repo: Optional[str], facts: Optional[CardFacts],
              repo_id: str, license: str = "apache-2.0") -> ModelCardData:
    """The card's YAML metadata: library, base model, pipeline, tags, datasets, license and model-index."""
    rows = [r for r in evaluation_rows(facts) if r.get("model_index", True)]
    base_repo = hub_base_id(base_repo, facts)
    evals = [EvalResult(task_type=PIPELINES.get(model_type_head, "text-generation"), dataset_type=r.get("dataset") or r["task"],
                        dataset_name=r["task"], dataset_split=r.get("split"), metric_type=r["metric"],
                        metric_value=float(r["value"])) for r in rows]
    datasets = list(facts.datasets) if facts is not None and facts.datasets else None
    tags = ["talklora", "mixture-of-experts", "lora", method, "talklora_hub", f"talklora-{kind}"]
    if kind == "model":
        tags.append("custom_code")
    return ModelCardData(
        library_name="transformers" if kind == "model" else "talklora_hub",
        base_model=base_repo, pipeline_tag=PIPELINES.get(model_type_head, "text-generation"), tags=tags,
        datasets=datasets, license=license, model_name=repo_id, eval_results=evals or None,
        base_model_relation=None if base_repo is None else "finetune" if kind == "model" else "adapter")


def render_card(kind: str, **context: Any) -> str:
    """Renders templates/{kind}.md.j2 and checks huggingface_hub parses it back."""
    environment = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                              keep_trailing_newline=True)
    context = {"picture": None, "routing": None, "training": None, "evaluation": [], "tasks": [],
               "routing_note": "This adapter does not route per token.", "output_router_logits": False,
               "comparison": None, **context}
    pipeline = getattr(context["card_data"], "pipeline_tag", None)
    context.setdefault("auto_class", AUTO_CLASSES.get(pipeline, "AutoModelForCausalLM"))
    context["card_data"] = context["card_data"].to_yaml()
    text = environment.get_template(f"{kind}.md.j2").render(**context)
    ModelCard(text)  # raises if the metadata does not parse
    return text


def adapter_rows(adapter: Dict[str, Any], targets: Optional[List[str]] = None) -> List[tuple]:
    """(setting, value) rows; `targets` (the adapted modules' names) replaces a None target_modules. The
    method's own card_fields and its own settings (MethodSpec.settings) follow the shared rows."""
    adapter = {**adapter, "target_modules": adapter.get("target_modules") or targets}
    spec = method_spec(adapter.get("method"))  # the method's own rows (methods.py); none for an unknown method
    rows = [(k, adapter.get(k)) for k in CARD_FIELDS + (spec.card_fields if spec is not None else ())]
    own = adapter.get("method_settings") or {}
    return rows + [(s.name, own.get(s.name)) for s in (spec.settings if spec is not None else ())]


# ---- what a card says about the base, the training and the tasks (no local paths) ---------------------
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_PROPORTIONS = ("accuracy", "exact_match", "exact_match_final_number")


def is_hub_id(value) -> bool:
    """A Hub repo id ('owner/name' or 'name') and not a path that exists on this machine."""
    if not isinstance(value, str) or not _HUB_ID.fullmatch(value) or ".." in value or "--" in value:
        return False
    return not Path(value).exists()


def _bootstrap_name(base: Optional[str], facts: Optional[CardFacts]) -> Optional[str]:
    """The bootstrapped base (talklora_hub.data.base_models) a run used, by its name or its folder's record."""
    from ..data.base_models import HUB_REPO_IDS, RECORD_NAME

    named = facts.base_name if facts is not None else None
    if named in HUB_REPO_IDS:
        return named
    if base and (Path(base) / RECORD_NAME).is_file() and PurePath(base).name in HUB_REPO_IDS:
        return PurePath(base).name
    return None


def hub_base_id(base: Optional[str], facts: Optional[CardFacts] = None) -> Optional[str]:
    """The base model's Hub repo id for the card's `base_model:`, or None (a local folder with no recorded id).

    In order: the facts' base_repo_id (--base-repo-id); `base` (the model config's base_model_name_or_path) or
    the run's --base when it is a Hub id; the Hub repo of a bootstrapped base (data.base_models.HUB_REPO_IDS)."""
    from ..data.base_models import HUB_REPO_IDS

    if facts is not None and facts.base_repo_id:
        return facts.base_repo_id
    for candidate in (base, facts.base_name if facts is not None else None):
        if is_hub_id(candidate) and candidate not in HUB_REPO_IDS:
            return candidate
    name = _bootstrap_name(base, facts)
    return HUB_REPO_IDS[name][0] if name else None


def base_label(base: Optional[str], facts: Optional[CardFacts] = None) -> Optional[str]:
    """How the card's text names the base: `repo/id`, with how a bootstrapped copy relates to it, or a local
    folder by its folder name only."""
    from ..data.base_models import HUB_REPO_IDS

    repo = hub_base_id(base, facts)
    name = _bootstrap_name(base, facts)
    if repo and name and not facts.base_repo_id:
        return f"`{repo}` ({HUB_REPO_IDS[name][1]})"
    if repo:
        return f"`{repo}`"
    if base:
        return f"a local folder `{PurePath(str(base).rstrip('/')).name}`"
    return None


def _local(value) -> bool:
    return isinstance(value, str) and (os.path.isabs(value) or value.startswith(("./", "../", "~")))


def training_rows(facts: Optional[CardFacts]) -> Optional[Dict[str, Any]]:
    """The card's Training table: the facts' training rows without the empty figures and the local paths."""
    if facts is None:
        return None
    return {k: v for k, v in facts.training.items() if v is not None and not _local(v)} or None


def task_rows(facts: Optional[CardFacts]) -> List[Dict[str, Any]]:
    """The card's Task section, one entry per task: kind, prompt template, how the model reads it, and the
    labels with their answer words and example counts (from the facts' task_details)."""
    details = facts.task_details if facts is not None else {}
    encoder_text = facts is not None and facts.head == "classification" and len(details) == 1
    out = []
    for name, facts in details.items():
        labels = [{"name": label, "answer": facts["verbalizers"][i], "train": facts["train_label_counts"][i],
                   "eval": facts["eval_label_counts"][i]} for i, label in enumerate(facts.get("label_names") or [])]
        out.append({"task": name, "kind": facts["kind"], "metric": facts["metric"], "template": facts["template"],
                    "labels": labels, "reads": "the text alone (the classification head scores the labels; the "
                    "template is not used)" if encoder_text else "the prompt template below"})
    return out
