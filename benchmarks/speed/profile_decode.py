"""Where an adapter's added decoding time goes, per op class and per precision: into its small products, or into
the fixed cost of its extra ops (dispatch, views, bookkeeping)?

  python benchmarks/speed/profile_decode.py [--model PATH|smollm2-135m-instruct] [--quick] [--methods lora,talklora]
      [--dtypes fp32,bf16] [--batches 1,8] [--steps 16] [--repeats 5] [--profile-rounds 3]
      [--clock wall|cpu] [--threads 1] [--out FILE.md]

For each dtype and batch, the bare base and each method (built as bench_generate builds them: r = 32, B non-zero)
decode --steps tokens one forward at a time from a prefilled dynamic cache (eval, inference_mode, greedy). Two
measurements, in one process:

- step ms: the time of one decoding step, unprofiled, in interleaved rounds (order rotated; medians of the
  --repeats rounds' per-step means): the real added time, "added ms" = adapted - base, and the ratio base / adapted;
  beside it the quartiles of the per-round paired ratios (base / adapted within one round), how far one round
  strays. --clock cpu times the calling thread's CPU time (time.thread_time) instead of the wall clock: with one
  torch thread every op runs on it, so time other processes take drops out (not their pressure on the caches);
- --profile-rounds torch.profiler passes of --steps steps per variant, interleaved: every aten op's calls and self
  CPU time per step, each op's time the median over the passes. The
  adapted model's extra over the base, per op class:
    products     mm, addmm, bmm, mv, ... and oneDNN's kernels: the arithmetic of the (small) matrices;
    elementwise  everything else that computes (softmax, mul, add, index ops, copies);
    dispatch     ops that move no arithmetic: views, reshapes, transposes, empty tensors, and the wrappers
                 (linear, matmul, einsum) whose own time is argument checking and dispatch.
  The profiler adds a cost to every op it records, so its times run above the unprofiled step; read its split as
  shares of the added time, and the op counts as exact.
- op floor: the unprofiled time of one tiny op (an add of two 8-element tensors), the least any extra op costs.
"""

from __future__ import annotations

import inspect
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed_common as sc  # noqa: E402
from bench_generate import prompts_batch  # noqa: E402

TITLE = "Decoding step profile: where each adapter's added time goes, fp32 and bf16"
CLASSES = ("products", "elementwise", "dispatch")
DISPATCH_OPS = {"linear", "matmul", "einsum", "view", "reshape", "_reshape_alias", "_unsafe_view", "t", "transpose",
                "permute", "expand", "unsqueeze", "squeeze", "as_strided", "slice", "select", "narrow", "detach",
                "alias", "empty", "empty_like", "empty_strided", "resize_", "contiguous", "split", "chunk", "unbind",
                "flatten", "unflatten", "view_as", "expand_as", "lift_fresh", "result_type", "to", "_to_copy",
                "is_nonzero", "item", "_local_scalar_dense", "size", "stride", "dim"}


def op_class(name: str) -> str:
    """'aten::addmm' -> 'products'; see the module docstring."""
    short = name.split("::")[-1]
    if short.endswith(("mm", "mm_", "mv", "mv_")) or "mkldnn" in short or "onednn" in short or short == "dot":
        return "products"
    return "dispatch" if short in DISPATCH_OPS else "elementwise"


def add_step_args(parser) -> None:
    """The arguments of a decoding-step measure, shared with ab_decode.py: --batches, --steps, --clock."""
    parser.add_argument("--batches", default="1,8", help="batch sizes (comma-separated; each <= 8)")
    parser.add_argument("--steps", type=int, default=None, help="decoding steps per measure (default 16; 4 --quick)")
    parser.add_argument("--clock", default="wall", choices=sc.CLOCKS,
                        help="time the steps by the wall clock, or by this thread's CPU time (needs --threads 1)")


def check_step_args(parser, args, why_cpu: str) -> None:
    """Checks and fills in add_step_args' arguments (and --device: cpu only, for the reason `why_cpu`)."""
    if args.clock == "cpu" and args.threads != 1:
        parser.error(f"--clock cpu measures the calling thread only: it needs --threads 1, got --threads "
                     f"{args.threads}; use --clock wall there")
    if args.device != "cpu":
        parser.error(f"--device: {why_cpu}; it runs on cpu only, got --device {args.device}")
    args.steps = args.steps or (4 if args.quick else 16)
    args.batches = [int(b) for b in args.batches.split(",")]
    if args.steps < 1 or any(not 1 <= b <= len(sc.PROMPTS) for b in args.batches):
        parser.error(f"--steps must be >= 1 and --batches each in [1, {len(sc.PROMPTS)}]")


