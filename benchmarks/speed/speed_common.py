"""Shared pieces of the speed and memory benchmarks (bench_generate, bench_load, bench_train).

The machine these run on is shared and noisy, so every ratio comes from variants measured side by side in
one run: interleaved, repeated, medians (the order rotates each repeat, so no variant always runs first).
Every report records the machine (CPU model, torch threads), torch / transformers / Python versions, the
git commit, the date and the exact command, next to its table.

Not a package file: the scripts put this folder on sys.path (its name must not clash with
benchmarks/common.py or benchmarks/quality/*, which tests also put on sys.path).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The methods, in table order, and how each is built: AdapterSettings keyword arguments (r is filled in).
# "ttlora-moe3" is a TT-LoRA MoE: 3 frozen TT experts and a per-sequence top-1 router.
METHODS = ("lora", "moelora", "talklora", "ttlora", "ttlora-moe3")
METHOD_SETTINGS: Dict[str, Dict[str, object]] = {
    "lora": {"method": "lora"},
    "moelora": {"method": "moelora"},  # E = 4 (the paper's default)
    "talklora": {"method": "talklora"},  # E = 4, B banks shared across layers
    "ttlora": {"method": "ttlora"},  # tt_rank 5, tt_alpha 16, automatic factors
    "ttlora-moe3": {"method": "ttlora", "num_experts": 3},
}
PEERS = ("peft-lora",)  # other libraries' adapters, measured beside ours where a script allows (bench_generate)
CLOCKS = ("wall", "cpu")  # interleaved_samples' clocks
ROUTED = ("moelora", "talklora", "ttlora-moe3")  # trace_routing() records something for these
DEFAULT_MODEL = "smollm2-135m-instruct"
FULL_RANK = 32  # the TalkLoRA paper's r (bench_model.py's too)
QUICK_RANK = 8

# Words of the quick model's tokenizer and of the generation prompts.
PROMPTS = [
    "The capital of France is",
    "Write one short sentence about the sea and the wind",
    "List three colors : red , blue and",
    "Once upon a time , in a small town by the river , there lived an old man who",
    "Question : what is two plus two ? Answer :",
    "The quick brown fox jumps over the lazy dog and then",
    "In machine learning , a mixture of experts routes each token to",
    "Tell me a story about a lion , a whale and a very small mouse who lived together in",
]


# ----------------------------------------------------------------------------------------- arguments
def add_common_args(parser: argparse.ArgumentParser, repeats: int, quick_repeats: int) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="a local transformers folder, or a bootstrapped base model name "
                             f"(default {DEFAULT_MODEL}; "
                             "`talklora-hub data bootstrap-models` makes it)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny random Llama built on the fly in a temporary folder (smoke test, seconds)")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"interleaved repeats per variant (default {repeats}; {quick_repeats} with --quick)")
    parser.add_argument("--out", default=None,
                        help="write the markdown report here, and the raw numbers as JSON next to it (.json)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cpu, or cuda (skipped with a note where there is no CUDA); --dtypes picks the precisions")
    parser.add_argument("--dtypes", default=None,
                        help="comma list of fp32, bf16 (default: fp32 on cpu, fp32,bf16 on cuda). bf16 on a CPU is "
                             "worth measuring only where it runs natively (AVX512-BF16 / AMX; the report says)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, as benchmarks/bench_layers.py: on a shared machine a "
                             "preempted second thread stalls every op)")
    parser._speed_defaults = (repeats, quick_repeats)  # type: ignore[attr-defined]


def new_parser(doc: str, repeats: int, quick_repeats: int, methods: Optional[str] = None,
               peers: bool = False) -> argparse.ArgumentParser:
    """A script's parser with the common arguments; methods: the default of a --methods argument (comma list,
    checked against METHODS, and PEERS where `peers`, and made a list by finish_args), or None for a script
    without one."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, repeats=repeats, quick_repeats=quick_repeats)
    allowed = METHODS + (PEERS if peers else ())
    if methods is not None:
        parser.add_argument("--methods", default=methods,
                            help=f"adapter methods, comma-separated, from {','.join(allowed)} (default {methods})")
    parser._speed_methods = allowed if methods is not None else None  # type: ignore[attr-defined]
    return parser


def finish_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    repeats, quick_repeats = parser._speed_defaults  # type: ignore[attr-defined]
    allowed = getattr(parser, "_speed_methods", None)
    if allowed:
        args.methods = [m for m in args.methods.split(",") if m]
        unknown = [m for m in args.methods if m not in allowed]
        if unknown or not args.methods:
            parser.error(f"--methods: unknown {unknown or args.methods}; choose from {list(allowed)}")
    if args.repeats is None:
        args.repeats = quick_repeats if args.quick else repeats
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.dtypes is not None:
        args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        bad = [d for d in args.dtypes if d not in ("fp32", "bf16")]
        if bad or not args.dtypes:
            parser.error(f"--dtypes: each must be fp32 or bf16, got {bad or args.dtypes!r}; e.g. --dtypes fp32,bf16")
    return args


