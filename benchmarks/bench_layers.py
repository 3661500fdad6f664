"""Layer-level speed of the adapters on SmolLM2-135M's real projection shapes, batch 8 x 128, CPU.

  python benchmarks/bench_layers.py [--repeats 15] [--threads 1] [--shapes 576x576,576x192,...]

Rows (ratios of medians, variants interleaved in one process):
  1. TalkLoRA layer fwd+bwd / PEFT LoRA layer fwd+bwd at the same total rank r=32 (target <= 1.3)
  2. per-expert-loop TalkLoRA (the official code's structure) / this project's TalkLoRA at E=8 (target >= 2)
  3. MoELoRA r=64, top-1 of 8 experts / dense 8 experts, the adapter branch fwd+bwd (target <= 0.6)
  4. TT-LoRA forward by contraction / by reconstructing delta W, at batch 1 and 8 x 128
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, machine, table  # noqa: E402

from talklora_hub.modeling import AdapterSettings  # noqa: E402
from talklora_hub.modeling.adapter_base import SharedAdapterState  # noqa: E402
from talklora_hub.modeling.adapter_moelora import MoELoRALinear  # noqa: E402
from talklora_hub.modeling.adapter_talklora import TalkLoRALinear  # noqa: E402
from talklora_hub.modeling.adapter_ttlora import TTLoRALinear, tt_reconstruct  # noqa: E402
from talklora_hub.testing.oracles import LoopTalkLoRA  # noqa: E402

SHAPES = [(576, 576), (576, 192), (576, 1536), (1536, 576)]
TOKENS = (8, 128)


def build(cls, d_in, d_out, **settings):
    layer = cls(nn.Linear(d_in, d_out), "model.layers.0.self_attn.q_proj", AdapterSettings(**settings),
                SharedAdapterState())
    with torch.no_grad():  # non-zero B so the backward does real work
        for name in layer.adapter_parameter_names():
            layer.get_parameter(name).normal_(0, 0.02)
    for name, p in layer.named_parameters():
        p.requires_grad_(name not in ("weight", "bias"))
    return layer


def peft_lora(d_in, d_out, r):
    from peft import LoraConfig, get_peft_model

    holder = nn.Sequential()
    holder.add_module("proj", nn.Linear(d_in, d_out))
    return get_peft_model(holder, LoraConfig(r=r, lora_alpha=r, target_modules=["proj"], lora_dropout=0.0))


class Branch(nn.Module):
    """Only the update delta(x) of an adapter layer (no frozen base map)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer.delta(x)


def fwd_bwd(module, x):
    """Forward, then backward from a fixed upstream gradient (no loss ops to dilute the comparison)."""
    with torch.no_grad():
        upstream = torch.randn_like(module(x))

    def run():
        x.grad = None
        module.zero_grad(set_to_none=True)
        module(x).backward(upstream)
    return run


