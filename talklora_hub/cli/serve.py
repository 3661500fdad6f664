"""`talklora-hub serve MODEL`: a saved talklora_hub model behind transformers' own OpenAI-compatible server.

    talklora-hub serve MODEL [--host 127.0.0.1] [--port 8000] [--continuous-batching auto|on|off]
        [--cb-num-blocks N] [--cb-block-size N] [--cb-max-batch-tokens N] [--dtype auto] [--device auto]
        [--max-model-len N] [--default-seed N] [--log-level info] [--trust-remote-code]

MODEL: a folder written by save_pretrained (or a Hub repo id, `repo@revision`); any plain causal LM works too.
It answers /v1/chat/completions, /v1/completions and /v1/responses (streaming or not), /v1/models and /health;
requests name the model as MODEL was given here (or leave it out).

The engine is `transformers serve`'s, unchanged: its model process, its continuous batching (paged attention),
its HTTP handlers. Only its one class-resolution point is taught something: it resolves a model's class with
getattr(transformers, config.architectures[0]), which knows no TalkLoRAForCausalLM; for a talklora_hub model
the name resolves, while loading, to AutoModelForCausalLM, which loads the code saved beside the weights
(trust_remote_code, for talklora_hub models only: a local folder's code runs as is, a Hub repo's only with
--trust-remote-code, as transformers asks). A TT-LoRA MoE routes per sequence, which packed batches
cannot hold (see talklora_hub/modeling/sequence_routing.py): `--continuous-batching auto` (the default) serves
it with transformers' sequential generate() runner instead, and `on` is refused with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Any, Dict, Iterator

TALKLORA_MODEL_TYPE = "talklora_hub"  # configuration_talklora.TalkLoRAConfig.model_type


def register(subparsers) -> None:
    serve = subparsers.add_parser(
        "serve", help="serve a saved model with transformers' OpenAI-compatible server (continuous batching)",
        description=__doc__.splitlines()[0])
    serve.add_argument("model", metavar="MODEL", help="a save_pretrained folder, or a Hub repo id [@revision]")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--continuous-batching", choices=["auto", "on", "off"], default="auto",
                       help="auto (default): on, except for a TT-LoRA MoE (per-sequence routing), which is served "
                            "with sequential generate()")
    serve.add_argument("--cb-num-blocks", type=int, default=None,
                       help="KV cache blocks for continuous batching (default: sized from free memory)")
    serve.add_argument("--cb-block-size", type=int, default=None, help="tokens per KV cache block")
    serve.add_argument("--cb-max-batch-tokens", type=int, default=None, help="most tokens in one batch")
    serve.add_argument("--dtype", default="auto", help="auto (the saved dtype), float32, bfloat16, ...")
    serve.add_argument("--device", default="auto", help="auto, cpu, cuda:0, ...")
    serve.add_argument("--max-model-len", type=int, default=None,
                       help="longest request, prompt and answer, in tokens (default: the model's context)")
    serve.add_argument("--default-seed", type=int, default=None, help="torch seed of the model process")
    serve.add_argument("--log-level", default="info", help="serve's log level (default info)")
    serve.add_argument("--trust-remote-code", action="store_true",
                       help="run the model code saved in a Hub repo (a local folder's runs without it)")
    serve.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    config = read_model_config(args.model)
    talklora = config.get("model_type") == TALKLORA_MODEL_TYPE
    if talklora and not args.trust_remote_code and not is_local_folder(args.model):
        raise SystemExit(f"{args.model} is a Hub repo: serving it runs the model code saved in it (talklora_hub's "
                         "bundle beside the weights). Fix: add --trust-remote-code if you trust that repo, or serve "
                         "a local folder (e.g. one written by save_pretrained).")
    continuous = choose_continuous_batching(args.continuous_batching, config)
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        raise SystemExit("`talklora-hub serve` runs transformers' server, which needs fastapi, uvicorn, pydantic and "
                         "openai. Fix: pip install 'transformers[serving]' (or pip install openai fastapi uvicorn).")
    from transformers.cli.serve import Serve

    print(f"talklora-hub serving {args.model} on http://{args.host}:{args.port}/v1 (continuous batching "
          f"{'on' if continuous else 'off'})", flush=True)
    with talklora_loader():
        Serve(force_model=args.model, continuous_batching=continuous, trust_remote_code=talklora,
              cb_num_blocks=args.cb_num_blocks, cb_block_size=args.cb_block_size,
              cb_max_batch_tokens=args.cb_max_batch_tokens, dtype=args.dtype, device=args.device,
              max_model_len=args.max_model_len, default_seed=args.default_seed, log_level=args.log_level,
              host=args.host, port=args.port)
    return 0


def is_local_folder(model: str) -> bool:
    """Whether MODEL names a folder on this machine (else a Hub repo id), by transformers serve's own rule."""
    from transformers.cli.serving.utils import parse_model_id

    return os.path.isdir(parse_model_id(model)[0])