def plans(device: str, dtypes: Optional[List[str]] = None) -> Optional[List[Tuple[str, str]]]:
    """[(device, dtype name)] to measure: `dtypes`, by default fp32 on cpu and fp32 + bf16 on cuda; None (the
    caller writes a note) for cuda without CUDA."""
    if device == "cpu":
        return [("cpu", d) for d in (dtypes or ["fp32"])]
    import torch

    if not torch.cuda.is_available():
        return None
    return [("cuda", d) for d in (dtypes or ["fp32", "bf16"])]



def begin_run(args: argparse.Namespace, title: str) -> Optional[List[Tuple[str, str]]]:
    """What every script does first: quiet transformers' logging, set torch's threads, and return the (device,
    dtype) plan; None, after the no-CUDA note, when there is nothing to measure (the script then exits 0)."""
    quiet_transformers()
    import torch

    torch.set_num_threads(args.threads)
    plan = plans(args.device, args.dtypes)
    if plan is None:
        no_cuda_report(args, title)
    return plan


def run_script(args: argparse.Namespace, title: str, prefix: str,
               body: Callable[[argparse.Namespace, List[Tuple[str, str]], Path, str, Path], int]) -> int:
    """The prologue the scripts share: begin_run (exit 0 where there is nothing to measure), then, inside a
    temporary folder `prefix...`, body(args, plan, base folder, its description, the temporary folder) with the
    base model resolved (see resolve_model). Returns body's exit status."""
    plan = begin_run(args, title)
    if plan is None:
        return 0
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        folder, description = resolve_model(args, Path(tmp))
        return body(args, plan, folder, description, Path(tmp))


def torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


def no_cuda_report(args: argparse.Namespace, title: str) -> None:
    """--device cuda on a machine without CUDA: say so, write the note to --out, and skip (exit 0)."""
    note = "no CUDA here: --device cuda skipped (nothing measured)."
    print(note)
    if args.out:
        env = environment(args)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(header_md(title, env, []) + "\n" + note + "\n")
        json_path(args.out).write_text(json.dumps({"environment": env, "skipped": note}, indent=2) + "\n")


# ----------------------------------------------------------------------------------------- models
def quiet_transformers() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def save_quick_llama(folder: Path, seed: int = 0) -> Path:
    """A tiny random Llama (2 layers, hidden 64) with a word-level tokenizer over the prompts' words: shapes only
    matter for speed, and these keep every --quick run to seconds on 2 cores."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    pre = pre_tokenizers.Whitespace()
    for text in PROMPTS:
        for word, _ in pre.pre_tokenize_str(text):
            vocab.setdefault(word, len(vocab))
    for i in range(len(vocab), 128):  # filler tokens up to a round vocabulary
        vocab[f"w{i}"] = i
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre
    core.decoder = decoders.WordPiece(prefix="##")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]",
                                  unk_token="[UNK]", model_max_length=256)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    folder.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def left_padded_tokenizer(folder: Path):
    """The model folder's tokenizer, padding on the left (a batch of prompts then ends together, as generate()
    needs), with EOS as the pad token where it has none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def resolve_model(args: argparse.Namespace, tmp: Path) -> Tuple[Path, str]:
    """(folder, description) of the base model: the quick tiny Llama, a local folder, or a bootstrapped name."""
    if args.quick:
        return save_quick_llama(tmp / "quick-llama"), "tiny random Llama (--quick: 2 layers, hidden 64)"
    path = Path(args.model).expanduser()
    if path.is_dir():  # reports are committed: name the folder, never the machine's path to it
        return path.resolve(), f"the local folder {path.resolve().name}"
    from talklora_hub.data.base_models import BASE_MODELS, base_model_path

    if args.model in BASE_MODELS:
        folder = base_model_path(args.model)  # raises with the bootstrap command when missing
        return folder, f"{args.model} (bootstrapped by `talklora-hub data bootstrap-models`)"
    raise SystemExit(f"--model must be a local folder or one of {sorted(BASE_MODELS)}, got {args.model!r}.")


def adapter_settings(name: str, quick: bool):
    from talklora_hub.modeling import AdapterSettings

    return AdapterSettings(r=QUICK_RANK if quick else FULL_RANK, **METHOD_SETTINGS[name])


