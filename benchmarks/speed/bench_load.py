"""Loading speed from the Hub: a TalkLoRA model by repo id (trust_remote_code) vs the plain base model.

  python benchmarks/speed/bench_load.py [--model PATH|smollm2-135m-instruct] [--quick] [--repeats 5]
      [--methods talklora] [--threads 1] [--device cpu|cuda] [--no-xet] [--out FILE.md]

Starts the embedded Hub (talklora_hub.localhub.local.LocalHub) in a temporary folder, pushes (push_folder)
  - user/bench-base: the base model re-saved by transformers (a plain LlamaForCausalLM repo), and
  - user/bench-<method>: TalkLoRAForCausalLM.from_base(base, AdapterSettings(method)).save_pretrained(...),
    B non-zero (the full model: base weights + adapter + the remote-code bundle);
then times `AutoModelForCausalLM.from_pretrained(repo, trust_remote_code=True)` in a fresh subprocess per load:
  - cold: a fresh, empty HF_HOME (hub cache, Xet cache and the trust_remote_code modules cache), so the
    download and the copy of the remote code count;
  - warm: an HF_HOME that already holds the repo (the first cold load of that repo filled it).
The loads are interleaved (the order rotates each repeat) and medians are reported. Columns: from_pretrained s
= the from_pretrained call alone, measured inside the child (imports excluded; with --device cuda also the
.to("cuda")); process s = the child's whole wall time (interpreter start, imports of torch and transformers,
load); ratio to base = the method's time / the plain base's, same cache state.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed_common as sc  # noqa: E402

TITLE = "Loading from the Hub: TalkLoRA by repo id (trust_remote_code) vs the plain base model"
MODES = ("cold", "warm")


def parse_args(argv=None) -> argparse.Namespace:
    parser = sc.new_parser(__doc__, repeats=5, quick_repeats=1, methods="talklora")  # the methods to push and load
    parser.add_argument("--no-xet", action="store_true", help="classic git-lfs transfers instead of Xet")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    return sc.finish_args(parser, parser.parse_args(argv))


# ----------------------------------------------------------------------------------------- child
def run_child(args: argparse.Namespace) -> dict:
    """One load in this (fresh) interpreter: import time, then the from_pretrained call alone."""
    started = time.perf_counter()
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    imported = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.child, trust_remote_code=True, dtype=sc.torch_dtype(args.dtype))
    if args.device == "cuda":
        model = model.to("cuda")
        torch.cuda.synchronize()
    loaded = time.perf_counter()
    return {"repo": args.child, "class": type(model).__name__, "params": sum(p.numel() for p in model.parameters()),
            "import_s": imported - started, "load_s": loaded - imported}


# ----------------------------------------------------------------------------------------- parent
def child_env(hub, home: Path, xet: bool) -> dict:
    """The environment of one load: this machine's, minus every Hugging Face setting, plus the hub's endpoint
    and token and caches under `home` (so "cold" really is empty, whatever the caller had set)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(hub.env(xet=xet))
    env.update(HF_HOME=str(home), HF_HUB_CACHE=str(home / "hub"), HF_MODULES_CACHE=str(home / "modules"),
               HF_XET_CACHE=str(home / "xet"), HF_HUB_DISABLE_PROGRESS_BARS="1", TRANSFORMERS_VERBOSITY="error")
    return env


def timed_load(args, hub, repo: str, home: Path, device: str, dtype_name: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", repo, "--threads", str(args.threads),
           "--device", device, "--dtype", dtype_name]
    started = time.perf_counter()
    out = sc.run_json_child(cmd, env=child_env(hub, home, not args.no_xet), timeout=1800)
    out["process_s"] = time.perf_counter() - started
    return out


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2 ** 20


def prepare_repos(args, folder: Path, work: Path) -> dict:
    """Saves the plain base and each method's model; returns {name: folder}."""
    from transformers import AutoModelForCausalLM

    folders = {"base": work / "repos" / "base"}
    AutoModelForCausalLM.from_pretrained(str(folder)).save_pretrained(folders["base"])
    for name in args.methods:
        folders[name] = work / "repos" / name
        sc.build_method(folder, name, args.quick).save_pretrained(folders[name])
    return folders


