"""The PEFT LoRA baseline: the `peft` package's LoRA on the same base, targets, rank, data, steps and schedule
as a zoo recipe, trained by a plain loop over this project's own batches, scored like every zoo entry.

It answers "would the standard library's LoRA have done as well?" with everything else held equal: the
batches are the recipe's (same seeded batch plan, answer-token loss), AdamW with the same learning rate,
linear warm-up and decay, gradient clipping at 1.0, dropout on the adapter input, lora_alpha = r (a scale of
1, as the zoo's own adapters use).
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict

import torch
import torch.nn as nn
import torch.nn.functional as F


class _Scorable(nn.Module):
    """Presents a PEFT model to the zoo's scoring, which may pass options only talklora_hub models take."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids=None, attention_mask=None, **_ignored):
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


def train_peft_lora(train: Dict[str, Any], progress: bool = True):
    """train: a zoo recipe's TrainConfig fields (base, tasks, r, target_modules, lora_dropout, max_steps,
    batch_size, max_length, lr, seed; causal LM bases); lora_dropout unset is AdapterSettings' default, as in
    the zoo's own training. Returns (model ready to score, tokenizer, info)."""
    from peft import LoraConfig, get_peft_model
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

    from ..data.base_models import resolve_base
    from ..modeling.adapter_settings import AdapterSettings
    from ..train.data import BatchPlan, LazyEncoded, collate, pad_id, resolve_tasks

    base = resolve_base(train["base"])
    torch.manual_seed(train["seed"])
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    targets = train.get("target_modules") or ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
    dropout = train.get("lora_dropout", AdapterSettings.lora_dropout)
    config = LoraConfig(r=train["r"], lora_alpha=train["r"], lora_dropout=dropout, target_modules=targets,
                        task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    data = resolve_tasks(list(train["tasks"]), "causal", train["seed"], None, 0, "test")
    encoded = LazyEncoded(data.splits["train"], tokenizer, "causal", train["max_length"], data)
    plan = BatchPlan(len(encoded), train["batch_size"], 1, 1, 0, train["seed"])
    steps = train["max_steps"]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train["lr"], weight_decay=0.0)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=math.ceil(0.03 * steps), num_training_steps=steps)
    pad = pad_id(tokenizer)
    model.train()
    started = time.perf_counter()
    bar = tqdm(range(steps), desc="train peft-lora", disable=not progress)
    for step in bar:
        batch = collate([encoded[i] for i in plan.micro_batches(step)[0]], "causal", pad)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        # Next-token loss on the answer tokens only, as the zoo's trainer computes it.
        loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
                               ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    info = {"train_seconds": round(time.perf_counter() - started, 1), "steps": steps,
            "trainable": sum(p.numel() for p in params), "lora_alpha": train["r"], "peft_targets": targets}
    return _Scorable(model.eval()), tokenizer, info