def read_model_config(model: str) -> Dict[str, Any]:
    """config.json of MODEL (a folder, or `repo[@revision]` on the Hub) as a dict, read without running any code."""
    from transformers.cli.serving.utils import parse_model_id
    from transformers.utils import cached_file

    repo, revision, _ = parse_model_id(model)
    path = cached_file(repo, "config.json", revision=revision)
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def choose_continuous_batching(mode: str, config: Dict[str, Any]) -> bool:
    """Whether to serve with continuous batching: `on` / `off` as asked, `auto` on unless the model is a TT-LoRA
    MoE; `on` for a TT-LoRA MoE is refused (its experts are chosen per sequence, which packing cannot hold)."""
    sequence_routed = False
    if config.get("model_type") == TALKLORA_MODEL_TYPE:
        from ..modeling import AdapterSettings

        sequence_routed = AdapterSettings.from_dict(config.get("adapter") or {}).is_sequence_routed
    if sequence_routed and mode == "on":
        from ..modeling.sequence_routing import packed_sequences_error

        num_experts = (config.get("adapter") or {}).get("num_experts")
        error = packed_sequences_error("--continuous-batching on", f"method='ttlora', num_experts={num_experts}")
        raise SystemExit(f"{error} (or leave --continuous-batching at auto)")
    if mode == "auto" and sequence_routed:
        print("a TT-LoRA MoE chooses one expert per sequence: served with sequential generate(), not continuous "
              "batching", file=sys.stderr)
    return mode == "on" or (mode == "auto" and not sequence_routed)


@contextlib.contextmanager
def talklora_loader() -> Iterator[None]:
    """transformers serve builds its ModelLoader from this module attribute while starting: it gets the
    talklora_hub one (pickled into the model's process by its name here)."""
    from transformers.cli.serving import model_manager

    original = model_manager.ModelLoader
    model_manager.ModelLoader = _loader_class()
    try:
        yield
    finally:
        model_manager.ModelLoader = original


@contextlib.contextmanager
def resolvable_architectures(model_id: str) -> Iterator[None]:
    """While a talklora_hub model loads, getattr(transformers, its architecture) is AutoModelForCausalLM, which
    loads the class saved beside the weights (the serve loader passes trust_remote_code, set for these only)."""
    from transformers.cli.serving import model_manager

    # Patch the module object the resolution reads (model_manager's global `transformers`): in the model's process
    # it was seen to be another object than the one `import transformers` returns there, so patching that one
    # left the resolution failing.
    transformers = model_manager.transformers
    config = read_model_config(model_id)
    names = []
    if config.get("model_type") == TALKLORA_MODEL_TYPE:
        names = [name for name in config.get("architectures") or [] if getattr(transformers, name, None) is None]
    for name in names:
        setattr(transformers, name, transformers.AutoModelForCausalLM)
    try:
        yield
    finally:
        for name in names:
            delattr(transformers, name)


_LOADER = None


def _loader_class():
    """The ModelLoader subclass, built on first use: importing transformers' serving code (fastapi, openai types)
    at import time would slow every talklora-hub command down."""
    global _LOADER
    if _LOADER is None:
        from transformers.cli.serving.model_manager import ModelLoader

        class TalkLoRAModelLoader(ModelLoader):
            """transformers serve's ModelLoader; its class resolution also knows talklora_hub architectures."""

            def _load_model(self, model_id, tqdm_class=None, progress_callback=None):
                with resolvable_architectures(model_id):
                    return super()._load_model(model_id, tqdm_class=tqdm_class, progress_callback=progress_callback)

        # Pickle finds a class by module and qualified name: the model's process imports this module and asks
        # for TalkLoRAModelLoader, which __getattr__ below builds there too.
        TalkLoRAModelLoader.__module__, TalkLoRAModelLoader.__qualname__ = __name__, "TalkLoRAModelLoader"
        _LOADER = TalkLoRAModelLoader
    return _LOADER


def __getattr__(name: str):
    if name == "TalkLoRAModelLoader":
        return _loader_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
