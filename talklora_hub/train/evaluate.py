"""Evaluation per task.

- Classification on a causal LM: constrained scoring. Each verbalizer (" yes", " no", ...), tokenized
  exactly as the training target and followed by EOS, is scored by its summed log-probability after
  the prompt; the best one is the prediction. The model never has to stop by itself.
- Classification on an encoder: argmax over the task's own slice of the joint label logits.
- Generation (GSM8K): greedy decoding from the left-padded prompt until EOS or max_new_tokens, then
  the task's metric (exact match of the final number).
- TT-LoRA MoE: router accuracy (the router's top-1 expert equals the task id; eval mode, so no noise with the
  default router_noise="masked-train", the paper's noise with "official"),
  and which expert served each task's sequences; any model can be scored with every sequence forced
  to one expert ("each expert alone").

With several processes every function scores its share of the examples and gathers the rest, so all
processes return the same numbers.

These are the model-facing halves of scoring, here because training evaluates its own run and train sits below
evaluation in the package's layers: talklora_hub.evaluation.scoring scores whole test splits with them
(accuracy, 95% interval, per-example hits).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from ..modeling.compose import sequence_routing_args
from .data import TaskData, encode_prompts, encode_targets, eos_id, fit_prompt, pad_id
from .routing_health import RoutingHealth


def _shard(items: List[Any], accelerator) -> List[Any]:
    if accelerator is None or accelerator.num_processes == 1:
        return items
    return items[accelerator.process_index::accelerator.num_processes]


def _gather(pairs: List[Any], accelerator) -> List[Any]:
    if accelerator is None or accelerator.num_processes == 1:
        return pairs
    from accelerate.utils import gather_object

    return gather_object(pairs)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def accepts_logits_to_keep(model) -> bool:
    """Whether the wrapped causal LM can return logits at chosen positions only."""
    import inspect

    inner = getattr(model, "base", None)
    return inner is not None and "logits_to_keep" in inspect.signature(type(inner).forward).parameters


def _pad_batch(sequences: Sequence[List[int]], pad: int, left: bool = False):
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if not seq:
            continue
        span = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq)
        mask[row, span] = 1
    return ids, mask


@torch.no_grad()
def score_choices(model, tokenizer, prompts: Sequence[str], choices: Sequence[Sequence[str]], max_length: int,
                  batch_size: int = 8, autocast: Callable = contextlib.nullcontext,
                  forced_experts: Optional[Sequence[int]] = None, health: Optional[RoutingHealth] = None) -> List[List[float]]:
    """Summed log-probability of each choice (tokenized like a training target, plus EOS) after each
    prompt: one list of floats per prompt. forced_experts: a TT-LoRA MoE expert per prompt."""
    eos = eos_id(tokenizer)
    pad = pad_id(tokenizer)
    prompt_ids = encode_prompts(tokenizer, prompts)
    flat: List[tuple] = []  # (example, choice, sequence, prompt length, choice length)
    for i, (p, options) in enumerate(zip(prompt_ids, choices)):
        coded = [c + ([eos] if eos is not None else []) for c in encode_targets(tokenizer, list(options))]
        longest = max(len(c) for c in coded)
        fitted = fit_prompt(p, max(1, max_length - longest))
        for j, c in enumerate(coded):
            flat.append((i, j, fitted + c, len(fitted), len(c)))
    scores = [[0.0] * len(options) for options in choices]
    device = _device(model)
    keep = accepts_logits_to_keep(model)
    routed = bool(getattr(model.adapter_settings, "is_routed", False)) if health is not None else False
    sequence_routed = getattr(model, "sequence_router", None) is not None
    for start in range(0, len(flat), batch_size):
        chunk = flat[start:start + batch_size]
        ids, mask = _pad_batch([c[2] for c in chunk], pad)
        ids, mask = ids.to(device), mask.to(device)
        routing = {}
        if sequence_routed:  # the router reads the prompt only; forced experts serve their sequences
            prompt_mask = torch.zeros_like(mask)
            for row, c in enumerate(chunk):
                prompt_mask[row, :c[3]] = 1
            forced = None if forced_experts is None else torch.tensor([forced_experts[c[0]] for c in chunk])
            routing = sequence_routing_args(model, prompt_mask=prompt_mask,
                                            experts=None if forced is None else forced.to(device))
        # Logits only where a choice token is predicted (the union over the batch's rows).
        wanted = sorted({p for c in chunk for p in range(c[3] - 1, c[3] + c[4] - 1)})
        column = {p: k for k, p in enumerate(wanted)} if keep else {p: p for p in wanted}
        extra = {"logits_to_keep": torch.tensor(wanted, device=device)} if keep else {}
        with autocast():
            out = model(input_ids=ids, attention_mask=mask, output_router_logits=routed or None, **extra, **routing)
        if routed and out.routing_weights:
            health.update_tokens(out.routing_weights, out.router_module_names, mask)
        logprobs = out.logits.float().log_softmax(-1)
        for row, (i, j, seq, plen, clen) in enumerate(chunk):
            positions = torch.tensor([column[p] for p in range(plen - 1, plen + clen - 1)], device=device)
            targets = ids[row, plen:plen + clen]
            scores[i][j] = float(logprobs[row, positions, targets].sum())
    return scores


@torch.no_grad()
def generate_completions(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, max_length: int,
                         batch_size: int = 8, autocast: Callable = contextlib.nullcontext,
                         forced_experts: Optional[Sequence[int]] = None) -> List[str]:
    """Greedy completions (special tokens dropped) of left-padded prompts."""
    from transformers import GenerationConfig

    pad = pad_id(tokenizer)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                              eos_token_id=eos_id(tokenizer))
    encoded = [fit_prompt(p, max_length) for p in encode_prompts(tokenizer, prompts)]
    device = _device(model)
    out: List[str] = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start:start + batch_size]
        ids, mask = _pad_batch(chunk, pad, left=True)
        # A TT-LoRA MoE routes on the prompt (or serves the forced experts) and holds the choice while decoding.
        forced = None if forced_experts is None else torch.tensor(forced_experts[start:start + len(chunk)])
        routing = sequence_routing_args(model, experts=None if forced is None else forced.to(device))
        with autocast():
            generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                       generation_config=config, **routing)
        new = generated[:, ids.shape[1]:]
        out += tokenizer.batch_decode(new, skip_special_tokens=True)
    return out


@torch.no_grad()
def encoder_predictions(model, tokenizer, rows: Sequence[dict], data: TaskData, max_length: int, batch_size: int = 8,
                        autocast: Callable = contextlib.nullcontext) -> List[int]:
    """Label index within each row's own task, from the joint label logits."""
    field = "text" if len(data.names) == 1 else "prompt"
    device = _device(model)
    preds: List[int] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        enc = tokenizer([r[field] for r in chunk], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
        with autocast():
            logits = model(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device)).logits
        for row, r in enumerate(chunk):
            offset = data.label_offsets[r["task_name"]]
            count = len(data.specs[r["task_name"]].label_names)
            preds.append(int(logits[row, offset:offset + count].float().argmax()))
    return preds