def measure_plan(args, hub, repos: dict, work: Path, device: str, dtype_name: str, payload: dict) -> list:
    names = list(repos)
    warm_home = {name: work / "homes" / f"warm-{name}-{device}-{dtype_name}" for name in names}
    loads = {(name, mode): [] for mode in MODES for name in names}
    order = [(name, "cold") for name in names] + [(name, "warm") for name in names]
    fresh = 0
    for round_index in range(args.repeats):
        for name, mode in sc.rotated(order, round_index):
            first = not warm_home[name].exists()
            if mode == "cold" and not first:
                fresh += 1
                home = work / "homes" / f"cold-{fresh}"
            else:
                home = warm_home[name]  # round 0: this cold load fills the warm cache
                if mode == "warm" and first:
                    raise AssertionError("a warm load ran before its cold load")  # the order forbids it
            out = timed_load(args, hub, repos[name], home, device, dtype_name)
            loads[(name, mode)].append(out)
            if home != warm_home[name]:
                shutil.rmtree(home, ignore_errors=True)  # keep the disk small (SmolLM2 is 0.5 GB a copy)
    rows, results = [], []
    for mode in MODES:
        base_load = sc.median([o["load_s"] for o in loads[("base", mode)]])
        base_proc = sc.median([o["process_s"] for o in loads[("base", mode)]])
        for name in names:
            runs = loads[(name, mode)]
            load = sc.median([o["load_s"] for o in runs])
            proc = sc.median([o["process_s"] for o in runs])
            results.append({"method": name, "repo": repos[name], "device": device, "dtype": dtype_name, "cache": mode,
                            "median_load_s": load, "ratio_to_base": load / base_load, "median_process_s": proc,
                            "process_ratio_to_base": proc / base_proc, "class": runs[0]["class"], "runs": runs})
            rows.append([name, runs[0]["class"], device, dtype_name, mode, f"{load:.3f}", f"{load / base_load:.2f}",
                         f"{proc:.2f}", f"{proc / base_proc:.2f}"])
    payload.setdefault("results", []).extend(results)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args)))
        return 0
    plan = sc.begin_run(args, TITLE)
    if plan is None:
        return 0
    from talklora_hub.localhub.local import LocalHub
    from talklora_hub.publish.push import push_folder

    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        work = Path(tmp)
        folder, description = sc.resolve_model(args, work)
        env = sc.environment(args)
        folders = prepare_repos(args, folder, work)
        payload: dict = {"model": description, "repeats": args.repeats, "methods": args.methods,
                         "xet": not args.no_xet, "rank": sc.QUICK_RANK if args.quick else sc.FULL_RANK,
                         "repo_mib": {name: folder_mib(path) for name, path in folders.items()}}
        with LocalHub(root=work / "hub") as hub:
            api = hub.api()
            repos = {}
            for name, path in folders.items():
                repos[name] = f"{hub.user}/bench-{name}"
                push_folder(path, repos[name], api=api)
            rows = []
            for device, dtype_name in plan:
                rows += measure_plan(args, hub, repos, work, device, dtype_name, payload)
    sizes = ", ".join(f"{name} {mib:,.1f} MiB" for name, mib in payload["repo_mib"].items())
    notes = [f"model: {description}; repos: {sizes}; embedded Hub on 127.0.0.1, "
             f"{'Xet' if payload['xet'] else 'git-lfs'} transfers",
             "each load: a fresh subprocess running AutoModelForCausalLM.from_pretrained(repo, trust_remote_code=True); "
             "cold = empty HF_HOME (download + remote-code copy count), "
             "warm = the repo already cached",
             f"medians of {args.repeats} interleaved repeats (order rotated); from_pretrained s = the call alone, "
             "process s = the whole child (interpreter + imports + load); ratio to base = time / the plain base's"]
    table = sc.table_md(["method", "class", "device", "dtype", "cache", "from_pretrained s", "ratio to base",
                         "process s", "process ratio"], rows)
    sc.emit(args, TITLE, env, notes, table, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