def fwd(module, x):
    def run():
        with torch.no_grad():
            module(x)
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared machine a preempted second thread stalls every "
                             "parallel matmul at its barrier, which swamps the comparison)")
    parser.add_argument("--shapes", default=",".join(f"{i}x{o}" for i, o in SHAPES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for d_in, d_out in (tuple(map(int, shape.split("x"))) for shape in args.shapes.split(",")):
        x = torch.randn(*TOKENS, d_in, requires_grad=True)
        shape = f"{d_in}->{d_out}"

        talk = build(TalkLoRALinear, d_in, d_out, method="talklora", r=32, num_experts=4)
        t = interleaved_medians({"talk": fwd_bwd(talk, x), "peft": fwd_bwd(peft_lora(d_in, d_out, 32), x)},
                                args.repeats)
        rows.append([shape, "TalkLoRA E=4 / PEFT LoRA, r=32, fwd+bwd", f"{t['talk'] * 1e3:.2f} / {t['peft'] * 1e3:.2f} ms",
                     f"{t['talk'] / t['peft']:.2f}", "<= 1.3"])

        talk8 = build(TalkLoRALinear, d_in, d_out, method="talklora", r=32, num_experts=8)
        loop8 = LoopTalkLoRA.from_layer(talk8)
        base = nn.Linear(d_in, d_out).requires_grad_(False)
        loop_layer = lambda v: base(v) + loop8(v)  # noqa: E731  the same frozen base map plus the looped update
        loop_module = nn.Module()
        loop_module.forward = loop_layer
        loop_module.zero_grad = loop8.zero_grad
        t = interleaved_medians({"loop": fwd_bwd(loop_module, x), "ours": fwd_bwd(talk8, x),
                                 "loop_branch": fwd_bwd(loop8, x), "ours_branch": fwd_bwd(Branch(talk8), x)},
                                args.repeats)
        rows.append([shape, "per-expert-loop TalkLoRA / ours, E=8, r=32, whole layer fwd+bwd",
                     f"{t['loop'] * 1e3:.2f} / {t['ours'] * 1e3:.2f} ms", f"{t['loop'] / t['ours']:.2f}", ">= 2"])
        rows.append([shape, "per-expert-loop TalkLoRA / ours, E=8, r=32, adapter branch fwd+bwd",
                     f"{t['loop_branch'] * 1e3:.2f} / {t['ours_branch'] * 1e3:.2f} ms",
                     f"{t['loop_branch'] / t['ours_branch']:.2f}", ">= 2"])

        dense = build(MoELoRALinear, d_in, d_out, method="moelora", r=64, num_experts=8)
        top1 = build(MoELoRALinear, d_in, d_out, method="moelora", r=64, num_experts=8, num_experts_per_tok=1)
        top1.load_state_dict(dense.state_dict())
        # The adapter branch alone: routing can only save the update's compute, never the frozen W0 x.
        t = interleaved_medians({"top1": fwd_bwd(Branch(top1), x), "dense": fwd_bwd(Branch(dense), x)}, args.repeats)
        rows.append([shape, "MoELoRA r=64 top-1 of 8 / dense 8, adapter branch fwd+bwd",
                     f"{t['top1'] * 1e3:.2f} / {t['dense'] * 1e3:.2f} ms", f"{t['top1'] / t['dense']:.2f}", "<= 0.6"])

        tt = build(TTLoRALinear, d_in, d_out, method="ttlora")

        def reconstructed(layer):
            def run(v):
                cores = [core[0] for core in layer.tt_cores]
                delta = tt_reconstruct(cores, layer.input_factors, layer.output_factors) * layer.scaling
                return layer.base_forward(v) + v @ delta.T
            return run

        for label, batch in (("batch 1", torch.randn(1, 1, d_in)), ("batch 8x128", x.detach())):
            rec = reconstructed(tt)
            t = interleaved_medians({"contract": fwd(tt, batch), "rebuild": lambda: rec(batch)}, args.repeats)
            rows.append([shape, f"TT-LoRA contraction / reconstruction, forward, {label}",
                         f"{t['contract'] * 1e3:.3f} / {t['rebuild'] * 1e3:.3f} ms",
                         f"{t['contract'] / t['rebuild']:.2f}", "(report)"])
    x = torch.randn(*TOKENS, 576, requires_grad=True)
    for r in (64, 128, 256, 512):  # where top-1 starts to pay: the saved FLOPs must outweigh gather/scatter traffic
        dense = build(MoELoRALinear, 576, 576, method="moelora", r=r, num_experts=8)
        top1 = build(MoELoRALinear, 576, 576, method="moelora", r=r, num_experts=8, num_experts_per_tok=1)
        top1.load_state_dict(dense.state_dict())
        t = interleaved_medians({"top1": fwd_bwd(Branch(top1), x), "dense": fwd_bwd(Branch(dense), x)}, args.repeats)
        rows.append(["576->576", f"MoELoRA r={r} top-1 of 8 / dense 8, adapter branch fwd+bwd (rank sweep)",
                     f"{t['top1'] * 1e3:.2f} / {t['dense'] * 1e3:.2f} ms", f"{t['top1'] / t['dense']:.2f}",
                     "<= 0.6 at r=64"])
    print(f"machine: {machine()}; tokens {TOKENS[0]}x{TOKENS[1]}; medians of {args.repeats} interleaved runs\n")
    print(table(["shape", "comparison", "times", "ratio", "target"], rows))


if __name__ == "__main__":
    main()