def parse_args(argv=None):
    parser = sc.new_parser(__doc__, repeats=5, quick_repeats=2, methods="lora,moelora,talklora", peers=True)
    add_step_args(parser)
    parser.add_argument("--profile-rounds", type=int, default=None,
                        help="profiled passes per variant, interleaved; each op's time is their median (default 3; 1 "
                             "--quick)")
    args = sc.finish_args(parser, parser.parse_args(argv))
    if args.profile_rounds is None:
        args.profile_rounds = 1 if args.quick else 3
    if args.profile_rounds < 1:
        parser.error(f"--profile-rounds must be at least 1, got {args.profile_rounds}")
    check_step_args(parser, args, "the profile splits CPU time per op")
    if args.dtypes is None:
        args.dtypes = ["fp32", "bf16"]
    return args


def decoder(model, inputs: dict, steps: int, cache_name: str):
    """Two calls: one prefills `inputs`, the other then runs `steps` greedy decoding steps, one token each,
    continuing the cache (passed as `cache_name`: "cache" in newer transformers, "past_key_values" before)."""
    import torch

    state = {}

    def prefill():
        with torch.inference_mode():
            out = model(**inputs, use_cache=True)
        state["cache"] = getattr(out, "cache", None) or out.past_key_values
        state["next"] = out.logits[:, -1:].argmax(-1)
        state["mask"] = inputs["attention_mask"]

    def decode():
        with torch.inference_mode():
            for _ in range(steps):
                state["mask"] = torch.cat([state["mask"], state["mask"].new_ones(state["mask"].shape[0], 1)], 1)
                out = model(input_ids=state["next"], attention_mask=state["mask"], use_cache=True,
                            **{cache_name: state["cache"]})
                state["cache"] = getattr(out, "cache", None) or out.past_key_values
                state["next"] = out.logits[:, -1:].argmax(-1)

    return prefill, decode


def step_seconds(calls: Dict[str, Tuple], repeats: int, steps: int, clock: str = "wall") -> Dict[str, List[float]]:
    """{name: [seconds per decoding step, one per round]}, rounds interleaved, order rotated."""
    now = time.thread_time if clock == "cpu" else time.perf_counter
    names = list(calls)
    per_step: Dict[str, List[float]] = defaultdict(list)
    for round_index in range(repeats + 1):  # round 0 warms up
        for name in sc.rotated(names, round_index):
            prefill, decode = calls[name]
            prefill()
            start = now()
            decode()
            if round_index:
                per_step[name].append((now() - start) / steps)
    return dict(per_step)


def paired_quartiles(base: List[float], variant: List[float]) -> Tuple[float, float]:
    """The lower and upper quartile of the per-round ratios base / variant (each round's own pair)."""
    ratios = sorted(b / v for b, v in zip(base, variant))
    if len(ratios) < 4:
        return ratios[0], ratios[-1]
    quartiles = statistics.quantiles(ratios, n=4)
    return quartiles[0], quartiles[2]


def op_profile(prefill, decode, steps: int) -> Dict[str, Dict[str, float]]:
    """{aten op: {"calls": per step, "us": self CPU microseconds per step}} over one profiled decode."""
    from torch.profiler import ProfilerActivity, profile

    prefill()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        decode()
    ops = {}
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            ops[event.key] = {"calls": event.count / steps, "us": event.self_cpu_time_total / steps}
    return ops


