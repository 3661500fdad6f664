"""What one adapted layer's call costs while decoding, split into the base's product, the adapter's fast path and
the Python around it.

  python benchmarks/speed/layer_call.py [--model PATH|smollm2-135m-instruct] [--quick] [--methods lora,talklora]
      [--calls 4000] [--repeats 7] [--threads 1] [--out FILE.md]

For each method (built as bench_generate builds it: r = 32, B non-zero) one adapted layer is taken, the one with
the widest output (SmolLM2: up_proj, 576 -> 1536), and called on one token x (1, 1, D_in) under
torch.inference_mode() after a model forward (which sets the per-forward state a TT-LoRA MoE layer reads). Each
timing is the best of --repeats loops of --calls calls (interleaved across the four timings), so the weights are
hot in cache: this isolates the per-call cost, not the memory traffic of a whole decoding step (profile_decode.py
measures that). Columns, in µs a call:

  base linear      F.linear(x, W0, b): what the bare base pays for this projection (a plain nn.Linear module
                   costs the same within noise)
  layer call       layer(x): base plus adapter, the module call included
  added            layer call - base linear
  fast path        layer.infer_into(x, out): the adapter's whole inferring path into a reused output
  update           layer.apply_plan_(plan, flat, out, lead): the method's own update from its inference plan, without
                   infer_into's checks
  checks           fast path - update: infer_into's dtype, layout and autocast checks, its reshapes and the check
                   of the cached plan against the parameters' versions
  rest             added - fast path: forward's own work beyond the two (the module call, base_forward's method call
                   and forward's conditions; a plain nn.Linear module costs about 0.4 µs over F.linear). Calling
                   F.linear and then infer_into by hand lands within a few µs of the layer call, so this is not
                   the output being freshly allocated; it varies by ±5 µs from run to run here
  aten ops         the aten ops one layer call runs beyond the base linear's, from torch.profiler
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed_common as sc  # noqa: E402

TITLE = "One adapted layer's call while decoding: base product, adapter fast path and the Python around it"


def parse_args(argv=None):
    parser = sc.new_parser(__doc__, repeats=7, quick_repeats=2, methods="lora,moelora,talklora,ttlora,ttlora-moe3")
    parser.add_argument("--calls", type=int, default=None, help="calls per timed loop (default 4000; 200 --quick)")
    args = sc.finish_args(parser, parser.parse_args(argv))
    if args.device != "cpu":
        parser.error(f"--device: layer_call.py times CPU calls one by one, got --device {args.device}; use cpu")
    if args.calls is None:
        args.calls = 200 if args.quick else 4000
    if args.calls < 1:
        parser.error(f"--calls must be at least 1, got {args.calls}")
    return args


def best_us(variants: Dict[str, Callable[[], object]], calls: int, repeats: int) -> Dict[str, float]:
    """{name: the fastest of `repeats` loops of `calls` calls, in µs a call}: the least disturbed by other processes.
    The loops are interleaved round by round (order rotated), so a disturbance that lasts a while spoils one loop of
    each variant rather than every loop of one."""
    times: Dict[str, List[float]] = {name: [] for name in variants}
    for round_index in range(repeats):
        for name in sc.rotated(list(variants), round_index):
            call = variants[name]
            start = time.perf_counter()
            for _ in range(calls):
                call()
            times[name].append((time.perf_counter() - start) / calls * 1e6)
    return {name: min(values) for name, values in times.items()}


def aten_ops(call: Callable[[], object], calls: int = 50) -> float:
    """aten ops one call runs, counted by torch.profiler over `calls` calls."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            call()
    return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::")) / calls


def widest_layer(model):
    from talklora_hub.modeling.adapter_base import AdaptedLinear

    layers = [m for m in model.modules() if isinstance(m, AdaptedLinear)]
    return max(layers, key=lambda layer: layer.out_features)


def measure_method(folder: Path, name: str, args) -> Dict[str, float]:
    import torch
    import torch.nn.functional as F

    model = sc.build_method(folder, name, args.quick).eval()
    layer = widest_layer(model)
    x = torch.randn(1, 1, layer.in_features)
    flat = x.reshape(-1, layer.in_features)
    with torch.inference_mode():
        model(torch.tensor([[1, 2, 3]]))
        out = torch.zeros(1, 1, layer.out_features)
        plan = layer.inference_plan(torch.float32)
        calls = {"base linear": lambda: F.linear(x, layer.weight, layer.bias),
                 "layer call": lambda: layer(x),
                 "fast path": lambda: layer.infer_into(x, out),
                 "update": lambda: layer.apply_plan_(plan, flat, out.view(1, -1), flat.shape[:-1])}
        if not layer.infer_into(x, out):
            raise RuntimeError(f"{name}: the layer took the general path, not the fast path; nothing to split")
        for call in calls.values():  # warm up
            for _ in range(20):
                call()
        us = best_us(calls, args.calls, args.repeats)
        ops = aten_ops(calls["layer call"]) - aten_ops(calls["base linear"])
    us["added"] = us["layer call"] - us["base linear"]
    us["checks"] = us["fast path"] - us["update"]
    us["rest"] = us["added"] - us["fast path"]
    return {**us, "aten ops": ops, "layer": layer.module_name, "in": layer.in_features, "out": layer.out_features}


def measure(args, plan, folder: Path, description: str, tmp: Path) -> int:
    env = sc.environment(args)
    results: List[Dict[str, object]] = []
    rows = []
    for name in args.methods:
        figures = measure_method(folder, name, args)
        results.append({"method": name, **figures})
        rows.append([name, f"{figures['layer']} ({figures['in']} -> {figures['out']})"]
                    + [f"{figures[key]:.1f}" for key in ("base linear", "layer call", "added", "fast path", "update",
                                                         "checks", "rest")]
                    + [f"{figures['aten ops']:.0f}"])
    notes = [f"model: {description}; adapters at r = {sc.QUICK_RANK if args.quick else sc.FULL_RANK} on the default "
             "targets, B non-zero; fp32, one token (1, 1, D_in), torch.inference_mode()",
             f"µs a call: the best of {args.repeats} loops of {args.calls} calls (weights hot in cache); added = "
             "layer call - base linear; checks = fast path - update; rest = added - fast path; aten ops: beyond "
             "the base linear's, per call"]
    table = sc.table_md(["method", "layer", "base linear", "layer call", "added", "fast path", "update", "checks",
                         "rest", "aten ops"], rows)
    sc.emit(args, TITLE, env, notes, table, {"model": description, "calls": args.calls, "repeats": args.repeats,
                                              "results": results})
    return 0


def main(argv=None) -> int:
    return sc.run_script(parse_args(argv), TITLE, "layer-call-", measure)


if __name__ == "__main__":
    raise SystemExit(main())