@torch.no_grad()
def router_choices(model, tokenizer, prompts: Sequence[str], max_length: int, batch_size: int = 8,
                   autocast: Callable = contextlib.nullcontext) -> List[int]:
    """A TT-LoRA MoE's top-1 expert for each prompt (one pass of the bare base, then the router)."""
    was_training = model.training
    model.eval()
    pad = pad_id(tokenizer)
    encoded = [fit_prompt(p, max_length) for p in encode_prompts(tokenizer, prompts)]
    device = _device(model)
    chosen: List[int] = []
    try:
        for start in range(0, len(encoded), batch_size):
            ids, mask = _pad_batch(encoded[start:start + batch_size], pad)
            with autocast():
                logits = model.route_sequences(input_ids=ids.to(device), attention_mask=mask.to(device))
            chosen += [int(x) for x in logits.float().argmax(-1)]
    finally:
        model.adapter_shared.sequence_experts = None
        model.train(was_training)
    return chosen


def predict_labels(model, tokenizer, data: TaskData, task: str, rows: Sequence[dict], head: str, max_length: int,
                   batch_size: int = 16, forced_expert: Optional[int] = None,
                   autocast: Callable = contextlib.nullcontext, health: Optional[RoutingHealth] = None) -> List[int]:
    """The predicted label index (within `task`'s own labels) of each row of a classification task: an encoder's
    argmax over its task's label logits, or a causal LM's best verbalizer by constrained scoring. forced_expert: a
    TT-LoRA MoE with every sequence sent to that expert (oracle routing) instead of the router's choice."""
    if head == "classification":
        return encoder_predictions(model, tokenizer, list(rows), data, max_length, batch_size, autocast)
    choices = [" " + v for v in data.specs[task].verbalizers]
    forced = None if forced_expert is None else [forced_expert] * len(rows)
    scores = score_choices(model, tokenizer, [r["prompt"] for r in rows], [choices] * len(rows), max_length,
                           batch_size, autocast, forced, health)
    return [max(range(len(s)), key=s.__getitem__) for s in scores]