def make_adapters_nonzero(model, std: float = 0.02, seed: int = 0) -> int:
    """Gives every all-zero floating parameter (the B matrices / shared B banks, zero-initialised so that
    delta W = 0 at step 0) small random values, so the adapter arithmetic (and its effect) is real.
    The base model has no all-zero tensors (Llama: no biases; norms are ones). Returns how many were filled."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    filled = 0
    with torch.no_grad():
        for _, param in model.named_parameters():
            if param.is_floating_point() and param.numel() and not bool(param.count_nonzero()):
                values = torch.randn(param.shape, generator=generator) * std
                param.copy_(values.to(param.dtype))
                filled += 1
    return filled


def build_method(folder: Path, name: str, quick: bool, dtype_name: str = "fp32", device: str = "cpu"):
    """A TalkLoRAForCausalLM of `name` on a fresh copy of the base weights, adapters non-zero."""
    from transformers import AutoModelForCausalLM

    from talklora_hub.modeling import TalkLoRAForCausalLM

    import torch

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch_dtype(dtype_name))
    if name in PEERS:
        return build_peft_lora(base, quick).to(device)
    model = TalkLoRAForCausalLM.from_base(base, adapter_settings(name, quick))
    make_adapters_nonzero(model)
    return model.to(device)


def build_peft_lora(base, quick: bool):
    """The peer row: peft's LoRA, unmerged, at our LoRA's rank, alpha and default targets, B non-zero as ours."""
    from peft import LoraConfig, get_peft_model

    from talklora_hub.modeling.adapter_settings import default_targets

    ours = adapter_settings("lora", quick)
    config = LoraConfig(r=ours.r, lora_alpha=ours.scaling * ours.r, lora_dropout=0.0,  # the same scale s = alpha / r
                        target_modules=default_targets(base.config.model_type))
    model = get_peft_model(base, config)
    make_adapters_nonzero(model)
    return model


# ----------------------------------------------------------------------------------------- timing
def synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def interleaved_samples(variants: Dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                        device: str = "cpu", clock: str = "wall") -> Dict[str, List[float]]:
    """Seconds per call of each variant: `warmup` untimed calls each, then `repeats` rounds in which every
    variant runs once; the order rotates by one each round (so none always runs first or right after a
    particular neighbour). clock: "wall" (time.perf_counter), or "cpu" (time.thread_time: the CPU time of this
    thread alone, blind to the time the OS gives other processes; meaningful on a CPU with one torch thread, where
    every op runs on the calling thread, on a machine whose other jobs would preempt a wall-clock measure)."""
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
    now = time.thread_time if clock == "cpu" else time.perf_counter
    names = list(variants)
    for name in names:
        for _ in range(warmup):
            variants[name]()
    samples: Dict[str, List[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start = now()
            variants[name]()
            synchronize(device)
            samples[name].append(now() - start)
    return samples


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def rotated(items: Sequence, round_index: int) -> list:
    items = list(items)
    shift = round_index % len(items) if items else 0
    return items[shift:] + items[:shift]


def run_json_child(cmd: List[str], env: Optional[dict] = None, timeout: float = 3600) -> dict:
    """Runs a child process and returns the JSON object on its last stdout line (its stderr on failure)."""
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}): {shlex.join(cmd)}\n{done.stderr[-4000:]}")
    lines = [line for line in done.stdout.splitlines() if line.strip().startswith("{")]
    if not lines:
        raise RuntimeError(f"child printed no JSON: {shlex.join(cmd)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def rss_mib() -> float:
    """Current resident set size of this process (VmRSS), MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    """Peak resident set size of this process (ru_maxrss, KiB on Linux), MiB: bench_model.py's measure."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------------------- reporting
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + (" (uncommitted changes)" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def command_line() -> str:
    script = Path(sys.argv[0]).resolve()
    try:
        script_text = str(script.relative_to(REPO))
    except ValueError:
        script_text = str(script)
    return shlex.join(["python", script_text] + sys.argv[1:])


def environment(args: argparse.Namespace) -> Dict[str, object]:
    import torch
    import transformers

    from talklora_hub.train.trainer import native_bf16

    env: Dict[str, object] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command_line(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "device": args.device,
        "cpu_native_bf16": native_bf16(on_cpu=True),  # AVX512-BF16 or AMX: bf16 faster than fp32, not emulated
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    try:
        with open("/proc/loadavg") as handle:
            env["load_average"] = " ".join(handle.read().split()[:3])
    except OSError:
        pass
    return env


def header_md(title: str, env: Dict[str, object], notes: List[str]) -> str:
    lines = [f"## {title}", "",
             f"- date: {env['date']}",
             f"- command: `{env['command']}`",
             f"- machine: {env['cpu']} ({env['cpu_count']} CPUs, load average {env.get('load_average', '?')}), "
             f"torch threads {env['torch_threads']}, native CPU bf16 {'yes' if env.get('cpu_native_bf16') else 'no'}"
             + (f", GPU {env['gpu']}" if env.get("gpu") else ""),
             f"- software: torch {env['torch']}, transformers {env['transformers']}, Python {env['python']}; "
             f"git {env['git_commit']}"]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def table_md(header: List[str], rows: List[List[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def json_path(out: str) -> Path:
    return Path(out).with_suffix(".json")


def emit(args: argparse.Namespace, title: str, env: Dict[str, object], notes: List[str], table: str,
         payload: Dict[str, object], footer: str = "") -> str:
    """Prints the report; with --out writes it (markdown) and the raw numbers (JSON, same stem)."""
    text = header_md(title, env, notes) + "\n" + table + (("\n" + footer) if footer else "")
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        json_path(args.out).write_text(json.dumps({"environment": env, **payload}, indent=2) + "\n")
        print(f"wrote {out} and {json_path(args.out)}")
    return text
