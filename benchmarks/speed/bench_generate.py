"""Generation speed with the KV cache: tokens/s of every adapter method vs the bare base model.

  python benchmarks/speed/bench_generate.py [--model PATH|smollm2-135m-instruct] [--quick] [--repeats 5]
      [--max-new-tokens 32] [--batches 1,8] [--methods lora,...] [--threads 1] [--clock wall|cpu]
      [--device cpu|cuda] [--dtypes fp32,bf16] [--compile] [--out FILE.md]

Variants, all built in this one process from the same weights and measured side by side (interleaved,
order rotated each repeat, one untimed warm-up call each, medians):
  - base: the plain AutoModelForCausalLM of the folder (no adapter code at all);
  - lora, moelora, talklora, ttlora, ttlora-moe3 (TT-LoRA MoE, 3 experts): TalkLoRAForCausalLM.from_base(base,
    AdapterSettings(...)) at r = 32 (8 with --quick) on the architecture's default targets, with the zero-init B
    matrices given small random values so the adapter arithmetic is real (the script checks the logits differ
    from the base's);
  - peft-lora, the peer: peft's LoraConfig at the same rank, alpha and targets as lora, unmerged, B non-zero;
  - for the routed methods (moelora, talklora, ttlora-moe3) with `model.trace_routing()` off and on.
At batch 1 (one prompt) and batch 8 (eight prompts of different lengths, left-padded), greedy, use_cache=True,
exactly --max-new-tokens new tokens (min_new_tokens = max_new_tokens, so an early EOS never shortens a call).
tokens/s = batch x new tokens / wall time of one generate() call (prompt prefill included; with --clock cpu the
thread's CPU time instead, for a shared machine); ratio to base = tokens/s / the base's tokens/s at the same batch
(and dtype). --device cuda measures fp32 and bf16 on the GPU. --compile adds every model compiled (static cache,
torch.compile with inductor), measured in the same rounds, its ratios to the compiled base.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed_common as sc  # noqa: E402

TITLE = "Generation speed (KV cache, greedy): adapters vs the bare base model"


def parse_args(argv=None) -> argparse.Namespace:
    parser = sc.new_parser(__doc__, repeats=5, quick_repeats=3, methods=",".join(sc.METHODS + sc.PEERS), peers=True)
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="new tokens per call (default 32; 8 with --quick)")
    parser.add_argument("--batches", default="1,8", help="batch sizes (comma-separated; each <= 8)")
    parser.add_argument("--clock", default="wall", choices=sc.CLOCKS,
                        help="wall: elapsed time (default); cpu: this thread's CPU time, blind to other processes "
                             "preempting it on a shared machine (CPU, one torch thread)")
    parser.add_argument("--compile", action="store_true",
                        help="also measure every model compiled: generate() with the static cache and torch.compile "
                             "(inductor; a C++ compiler on CPU), ratios to the compiled base")
    args = sc.finish_args(parser, parser.parse_args(argv))
    if args.max_new_tokens is None:
        args.max_new_tokens = 8 if args.quick else 32
    args.batches = [int(b) for b in args.batches.split(",")]
    if any(not 1 <= b <= len(sc.PROMPTS) for b in args.batches):
        parser.error(f"--batches must each be in [1, {len(sc.PROMPTS)}], got {args.batches}")
    if args.clock == "cpu" and (args.device != "cpu" or args.threads != 1):
        parser.error(f"--clock cpu measures the calling thread only: it needs --device cpu and --threads 1, got "
                     f"--device {args.device} --threads {args.threads}; use --clock wall there")
    return args


def prompts_batch(tokenizer, batch: int, device: str):
    """The first `batch` prompts, left-padded (batch 1: no padding)."""
    encoded = tokenizer(sc.PROMPTS[:batch], return_tensors="pt", padding=True)
    return {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}


def compiled_generation() -> dict:
    """generate() keywords that compile its decoding step: the static cache and an inductor CompileConfig, on every
    device (transformers compiles on GPUs only unless told)."""
    from transformers import CompileConfig

    config = CompileConfig(fullgraph=False, backend="inductor", mode="default")
    config._compile_all_devices = True
    return {"cache_implementation": "static", "compile_config": config}


def make_call(model, inputs, new_tokens: int, pad_id: int, trace: bool, checks: dict, key: str,
              compiled: bool = False):
    """One generate() call (optionally inside trace_routing, or compiled); the first call checks the token count."""
    import torch

    extra = compiled_generation() if compiled else {}

    def call():
        context = model.trace_routing() if trace else contextlib.nullcontext()
        with torch.inference_mode(), context as recorded:
            out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                 use_cache=True, pad_token_id=pad_id, num_beams=1, **extra)
        if key not in checks:
            generated = out.shape[1] - inputs["input_ids"].shape[1]
            if generated != new_tokens:
                raise RuntimeError(f"{key}: generated {generated} tokens, expected {new_tokens}")
            checks[key] = {"generated": generated,
                           "trace_steps": len(recorded.steps) if trace else None}
        return out

    return call


def measure_plan(args, folder: Path, tokenizer, device: str, dtype_name: str, payload: dict):
    import torch
    from transformers import AutoModelForCausalLM

    pad_id = tokenizer.pad_token_id
    base = AutoModelForCausalLM.from_pretrained(str(folder), dtype=sc.torch_dtype(dtype_name)).to(device).eval()
    models = {"base": base}
    for name in args.methods:
        models[name] = sc.build_method(folder, name, args.quick, dtype_name, device).eval()
    # The adapters must change the function: compare logits on the batch-8 prompts with the base's.
    probe = prompts_batch(tokenizer, max(args.batches), device)
    with torch.inference_mode():
        reference = base(**probe).logits.float()
        differs = {name: float((m(**probe).logits.float() - reference).abs().max())
                   for name, m in models.items() if name != "base"}
    for name, diff in differs.items():
        if not diff > 0:
            raise RuntimeError(f"{name}: logits equal the base model's; the adapter is not doing any arithmetic")
    checks: dict = {}
    modes = ["eager", "compiled"] if args.compile else ["eager"]
    samples, first_call = {}, {}
    # One batch size at a time: generate() keeps one static cache per model and makes a new one when the batch
    # changes, and a compiled step is guarded on its cache's tensors, so alternating batch sizes would recompile
    # (inside the timed rounds). Ratios compare variants of the same batch, so nothing is lost.
    for batch in args.batches:
        inputs = prompts_batch(tokenizer, batch, device)
        variants = {}
        for mode in modes:
            for name, model in models.items():
                # The trace's cost is an eager question: compiled, only the untraced call is measured.
                traces = [False, True] if name in sc.ROUTED and mode == "eager" else [None]
                for trace in traces:
                    key = f"{name}|{batch}|{'-' if trace is None else ('on' if trace else 'off')}|{mode}"
                    variants[key] = make_call(model, inputs, args.max_new_tokens, pad_id, bool(trace), checks, key,
                                              compiled=mode == "compiled")
        if args.compile:
            first_call.update(compile_each(variants, device))
        compiling = []
        timed = {key: watched(call, key, compiling) for key, call in variants.items()}
        samples.update(sc.interleaved_samples(timed, args.repeats, warmup=1, device=device, clock=args.clock))
        if compiling:
            raise RuntimeError(f"batch {batch}: torch.compile compiled again inside the timed rounds, in "
                               f"{sorted(set(compiling))}, so those rows would time compilation")
    rows, results = [], []
    for key, times in samples.items():
        name, batch, trace, mode = key.split("|")
        batch = int(batch)
        base_times = samples[f"base|{batch}|-|{mode}"]
        tps = batch * args.max_new_tokens / sc.median(times)
        base_tps = batch * args.max_new_tokens / sc.median(base_times)
        paired = [b / t for b, t in zip(base_times, times)]  # per round: this variant vs the base, same round
        results.append({"method": name, "device": device, "dtype": dtype_name, "batch": batch, "mode": mode,
                        "trace": {"-": None, "on": True, "off": False}[trace], "seconds": times,
                        "median_s": sc.median(times), "tokens_per_s": tps, "ratio_to_base": tps / base_tps,
                        "paired_ratios": paired, "first_call_s": first_call.get(key),
                        "max_abs_logit_diff_vs_base": differs.get(name), **checks[key]})
        rows.append([name, device, dtype_name, mode, batch, "—" if trace == "-" else trace, f"{tps:.1f}",
                     f"{tps / base_tps:.2f}", f"{min(paired):.2f}–{max(paired):.2f}"])
    payload.setdefault("results", []).extend(results)
    del models, base
    return rows


def compile_each(variants: dict, device: str, max_passes: int = 4) -> dict:
    """Calls every compiled variant, pass after pass, until a whole pass compiles nothing more (inductor compiles
    here, untimed by the samples), and returns {key: seconds of its first call}. Today one pass is enough; the
    loop guards against a model whose graph breaks (as the TT-LoRA MoE's did, on the cache length): that leaves a
    short entry on the shared forward code, which the other adapted models then match, and they compile once more
    behind it on their next call (tests/modeling/test_generation_stack.py checks that this no longer happens, and
    watched() refuses a timed round that compiles). Lifts dynamo's recompile limit:
    every model and batch size is one more compiled entry of the same forward code, and past the limit (8) dynamo
    silently runs the rest eagerly."""
    import time

    import torch

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    first = {}
    compiled = [key for key in variants if key.endswith("|compiled")]
    for _ in range(max_passes):
        graphs = compiled_graphs()
        for key in compiled:
            sc.synchronize(device)
            start = time.perf_counter()
            variants[key]()
            sc.synchronize(device)
            first.setdefault(key, time.perf_counter() - start)
        if compiled_graphs() == graphs:
            break
    return first


def watched(call, key: str, compiling: list):
    """call, noting `key` in `compiling` whenever dynamo compiles a graph during it (reading a counter: free)."""
    def run():
        graphs = compiled_graphs()
        out = call()
        if compiled_graphs() != graphs:
            compiling.append(key)
        return out

    return run


def compiled_graphs() -> int:
    """How many graphs dynamo has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def main(argv=None) -> int:
    return sc.run_script(parse_args(argv), TITLE, "bench-generate-", measure_all)


def measure_all(args, plan, folder: Path, description: str, tmp: Path) -> int:
    import torch

    tokenizer = sc.left_padded_tokenizer(folder)
    env = sc.environment(args)
    payload: dict = {"model": description, "max_new_tokens": args.max_new_tokens, "batches": args.batches,
                     "repeats": args.repeats, "methods": args.methods, "clock": args.clock, "compile": args.compile,
                     "rank": sc.QUICK_RANK if args.quick else sc.FULL_RANK,
                     "prompt_tokens": {b: prompts_batch(tokenizer, b, "cpu")["attention_mask"].sum(1).tolist()
                                       for b in args.batches}}
    rows = []
    for device, dtype_name in plan:
        torch.manual_seed(0)
        rows += measure_plan(args, folder, tokenizer, device, dtype_name, payload)
    padding = ""
    if len(args.batches) > 1 or args.batches[0] > 1:
        lengths = payload["prompt_tokens"][max(args.batches)]
        padding = f"; batch {max(args.batches)} = prompts of {min(lengths)}-{max(lengths)} tokens, left-padded"
    notes = [f"model: {description}",
             f"greedy, use_cache=True, exactly {args.max_new_tokens} new tokens per call{padding}",
             f"adapters at r = {payload['rank']} on the default targets, B non-zero; "
             f"medians of {args.repeats} interleaved repeats (order rotated, 1 warm-up each)",
             f"tokens/s = batch x new tokens / one generate() call (prefill included; {args.clock} clock); "
             "ratio to base = tokens/s / base tokens/s at the same batch, dtype and mode; per-round range: the "
             "lowest and highest of the ratios taken within one round (the variant beside the base in that "
             "round); trace: trace_routing() off/on",
             "mode: eager (dynamic cache), or compiled (static cache, torch.compile with inductor; the compile "
             "happens in an untimed first call, its seconds in the JSON)"]
    table = sc.table_md(["method", "device", "dtype", "mode", "batch", "trace", "tokens/s", "ratio to base",
                         "per-round range"], rows)
    sc.emit(args, TITLE, env, notes, table, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