def median_profiles(calls: Dict[str, Tuple], rounds: int, steps: int) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{name: op_profile's dict} from `rounds` profiled passes per variant, interleaved (order rotated), each op's
    time the median over the passes (0 in a pass without it): one pass strays by several ms a step here, as much
    as an adapter adds."""
    passes: Dict[str, List[dict]] = defaultdict(list)
    for round_index in range(rounds):
        for name in sc.rotated(list(calls), round_index):
            passes[name].append(op_profile(*calls[name], steps))
    merged = {}
    for name, profiles in passes.items():
        ops = {op for profile in profiles for op in profile}
        merged[name] = {op: {"calls": max(p.get(op, {"calls": 0.0})["calls"] for p in profiles),
                             "us": statistics.median(p.get(op, {"us": 0.0})["us"] for p in profiles)} for op in ops}
    return merged


def by_class(ops: Dict[str, Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    totals = {c: {"calls": 0.0, "us": 0.0} for c in CLASSES}
    for name, figures in ops.items():
        for key in ("calls", "us"):
            totals[op_class(name)][key] += figures[key]
    return totals


def op_floor_us(repeats: int = 2000) -> float:
    """Unprofiled microseconds of one tiny op (an add of two 8-element tensors): the least an extra op costs."""
    import torch

    a, b = torch.ones(8), torch.ones(8)
    times = []
    with torch.inference_mode():
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(repeats):
                torch.add(a, b)
            times.append((time.perf_counter() - start) / repeats * 1e6)
    return statistics.median(times)


def row(name: str, dtype_name: str, batch: int, seconds: Dict[str, float], classes: dict, extra: dict,
        added_ms: float, spread: Tuple[float, float]) -> list:
    """One table row; the extra-over-base columns are dashes for the base itself, and the shares are dashes where a
    class's extra time came out negative (the profiled difference fell within the profiler's own scatter)."""
    step, base = seconds[name] * 1e3, seconds["base"] * 1e3
    cells = [name, dtype_name, batch, f"{step:.2f}", f"{added_ms:+.2f}", f"{base / step:.2f}",
             f"{spread[0]:.2f}–{spread[1]:.2f}", f"{classes['products']['us'] / 1e3:.2f}"]
    added_profiled = sum(e["us"] for e in extra.values())
    if name == "base":
        return cells[:4] + ["–"] + cells[5:6] + ["–"] + cells[7:] + ["–"] * 6
    if added_profiled <= 0:
        return cells + [f"{sum(e['calls'] for e in extra.values()):.0f}"] + ["–"] * 5
    shares = [f"{extra[c]['us'] / added_profiled:.0%}" if all(extra[k]["us"] >= 0 for k in CLASSES) else "–"
              for c in CLASSES]
    return cells + [f"{sum(e['calls'] for e in extra.values()):.0f}", f"{extra['products']['us'] / 1e3:+.2f}",
                    f"{(extra['elementwise']['us'] + extra['dispatch']['us']) / 1e3:+.2f}"] + shares


def measure(args, plan, folder: Path, description: str, tmp: Path) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = sc.left_padded_tokenizer(folder)
    env = sc.environment(args)
    floor = op_floor_us()
    rows, results = [], []
    for device, dtype_name in plan:
        torch.manual_seed(0)
        models = {"base": AutoModelForCausalLM.from_pretrained(str(folder), dtype=sc.torch_dtype(dtype_name)).eval()}
        cache_name = "cache" if "cache" in inspect.signature(models["base"].forward).parameters else "past_key_values"
        for name in args.methods:
            models[name] = sc.build_method(folder, name, args.quick, dtype_name, device).eval()
        for batch in args.batches:
            inputs = prompts_batch(tokenizer, batch, device)
            calls = {name: decoder(model, inputs, args.steps, cache_name) for name, model in models.items()}
            rounds = step_seconds(calls, args.repeats, args.steps, args.clock)
            seconds = {name: statistics.median(values) for name, values in rounds.items()}
            profiles = median_profiles(calls, args.profile_rounds, args.steps)
            base_classes = by_class(profiles["base"])
            for name in models:
                classes = by_class(profiles[name])
                extra = {c: {k: classes[c][k] - base_classes[c][k] for k in ("calls", "us")} for c in CLASSES}
                added_ms = (seconds[name] - seconds["base"]) * 1e3
                spread = paired_quartiles(rounds["base"], rounds[name])
                results.append({"method": name, "dtype": dtype_name, "batch": batch, "step_ms": seconds[name] * 1e3,
                                "ratio_to_base": seconds["base"] / seconds[name], "added_ms": added_ms,
                                "paired_ratio_quartiles": spread, "round_step_ms": [x * 1e3 for x in rounds[name]],
                                "classes": classes, "extra_over_base": extra, "ops": profiles[name]})
                rows.append(row(name, dtype_name, batch, seconds, classes, extra, added_ms, spread))
        del models
    notes = [f"model: {description}; adapters at r = {sc.QUICK_RANK if args.quick else sc.FULL_RANK} on the default "
             "targets, B non-zero",
             f"{args.steps} decoding steps from a prefilled dynamic cache per measure; step ms: medians of "
             f"{args.repeats} interleaved unprofiled rounds ({args.clock} clock), paired quartiles: of the per-round "
             f"ratios base / adapted; the op columns: each op's median over {args.profile_rounds} interleaved "
             "torch.profiler passes",
             f"op floor (one unprofiled add of two 8-element tensors): {floor:.2f} µs",
             "products ms: self CPU time of the matrix products per step (profiled); extra: the adapted model's "
             "figure minus the base's; shares: of the adapted model's extra profiled time"]
    table = sc.table_md(["method", "dtype", "batch", "step ms", "added ms", "ratio to base", "paired quartiles",
                         "products ms",
                         "extra ops / step", "extra products ms", "extra other ms", "share: products",
                         "share: elementwise", "share: dispatch"], rows)
    sc.emit(args, TITLE, env, notes, table, {"model": description, "steps": args.steps, "repeats": args.repeats,
                                              "clock": args.clock,
                                              "op_floor_us": floor, "results": results})
    return 0


def main(argv=None) -> int:
    return sc.run_script(parse_args(argv), TITLE, "profile-decode-", measure)


if __name__ == "__main__":
    raise SystemExit(main())
