"""What a change to the bundle gave: the decoding step of the working tree's modeling files against the same files
at another git revision, side by side in one process.

  python benchmarks/speed/ab_decode.py --against REV [--model PATH|smollm2-135m-instruct] [--quick]
      [--methods lora,talklora] [--dtypes fp32,bf16] [--batches 1,8] [--steps 16] [--repeats 12]
      [--clock wall|cpu] [--threads 1] [--out FILE.md]

The bundle (talklora_hub/modeling/*.py) as it was at REV is written (git show) into a temporary package and
imported beside the working tree's. For each method both build the same model (r = 32, B non-zero; the working
tree's adapter weights loaded into REV's), their logits on the prompts must agree up to float rounding (a speed
comparison between two different functions means nothing: such a row is not timed, and the script exits 1), and
the bare base, REV's model and the working tree's decode --steps tokens
from a prefilled cache, interleaved round by round (profile_decode's decoder and rounds). Comparing two runs of
profile_decode instead would set ratios from two states of a shared machine against each other: here both sides
see the same one. Columns: step ms (medians over the rounds), each model's ratio to the base, and the gain
(REV's step / the working tree's) with the quartiles of its per-round values.
"""

from __future__ import annotations

import importlib
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed_common as sc  # noqa: E402
from bench_generate import prompts_batch  # noqa: E402
from profile_decode import add_step_args, check_step_args, decoder, paired_quartiles, step_seconds  # noqa: E402

TITLE = "A change to the bundle, side by side: the decoding step at another revision against the working tree"
REPO = Path(__file__).resolve().parents[2]
BUNDLE = "talklora_hub/modeling"


def parse_args(argv=None):
    parser = sc.new_parser(__doc__, repeats=12, quick_repeats=2, methods="lora,moelora,talklora,ttlora,ttlora-moe3")
    parser.add_argument("--against", required=True, help="the git revision whose bundle is the reference (e.g. HEAD~1)")
    add_step_args(parser)
    args = sc.finish_args(parser, parser.parse_args(argv))
    check_step_args(parser, args, "ab_decode.py times CPU decoding steps")
    args.dtypes = args.dtypes or ["fp32"]
    return args


def git(*command: str) -> str:
    done = subprocess.run(["git", *command], cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"--against: `git {' '.join(command)}` failed: {done.stderr.strip()} (fix: name a revision "
                         "this clone has, e.g. HEAD~1 or a commit hash)")
    return done.stdout


def bundle_at(revision: str, tmp: Path):
    """The bundle as it was at `revision`, imported as a package of its own (its files only import each other by
    single-dot relative imports, so any package name works)."""
    commit = git("rev-parse", "--verify", f"{revision}^{{commit}}").strip()
    name = f"bundle_at_{commit[:12]}"
    folder = tmp / "bundles" / name
    folder.mkdir(parents=True)
    for path in git("ls-tree", "--name-only", commit, f"{BUNDLE}/").split():
        if path.endswith(".py"):
            (folder / Path(path).name).write_text(git("show", f"{commit}:{path}"))
    sys.path.insert(0, str(folder.parent))
    return importlib.import_module(name), commit


def build_pair(package, folder: Path, method: str, quick: bool, dtype_name: str):
    """(REV's model, the working tree's model) of `method`, the same base weights and adapter weights."""
    from transformers import AutoModelForCausalLM

    mine = sc.build_method(folder, method, quick, dtype_name).eval()
    settings = package.AdapterSettings(r=sc.QUICK_RANK if quick else sc.FULL_RANK, **sc.METHOD_SETTINGS[method])
    base = AutoModelForCausalLM.from_pretrained(str(folder), dtype=sc.torch_dtype(dtype_name))
    theirs = package.TalkLoRAForCausalLM.from_base(base, settings)
    theirs.load_state_dict(mine.state_dict())
    return theirs.eval(), mine


def logits_gaps(base, against, mine, inputs: dict) -> Tuple[float, float]:
    """(gap, effect): max |difference| between the two bundles' logits on the prompts, and between the working tree's
    and the bare base's (the adapter's own effect), each over the logits' largest value."""
    import torch

    with torch.inference_mode():
        bare, a, b = (model(**inputs).logits.float() for model in (base, against, mine))
    scale = max(float(b.abs().max()), 1e-6)
    return float((a - b).abs().max()) / scale, float((b - bare).abs().max()) / scale