def router_accuracy(model, tokenizer, rows: Sequence[dict], task_names: Sequence[str], max_length: int,
                    batch_size: int = 8, autocast: Callable = contextlib.nullcontext, accelerator=None) -> Dict[str, Any]:
    """{"accuracy", "per_task": {task: accuracy}, "confusion": {task: [count per expert]}, "n"}: expert e is
    the expert of task e (the stage-1 order)."""
    indexed = _shard(list(enumerate(rows)), accelerator)
    picks = router_choices(model, tokenizer, [r["prompt"] for _, r in indexed], max_length, batch_size, autocast)
    pairs = sorted(_gather([(i, p) for (i, _), p in zip(indexed, picks)], accelerator))
    num_experts = model.adapter_settings.num_experts
    confusion = {name: [0] * num_experts for name in task_names}
    hits = {name: [0, 0] for name in task_names}
    for i, pick in pairs:
        row = rows[i]
        confusion[row["task_name"]][pick] += 1
        hits[row["task_name"]][0] += int(pick == int(row["task"]))
        hits[row["task_name"]][1] += 1
    total = sum(h[1] for h in hits.values())
    return {"accuracy": sum(h[0] for h in hits.values()) / total if total else 0.0,
            "per_task": {name: (h[0] / h[1] if h[1] else 0.0) for name, h in hits.items()},
            "confusion": confusion, "n": total}


def evaluate(model, tokenizer, data: TaskData, rows: Sequence[dict], head: str, max_length: int,
             max_new_tokens: int = 256, batch_size: int = 8, autocast: Callable = contextlib.nullcontext,
             accelerator=None, forced_expert: Optional[int] = None, progress: bool = False,
             dead_threshold: float = 0.02) -> Dict[str, Any]:
    """{task: {metric: value, "n": count, ...}} for the given rows (a mix of tasks is fine).

    forced_expert: score a TT-LoRA MoE with every sequence sent to that expert. Routed models also
    report, per task, the routing balance over the scored sequences ("routing").
    """
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    results: Dict[str, Any] = {}
    try:
        for name in tqdm(data.names, desc="evaluate", disable=not progress, leave=False):
            spec = data.specs[name]
            task_rows = [r for r in rows if r["task_name"] == name]
            if not task_rows:
                continue
            mine = _shard(list(enumerate(task_rows)), accelerator)
            my_rows = [r for _, r in mine]
            health = RoutingHealth(dead_threshold)
            samples: List[Any] = []
            if head == "classification" or spec.kind == "classification":
                preds = predict_labels(model, tokenizer, data, name, my_rows, head, max_length, batch_size,
                                       forced_expert, autocast, health)
            else:
                forced = None if forced_expert is None else [forced_expert] * len(my_rows)
                preds = generate_completions(model, tokenizer, [r["prompt"] for r in my_rows], max_new_tokens,
                                             max_length, batch_size, autocast, forced)
            pairs = sorted(_gather([(i, p) for (i, _), p in zip(mine, preds)], accelerator), key=lambda x: x[0])
            predictions = [p for _, p in pairs]
            if spec.kind == "classification":
                references = [int(r["label"]) for r in task_rows]
            else:
                references = [str(r["answer"]) for r in task_rows]
                samples = [{"prompt_tail": task_rows[i]["prompt"][-80:], "completion": predictions[i][:300],
                            "answer": references[i]} for i in range(min(3, len(task_rows)))]
            metrics = spec.compute_metrics(predictions, references)
            health.reduce(accelerator)
            routing = health.summary()
            if routing["overall"]:
                metrics["routing"] = {"overall": routing["overall"], "layers": routing["layers"]}
            if samples:
                metrics["samples"] = samples
            results[name] = metrics
    finally:
        model.train(was_training)
    return results


def headline(metrics: Dict[str, Any]) -> Dict[str, float]:
    """{task: its main metric} from evaluate()'s result."""
    out = {}
    for task, values in metrics.items():
        if isinstance(values, dict):
            main = [k for k, v in values.items() if isinstance(v, float) and k not in ("n",)]
            if main:
                out[task] = values[main[0]]
    return out
