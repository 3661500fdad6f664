"""Whole-model training step, TalkLoRA vs PEFT LoRA, on SmolLM2-135M (its real shapes), batch 8 x 128, CPU.

  python benchmarks/bench_model.py [--rounds 2] [--steps 3] [--model PATH] [--threads 1]

Both adapters target q, k, v, up, down at r = 32. Each variant runs in its own subprocess (so peak RSS
is its own); the variants alternate for --rounds rounds and the medians of their step times are
compared. --model takes a local SmolLM2 folder (talklora-hub data bootstrap-models makes one); without
it a randomly initialised model of the same config is used: speed and memory depend only on shapes.
Targets: time ratio <= 1.15, peak memory ratio <= 1.10.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]


def smollm2_config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                       num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                       rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True)


def build(variant: str, model_path: str | None):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = (AutoModelForCausalLM.from_pretrained(model_path) if model_path
            else AutoModelForCausalLM.from_config(smollm2_config()))
    if variant == "peft-lora":
        from peft import LoraConfig, get_peft_model

        return get_peft_model(base, LoraConfig(r=32, lora_alpha=32, target_modules=TARGETS, lora_dropout=0.0))
    from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM

    return TalkLoRAForCausalLM.from_base(base, AdapterSettings(method=variant, r=32, target_modules=TARGETS))


def run_variant(variant: str, steps: int, model_path: str | None) -> dict:
    model = build(variant, model_path).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, 49152, (8, 128), generator=torch.Generator().manual_seed(1))
    times = []
    for step in range(steps + 1):  # the first step warms up and is not timed
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:
            times.append(time.perf_counter() - start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "times": times, "peak_mib": peak_kib / 1024,
            "trainable": sum(p.numel() for p in params)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--model", default=None)
    parser.add_argument("--variants", default="talklora,peft-lora")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (see bench_layers.py)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(run_variant(args.child, args.steps, args.model)))
        return
    variants = args.variants.split(",")
    results = {v: {"times": [], "peak_mib": [], "trainable": 0} for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            cmd = [sys.executable, __file__, "--child", variant, "--steps", str(args.steps), "--threads", str(args.threads)]
            if args.model:
                cmd += ["--model", args.model]
            out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            results[variant]["times"] += out["times"]
            results[variant]["peak_mib"].append(out["peak_mib"])
            results[variant]["trainable"] = out["trainable"]
    ref = variants[-1]
    rows = []
    for variant in variants:
        t = statistics.median(results[variant]["times"])
        m = max(results[variant]["peak_mib"])
        t_ref = statistics.median(results[ref]["times"])
        m_ref = max(results[ref]["peak_mib"])
        rows.append([variant, f"{results[variant]['trainable']:,}", f"{t:.2f} s", f"{t / t_ref:.2f}",
                     f"{m:,.0f} MiB", f"{m / m_ref:.2f}"])
    print(f"machine: {machine()}; SmolLM2-135M {'(' + args.model + ')' if args.model else '(random init, same config)'}, "
          f"batch 8x128, fp32, AdamW; {args.rounds} rounds x {args.steps} timed steps; ratios vs {ref}\n")
    print(table(["adapter", "trainable params", "step time (median)", "time ratio", "peak RSS", "memory ratio"], rows))


if __name__ == "__main__":
    main()
