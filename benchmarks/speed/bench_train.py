"""Whole-model training speed (tokens/s) and peak memory of every adapter method vs PEFT LoRA.

  python benchmarks/speed/bench_train.py [--model PATH|smollm2-135m-instruct] [--quick] [--repeats 2]
      [--steps 3] [--batch 8] [--length 128] [--threads 1] [--device cpu|cuda] [--out FILE.md]

Each (variant, repeat) runs in its own child process, as benchmarks/bench_model.py does, so the peak RSS
(ru_maxrss) is that variant's own; the variants alternate (order rotated each repeat) and the medians of
their timed steps are compared. The children are forked from a multiprocessing forkserver that has imported
torch, transformers, peft and talklora_hub once (a fresh interpreter costs ~6 s of imports here): every child
starts from the same ~0.3-0.5 GiB baseline, which its peak RSS includes, and the forkserver never touches CUDA.
A step is forward + backward + AdamW on a fixed random batch (labels = inputs);
each child's first step warms up and is not timed.

Variants, all on the same base weights, the architecture's default targets (Llama: q, k, v, up, down) at the
same rank (32; 8 with --quick), dropout 0, B matrices non-zero:
  - peft-lora: the `peft` package's LoRA (lora_alpha = r, i.e. scale 1 as our default) - the reference, 1.00;
  - lora, moelora (E = 4), talklora (E = 4, shared B banks), ttlora (rank 5, alpha 16);
  - ttlora-moe3: a TT-LoRA MoE with 3 experts in its stage 2 (experts frozen, only the sequence router trains,
    on the task loss plus the router's cross-entropy against random task ids).
tokens/s = batch x length / median step time; speed ratio = tokens/s / PEFT's; memory ratio = peak / PEFT's
peak (peak RSS of the child on CPU; on CUDA the peak of torch.cuda.max_memory_allocated). The TalkLoRA line
under the table is bench_model.py's comparison: time ratio (step time / PEFT's, target <= 1.15) and memory
ratio (target <= 1.10).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed_common as sc  # noqa: E402

TITLE = "Training speed and peak memory: adapters vs PEFT LoRA"
VARIANTS = ("peft-lora",) + sc.METHODS
REFERENCE = "peft-lora"
TARGET_TIME, TARGET_MEMORY = 1.15, 1.10  # bench_model.py's TalkLoRA targets


def parse_args(argv=None) -> argparse.Namespace:
    parser = sc.new_parser(__doc__, repeats=2, quick_repeats=1)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per child (default 3; 4 with --quick)")
    parser.add_argument("--batch", type=int, default=None, help="sequences per step (default 8; 4 with --quick)")
    parser.add_argument("--length", type=int, default=None, help="tokens per sequence (default 128; 32 with --quick)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="subset of " + ",".join(VARIANTS))
    args = sc.finish_args(parser, parser.parse_args(argv))
    quick_defaults, defaults = {"steps": 4, "batch": 4, "length": 32}, {"steps": 3, "batch": 8, "length": 128}
    for key, value in (quick_defaults if args.quick else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    if REFERENCE not in args.variants:
        args.variants.insert(0, REFERENCE)  # every ratio is to PEFT LoRA
    return args


# ----------------------------------------------------------------------------------------- child
def build_variant(variant: str, folder: str, quick: bool, dtype_name: str):
    import torch
    from transformers import AutoModelForCausalLM

    from talklora_hub.modeling.adapter_settings import default_targets

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=sc.torch_dtype(dtype_name))
    rank = sc.QUICK_RANK if quick else sc.FULL_RANK
    if variant == "peft-lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=default_targets(base.config.model_type),
                            lora_dropout=0.0)
        # autocast_adapter_dtype=False: the adapter in the base's dtype, as ours (matters for bf16 only).
        model = get_peft_model(base, config, autocast_adapter_dtype=False)
    else:
        from talklora_hub.modeling import TalkLoRAForCausalLM

        model = TalkLoRAForCausalLM.from_base(base, sc.adapter_settings(variant, quick))
        if variant == "ttlora-moe3":  # stage 2: only the sequence router trains (modeling.compose.freeze_experts)
            for name, param in model.named_parameters():
                param.requires_grad_(name.startswith("sequence_router."))
    sc.make_adapters_nonzero(model)
    return model


PRELOAD = ["torch", "transformers", "transformers.models.llama.modeling_llama", "peft", "talklora_hub.modeling",
           "speed_common"]


def run_child(args: argparse.Namespace, variant: str, folder: str, device: str, dtype_name: str) -> dict:
    import torch

    sc.quiet_transformers()
    torch.set_num_threads(args.threads)
    model = build_variant(variant, folder, args.quick, dtype_name).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    vocab = model.config.get_text_config().vocab_size
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (args.batch, args.length), generator=generator).to(device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    if variant == "ttlora-moe3":
        batch["sequence_labels"] = torch.randint(0, 3, (args.batch,), generator=generator).to(device)
    rss_built = sc.rss_mib()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(args.steps + 1):  # the first step warms up and is not timed
        sc.synchronize(device)
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sc.synchronize(device)
        if step:
            times.append(time.perf_counter() - start)
        if not torch.isfinite(loss):
            raise RuntimeError(f"{variant}: loss is {loss.item()}")
    out = {"variant": variant, "times": times, "peak_rss_mib": sc.peak_rss_mib(), "rss_after_build_mib": rss_built,
           "trainable": sum(p.numel() for p in params), "loss": float(loss)}
    if device == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


# ----------------------------------------------------------------------------------------- parent
def _child_entry(conn, *call) -> None:
    try:
        conn.send(("ok", run_child(*call)))
    except BaseException:  # noqa: BLE001  reported to the parent, which raises
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run_in_child(context, *call) -> dict:
    """run_child in a fresh forked process (its own peak RSS); raises with the child's traceback on failure,
    or if the child dies without a word (e.g. killed for memory)."""
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child_entry, args=(sender, *call))
    process.start()
    sender.close()
    while not receiver.poll(0.5):
        if not process.is_alive():
            process.join()
            raise RuntimeError(f"variant {call[1]!r}: its child process died with exit code {process.exitcode}")
    status, value = receiver.recv()
    process.join()
    if status != "ok":
        raise RuntimeError(f"variant {call[1]!r} failed in its child process:\n{value}")
    return value


def measure_plan(args, context, folder: Path, device: str, dtype_name: str, payload: dict) -> tuple:
    results = {v: {"times": [], "peak_mib": [], "runs": []} for v in args.variants}
    for round_index in range(args.repeats):
        for variant in sc.rotated(args.variants, round_index):
            out = run_in_child(context, args, variant, str(folder), device, dtype_name)
            peak = out["cuda_peak_mib"] if device == "cuda" else out["peak_rss_mib"]
            results[variant]["times"] += out["times"]
            results[variant]["peak_mib"].append(peak)
            results[variant]["runs"].append(out)
            results[variant]["trainable"] = out["trainable"]
    tokens = args.batch * args.length
    ref_time = sc.median(results[REFERENCE]["times"])
    ref_mem = max(results[REFERENCE]["peak_mib"])
    rows, summary = [], []
    for variant in args.variants:
        step = sc.median(results[variant]["times"])
        peak = max(results[variant]["peak_mib"])
        entry = {"method": variant, "device": device, "dtype": dtype_name, "trainable": results[variant]["trainable"],
                 "median_step_s": step, "tokens_per_s": tokens / step, "speed_ratio": ref_time / step,
                 "time_ratio": step / ref_time, "peak_mib": peak, "memory_ratio": peak / ref_mem,
                 "runs": results[variant]["runs"]}
        summary.append(entry)
        rows.append([variant, device, dtype_name, f"{entry['trainable']:,}", f"{step:.3f} s", f"{tokens / step:.1f}",
                     f"{entry['speed_ratio']:.2f}", f"{peak:,.0f} MiB", f"{entry['memory_ratio']:.2f}"])
    payload.setdefault("results", []).extend(summary)
    talk = next((e for e in summary if e["method"] == "talklora"), None)
    line = ""
    if talk is not None:
        ok_t, ok_m = talk["time_ratio"] <= TARGET_TIME, talk["memory_ratio"] <= TARGET_MEMORY
        line = (f"TalkLoRA vs PEFT LoRA ({device} {dtype_name}, bench_model.py's comparison): time ratio "
                f"{talk['time_ratio']:.2f} (target <= {TARGET_TIME}: {'met' if ok_t else 'NOT met'}), memory ratio "
                f"{talk['memory_ratio']:.2f} (target <= {TARGET_MEMORY}: {'met' if ok_m else 'NOT met'}), "
                f"{talk['trainable'] / summary[0]['trainable']:.0%} of PEFT's trainable parameters"
                + (" (--quick: a tiny model, the targets are for SmolLM2-135M)" if args.quick else "") + ".\n")
    return rows, line


def main(argv=None) -> int:
    args = parse_args(argv)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)  # must not import CUDA state: imports only
    plan = sc.plans(args.device, args.dtypes)
    if plan is None:
        sc.no_cuda_report(args, TITLE)
        return 0
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        folder, description = sc.resolve_model(args, Path(tmp))
        env = sc.environment(args)
        payload: dict = {"model": description, "batch": args.batch, "length": args.length, "steps": args.steps,
                         "repeats": args.repeats, "variants": args.variants,
                         "rank": sc.QUICK_RANK if args.quick else sc.FULL_RANK}
        rows, footer = [], ""
        for device, dtype_name in plan:
            plan_rows, line = measure_plan(args, context, folder, device, dtype_name, payload)
            rows += plan_rows
            footer += line
    memory = "peak RSS of the child process" if args.device == "cpu" else "peak torch.cuda.max_memory_allocated"
    notes = [f"model: {description}",
             f"batch {args.batch} x {args.length} tokens, AdamW, r = {payload['rank']}, default targets, B non-zero; "
             f"each variant in its own (forked) process, {args.repeats} rounds x {args.steps} timed steps (1 warm-up), "
             "order rotated, medians",
             f"tokens/s = batch x length / median step time (fwd + bwd + AdamW); speed ratio = tokens/s / PEFT LoRA's; "
             f"peak memory = {memory} (max over rounds); memory ratio = peak / PEFT LoRA's",
             "ttlora-moe3 = TT-LoRA MoE stage 2 (3 frozen experts, only the sequence router trains)"]
    table = sc.table_md(["method", "device", "dtype", "trainable params", "step time", "tokens/s", "speed ratio",
                         "peak memory", "memory ratio"], rows)
    sc.emit(args, TITLE, env, notes, table, payload, footer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