def same_function(gap: float, effect: float, dtype_name: str) -> bool:
    """Whether two bundles compute one function up to float rounding: in fp32 their logits agree to 1e-3 of their
    scale; in bf16 every layer rounds its output to 3 digits, and a rounding that flips in one layer grows through
    the next (two orders of summation give 1e-2 of the scale on SmolLM2), so there the gap must stay under a quarter
    of the adapter's own effect (a dropped or wrong update moves the logits by about the effect)."""
    return gap <= 1e-3 or (dtype_name == "bf16" and gap <= 0.25 * effect)


def measure(args, plan, folder: Path, description: str, tmp: Path) -> int:
    import inspect

    import torch
    from transformers import AutoModelForCausalLM

    package, commit = bundle_at(args.against, tmp)
    tokenizer = sc.left_padded_tokenizer(folder)
    env = sc.environment(args)
    rows, results, refused = [], [], []
    notes = [f"model: {description}; adapters at r = {sc.QUICK_RANK if args.quick else sc.FULL_RANK} on the default "
             "targets, B non-zero",
             f"against: the bundle at {args.against} (git {commit[:12]}); working tree: git {env['git_commit']}",
             f"{args.steps} decoding steps from a prefilled dynamic cache per measure, {args.repeats} interleaved "
             f"rounds ({args.clock} clock); ratios: per-round base / model, their median; gain: per-round against / working "
             "tree (above 1: the working tree is faster), its median and quartiles; logits gap: max |difference| of "
             "the two bundles' logits on the prompts, adapter effect: of the working tree's and the bare base's, "
             "both over the logits' largest value (a row whose gap says the functions differ is not timed)"]
    header = ["method", "dtype", "batch", "base ms", "against ms", "working tree ms", "ratio then", "ratio now", "gain",
              "gain quartiles", "logits gap", "adapter effect"]

    def write() -> None:  # after every row: a long run keeps what it measured
        sc.emit(args, TITLE, env, notes, sc.table_md(header, rows),
                {"model": description, "against": args.against, "against_commit": commit, "steps": args.steps,
                 "repeats": args.repeats, "clock": args.clock, "results": results})

    for _, dtype_name in plan:
        base = AutoModelForCausalLM.from_pretrained(str(folder), dtype=sc.torch_dtype(dtype_name)).eval()
        cache_name = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        for method in args.methods:
            torch.manual_seed(0)
            theirs, mine = build_pair(package, folder, method, args.quick, dtype_name)
            models = {"base": base, "against": theirs, "working tree": mine}
            for batch in args.batches:
                inputs = prompts_batch(tokenizer, batch, "cpu")
                gap, effect = logits_gaps(base, theirs, mine, inputs)
                figures = {"method": method, "dtype": dtype_name, "batch": batch, "logits_gap": gap,
                           "adapter_effect": effect}
                if not same_function(gap, effect, dtype_name):
                    refused.append(f"{method} {dtype_name} batch {batch}")
                    results.append({**figures, "refused": "the two bundles compute different functions"})
                    rows.append([method, dtype_name, batch] + ["–"] * 7 + [f"{gap:.1e}", f"{effect:.1e}"])
                    write()
                    continue
                calls = {name: decoder(model, inputs, args.steps, cache_name) for name, model in models.items()}
                rounds = step_seconds(calls, args.repeats, args.steps, args.clock)
                ms = {name: statistics.median(values) * 1e3 for name, values in rounds.items()}
                gain = statistics.median(a / b for a, b in zip(rounds["against"], rounds["working tree"]))
                low, high = paired_quartiles(rounds["against"], rounds["working tree"])
                ratio_then = statistics.median(b / a for b, a in zip(rounds["base"], rounds["against"]))
                ratio_now = statistics.median(b / m for b, m in zip(rounds["base"], rounds["working tree"]))
                results.append({**figures, "step_ms": ms, "ratio_to_base": {"against": ratio_then,
                                                                            "working tree": ratio_now},
                                "gain": gain, "gain_quartiles": [low, high]})
                rows.append([method, dtype_name, batch, f"{ms['base']:.2f}", f"{ms['against']:.2f}",
                             f"{ms['working tree']:.2f}", f"{ratio_then:.3f}", f"{ratio_now:.3f}", f"{gain:.3f}",
                             f"{low:.3f}–{high:.3f}", f"{gap:.1e}", f"{effect:.1e}"])
                write()
                print(f"{method} {dtype_name} batch {batch}: ratio {ratio_then:.3f} -> {ratio_now:.3f}, gain "
                      f"{gain:.3f} [{low:.3f}-{high:.3f}]", file=sys.stderr, flush=True)
            del theirs, mine, models
    if refused:
        print(f"not timed, the two bundles compute different functions: {', '.join(refused)}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    return sc.run_script(parse_args(argv), TITLE, "ab-decode-", measure)


if __name__ == "__main__":
    raise SystemExit(main())
