"""Memory of a quantized base: TalkLoRA on an fp32, a bitsandbytes 8-bit and a 4-bit (NF4) base, side by side.

  python benchmarks/speed/bench_quantized.py [--model PATH|smollm2-135m-instruct] [--quick] [--repeats 1]
      [--method talklora] [--threads 1] [--out FILE.md]

Each base precision runs in a fresh interpreter (peak RSS is per process): load the base, attach the adapter
(r = 16, default targets), three training steps (AdamW, batch 4 x 64 tokens), then generate 16 tokens greedily
in eval mode. Reported per precision: the base's weight bytes as stored in memory, the adapter's trainable
parameters, peak RSS after loading, after training and after generating (ru_maxrss: the process's high-water
mark, interpreter and libraries included) and the RSS at the end (what the process holds then), and a training step's and a generated token's time as a ratio to
the fp32 row measured in the same run (the children run one after the other, order rotated per repeat).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed_common as sc  # noqa: E402

TITLE = "Quantized bases: memory and step time of TalkLoRA on an fp32, 8-bit and 4-bit base"
PRECISIONS = ("fp32", "int8", "nf4")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sc.add_common_args(parser, repeats=1, quick_repeats=1)
    parser.add_argument("--method", default="talklora", help="the adapter method (from " + ",".join(sc.METHODS) + ")")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    return sc.finish_args(parser, parser.parse_args(argv))


def load_base(folder: str, precision: str):
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if precision == "fp32":
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    quant = (dict(load_in_8bit=True) if precision == "int8" else
             dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32))
    return AutoModelForCausalLM.from_pretrained(folder, quantization_config=BitsAndBytesConfig(**quant), device_map="cpu")


def quantizable_quick_model(folder: Path) -> None:
    """bitsandbytes' CPU 4-bit kernel packs weights in blocks of 32 outputs and 64 inputs; the quick Llama's MLP
    (96 wide) is neither, so --quick re-saves it 128 wide (real models' projections are multiples of both)."""
    from transformers import AutoConfig, LlamaForCausalLM

    config = AutoConfig.from_pretrained(folder)
    config.intermediate_size = 128
    LlamaForCausalLM(config).save_pretrained(folder)


def run_child(args: argparse.Namespace) -> dict:
    """One precision in this fresh interpreter: load, attach, train three steps, generate 16 tokens."""
    import torch

    from talklora_hub import AdapterSettings, TalkLoRAForCausalLM

    sc.quiet_transformers()
    torch.set_num_threads(args.threads)
    base = load_base(args.folder, args.child)
    weight_bytes = sum(t.numel() * t.element_size() for t in list(base.parameters()) + list(base.buffers()))
    loaded = sc.peak_rss_mib()
    model = TalkLoRAForCausalLM.from_base(base, AdapterSettings(method=args.method, r=16))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ids = torch.randint(3, min(1000, base.config.vocab_size), (4, 64), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    steps = []
    for _ in range(3):
        started = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        steps.append(time.perf_counter() - started)
    trained = sc.peak_rss_mib()
    model.eval()
    with torch.no_grad():
        model.generate(ids[:1, :8], max_new_tokens=2, do_sample=False)  # warm-up (4-bit repacks its weights here)
        started = time.perf_counter()
        model.generate(ids[:1, :8], max_new_tokens=16, min_new_tokens=16, do_sample=False)
        per_token = (time.perf_counter() - started) / 16
    return {"precision": args.child, "weight_mib": weight_bytes / 2**20, "trainable": trainable,
            "rss_loaded_mib": loaded, "rss_trained_mib": trained, "rss_generated_mib": sc.peak_rss_mib(),
            "rss_end_mib": sc.rss_mib(),
            "step_s": sc.median(steps[1:]), "token_s": per_token}


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args)))
        return
    import torch

    torch.set_num_threads(args.threads)  # the children's setting, so the report's header states it
    with tempfile.TemporaryDirectory() as tmp:
        folder, label = sc.resolve_model(args, Path(tmp))
        if args.quick:
            quantizable_quick_model(folder)
        runs = {p: [] for p in PRECISIONS}
        for round_index in range(args.repeats):
            for precision in sc.rotated(PRECISIONS, round_index):
                cmd = [sys.executable, __file__, "--child", precision, "--folder", str(folder), "--method", args.method,
                       "--threads", str(args.threads)]
                runs[precision].append(sc.run_json_child(cmd))
    rows, payload = [], {}
    fp32_step = sc.median([r["step_s"] for r in runs["fp32"]])
    fp32_token = sc.median([r["token_s"] for r in runs["fp32"]])
    for precision in PRECISIONS:
        got = runs[precision]
        mid = {k: sc.median([r[k] for r in got]) for k in got[0] if k != "precision"}
        payload[precision] = got
        rows.append([precision, f"{mid['weight_mib']:.0f}", f"{int(mid['trainable']):,}", f"{mid['rss_loaded_mib']:.0f}",
                     f"{mid['rss_trained_mib']:.0f}", f"{mid['rss_generated_mib']:.0f}", f"{mid['rss_end_mib']:.0f}",
                     f"{mid['step_s'] / fp32_step:.2f}", f"{mid['token_s'] / fp32_token:.2f}"])
    notes = [f"model: {label}; adapter: {args.method}, r = 16, default targets; bitsandbytes CPU backend",
             "peak RSS = the child's ru_maxrss after each stage (MiB); time ratios = this precision's median / fp32's "
             f"median in the same run ({args.repeats} repeat(s), order rotated); lower is better for all columns"]
    table = sc.table_md(["base", "base weights MiB", "trainable", "peak RSS loaded", "peak RSS trained",
                         "peak RSS generated", "RSS at the end", "train step time vs fp32", "token time vs fp32"], rows)
    sc.emit(args, TITLE, sc.environment(args), notes, table, {"runs": payload})


if __name__ == "__main__":
    main()
