"""What the routing Space computes and draws: load a model, read a text (or continue it with generate()),
collect which expert every token went to, and render the views as self-contained HTML/SVG.

Source of truth: talklora_hub/space/. `talklora-hub space build` copies this file verbatim into
spaces/talklora-routing/, where the deployed Space imports it as a flat module: it must import only the
standard library, torch, transformers and huggingface_hub (never talklora_hub), and draw everything
itself (inline SVG, no plotting library, no external assets), so the Space works offline.

Routing data: `Routing.weights` is (modules, tokens, E), one row per routed module (TalkLoRA/MoELoRA),
each token's weights summing to 1. A *selection* (layer, module) picks the modules a view averages:
"all" layers and/or "all" modules, a layer index ("3") and/or a module's short name
("self_attn.q_proj"). The balance figures use the same definitions as
talklora_hub.analysis.routing_stats.balance_summary (a test checks they agree).
"""

from __future__ import annotations

import html
import json
import math
import os
import queue
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

TOKEN_ROUTED_METHODS = ("moelora", "talklora")
METHOD_LABELS = {"talklora": "TalkLoRA", "moelora": "MoELoRA", "lora": "LoRA", "ttlora": "TT-LoRA"}
ALL = "all"

MODELS_ENV = "TALKLORA_SPACE_MODELS"            # "id1,id2": the models the picker offers
ALLOW_ANY_ENV = "TALKLORA_SPACE_ALLOW_ANY_MODEL"  # "1": also accept ids typed by the user
MAX_TOKENS_ENV = "TALKLORA_SPACE_MAX_TOKENS"      # cap on tokens read per request (CPU Spaces)
MAX_LOADED_ENV = "TALKLORA_SPACE_MAX_LOADED"      # models kept in memory at once
ZOO_INDEX_ENV = "TALKLORA_ZOO_INDEX"              # where the zoo index lives (see default_zoo_lister)
ZOO_TIMEOUT_ENV = "TALKLORA_ZOO_TIMEOUT"          # seconds to wait for the index at start-up
DEFAULT_ZOO_TIMEOUT = 10.0
DEFAULT_MAX_TOKENS = 512
DEFAULT_MAX_LOADED = 3

_LAYER_INDEX = re.compile(r"\.(\d+)\.")


class SpaceError(Exception):
    """A problem to show the user as is (bad input, unknown model): the message says what and what to do."""


# ---------------------------------------------------------------------------------------------------
# Which models the picker offers: an explicit list, the zoo index, and the Space README's `models:`.
# ---------------------------------------------------------------------------------------------------

ModelChoice = Tuple[str, str]  # (label shown, model id: a local folder or a Hub repo id)

_zoo_listers: List[Callable[[], List[Any]]] = []


def register_zoo_lister(lister: Callable[[], List[Any]]) -> None:
    """Plugs in a zoo index reader: a callable returning entries (repo ids, (label, id) pairs or dicts
    with "repo_id"/"id" and optional "label"/"method"). Registered listers replace the default one."""
    _zoo_listers.append(lister)


def clear_zoo_listers() -> None:
    _zoo_listers.clear()


def default_zoo_lister() -> List[Any]:
    """Reads the zoo index named by $TALKLORA_ZOO_INDEX: a local JSON file, or a Hub repo holding
    zoo.json. "owner/talklora-zoo" is a dataset repo (as talklora_hub publishes it); "models/owner/name" or
    "datasets/owner/name" name the repo type; a path ending in .json names the file, e.g.
    "owner/talklora-zoo/zoo.json". Unset: no index."""
    spec = os.environ.get(ZOO_INDEX_ENV, "").strip()
    if not spec:
        return []
    if os.path.isfile(spec):
        with open(spec, encoding="utf-8") as handle:
            return _index_entries(json.load(handle))
    from huggingface_hub import hf_hub_download

    parts = spec.strip("/").split("/")
    repo_type = "dataset"
    if parts[0] in ("datasets", "spaces", "models"):
        repo_type = {"datasets": "dataset", "spaces": "space", "models": "model"}[parts[0]]
        parts = parts[1:]
    filename = "/".join(parts[2:]) if len(parts) > 2 and parts[-1].endswith(".json") else "zoo.json"
    local = hf_hub_download("/".join(parts[:2]), filename, repo_type=repo_type, etag_timeout=5)
    with open(local, encoding="utf-8") as handle:
        return _index_entries(json.load(handle))


def _index_entries(data: Any) -> List[Any]:
    """The loadable entries of an index: a list, {"models": [...]}, or talklora_hub's zoo.json
    ({"entries": {repo_id: entry}}), keeping full causal-LM models (experts and routers alone need
    talklora_hub to assemble)."""
    if isinstance(data, dict):
        data = data.get("models", data.get("entries", []))
    if isinstance(data, dict):
        data = list(data.values())
    if not isinstance(data, list):
        return []
    return [e for e in data if not isinstance(e, dict)
            or (e.get("kind", "model") == "model" and e.get("head", "causal") == "causal")]


def _as_choice(entry: Any) -> Optional[ModelChoice]:
    if isinstance(entry, str) and entry.strip():
        return (model_label(entry.strip()), entry.strip())
    if isinstance(entry, (tuple, list)) and len(entry) == 2:
        return (str(entry[0]), str(entry[1]))
    if isinstance(entry, dict):
        model_id = entry.get("repo_id") or entry.get("id") or entry.get("model_id")
        if not model_id:
            return None
        label = entry.get("label") or model_label(str(model_id))
        method = entry.get("method")
        if method and not entry.get("label"):
            label = f"{label} ({METHOD_LABELS.get(method, method)})"
        return (str(label), str(model_id))
    return None


def _call_with_timeout(lister: Callable[[], List[Any]], timeout: float) -> List[Any]:
    """lister() in a daemon thread; [] if it fails or takes longer than timeout seconds (the Hub client
    retries an unreachable host for a long while)."""
    box: Dict[str, Any] = {}

    def run() -> None:
        try:
            box["entries"] = list(lister() or [])
        except Exception:
            box["entries"] = []

    thread = threading.Thread(target=run, name="talklora-zoo-index", daemon=True)
    thread.start()
    thread.join(timeout)
    return box.get("entries", [])


def list_zoo_models(timeout: Optional[float] = None) -> List[ModelChoice]:
    """The zoo's models as (label, id) pairs; [] when no index is configured, it cannot be reached, or it
    does not answer within timeout seconds ($TALKLORA_ZOO_TIMEOUT, default 10): an index never stops the
    Space from starting."""
    timeout = float(os.environ.get(ZOO_TIMEOUT_ENV, DEFAULT_ZOO_TIMEOUT)) if timeout is None else timeout
    choices: List[ModelChoice] = []
    for lister in list(_zoo_listers) or [default_zoo_lister]:
        entries = _call_with_timeout(lister, timeout)
        choices.extend(c for c in map(_as_choice, entries) if c is not None)
    return _unique(choices)


def model_label(model_id: str) -> str:
    """A local folder shows as its name (the path stays the value); a repo id as itself."""
    if os.path.isdir(model_id):
        return f"{os.path.basename(os.path.normpath(model_id))} (local)"
    return model_id


def readme_models(readme_path: str) -> List[str]:
    """The `models:` list of a Space README's front matter (the deployed Space's default list)."""
    try:
        with open(readme_path, encoding="utf-8") as handle:
            lines = handle.read().split("\n")
    except OSError:
        return []
    if not lines or lines[0].strip() != "---":
        return []
    models, inside = [], False
    for line in lines[1:]:
        if line.strip() == "---":
            break
        if re.match(r"^models:\s*$", line):
            inside = True
        elif inside and re.match(r"^\s+-\s+", line):
            models.append(line.split("-", 1)[1].strip().strip("'\""))
        elif inside and line.strip():
            inside = False
    return models


def resolve_model_choices(explicit: Optional[Sequence[str]] = None,
                          readme_path: Optional[str] = None) -> List[ModelChoice]:
    """The picker's list: the explicit ids (else $TALKLORA_SPACE_MODELS), then the zoo index; the
    README's `models:` only when both are empty."""
    ids = list(explicit or [])
    if not ids:
        ids = [m.strip() for m in os.environ.get(MODELS_ENV, "").split(",") if m.strip()]
    choices = [(model_label(m), m) for m in ids] + list_zoo_models()
    if not choices and readme_path:
        choices = [(model_label(m), m) for m in readme_models(readme_path)]
    return _unique(choices)


def _unique(choices: List[ModelChoice]) -> List[ModelChoice]:
    seen, result = set(), []
    for label, model_id in choices:
        if model_id not in seen:
            seen.add(model_id)
            result.append((label, model_id))
    return result


def allow_any_model() -> bool:
    return os.environ.get(ALLOW_ANY_ENV, "").strip().lower() in ("1", "true", "yes")


# ---------------------------------------------------------------------------------------------------
# Loading models
# ---------------------------------------------------------------------------------------------------

@dataclass
class LoadedModel:
    """A model ready to read text. method is None for a model that is not a talklora_hub adapter."""

    model_id: str
    model: Any
    tokenizer: Any
    method: Optional[str]
    num_experts: int
    max_tokens: int
    limit_reason: str
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def token_routed(self) -> bool:
        return self.method in TOKEN_ROUTED_METHODS

    @property
    def sequence_routed(self) -> bool:
        return self.method == "ttlora" and self.num_experts > 1

    @property
    def kind(self) -> str:
        if self.method is None:
            return "not a talklora_hub model"
        if self.sequence_routed:
            return f"TT-LoRA MoE · {self.num_experts} experts, one per sequence"
        if self.token_routed:
            return f"{METHOD_LABELS[self.method]} · {self.num_experts} experts per token"
        return f"{METHOD_LABELS.get(self.method, self.method)} · static update, no routing"


def _hub_endpoint() -> str:
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT
    except Exception:
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def _load_error(model_id: str, error: Exception) -> SpaceError:
    """Turns a loading failure into a message that says which case it is."""
    names = {cls.__name__ for cls in type(error).__mro__}
    text = str(error)
    endpoint = _hub_endpoint()
    if "RepositoryNotFoundError" in names or "is not a valid model identifier" in text \
            or "is not a local folder" in text:
        return SpaceError(f"Unknown model `{model_id}`: there is no local folder by that name and no repo "
                          f"with that id on {endpoint}. Check the spelling, or pick a model from the list.")
    if "HFValidationError" in names or "Repo id must be" in text:
        return SpaceError(f"Unknown model `{model_id}`: it is not a local folder, and not a valid repo id "
                          "(owner/name). Check the path or the spelling.")
    if "GatedRepoError" in names or "401" in text or "403" in text:
        return SpaceError(f"Model `{model_id}` exists on {endpoint} but cannot be read without access "
                          "(a private or gated repo): set HF_TOKEN for the Space.")
    if "LocalEntryNotFoundError" in names or "OfflineModeIsEnabled" in names or "outgoing traffic" in text \
            or "couldn't connect" in text.lower() or "ConnectError" in names:
        return SpaceError(f"Unknown model `{model_id}`: it is not a local folder, and the Hub ({endpoint}) could "
                          "not be reached to look it up (offline). Pick a model from the list.")
    first = text.strip().split("\n")[0][:400]
    return SpaceError(f"Could not load model `{model_id}`: {type(error).__name__}: {first}")


def load_model(model_id: str, max_tokens_cap: Optional[int] = None) -> LoadedModel:
    """from_pretrained(model_id, trust_remote_code=True): a local folder, or a repo id resolved against
    $HF_ENDPOINT. The tokenizer comes from the model repo, else from the base model it records."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    model_id = (model_id or "").strip()
    if not model_id:
        raise SpaceError("No model chosen: pick one from the list.")
    if model_id.startswith(("/", "./", "../", "~")) and not os.path.isdir(os.path.expanduser(model_id)):
        raise SpaceError(f"Unknown model `{model_id}`: there is no such local folder.")
    try:
        config = AutoConfig.from_pretrained(model_id, trust_remote_code=True)
    except Exception as error:
        raise _load_error(model_id, error) from error
    adapter = getattr(config, "adapter", None)
    try:
        model = AutoModelForCausalLM.from_pretrained(model_id, trust_remote_code=True, dtype=torch.float32)
    except Exception as error:
        raise _load_error(model_id, error) from error
    model.eval()
    tokenizer = None
    for source in (model_id, getattr(config, "base_model_name_or_path", None)):
        if not source:
            continue
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=True)
            break
        except Exception:
            continue
    if tokenizer is None:
        raise SpaceError(f"Model `{model_id}` has no tokenizer, and neither has the base model it records "
                         f"({getattr(config, 'base_model_name_or_path', None)!r}): save the tokenizer with the model.")
    method = adapter.get("method") if isinstance(adapter, dict) else None
    num_experts = int(adapter.get("num_experts") or 1) if isinstance(adapter, dict) else 0
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    positions = (getattr(text_config, "max_position_embeddings", None) or getattr(text_config, "n_positions", None)
                 or getattr(text_config, "n_ctx", None))
    cap = max_tokens_cap or int(os.environ.get(MAX_TOKENS_ENV, DEFAULT_MAX_TOKENS))
    if positions and positions <= cap:
        limit, reason = int(positions), f"its context length ({positions} positions)"
    else:
        limit, reason = cap, f"this Space's cap of {cap} tokens per request"
    return LoadedModel(model_id, model, tokenizer, method, num_experts, limit, reason)


class ModelCache:
    """The last few models used, loaded once each (thread-safe); the least recently used is dropped."""

    def __init__(self, capacity: Optional[int] = None, loader: Callable[[str], LoadedModel] = load_model):
        self.capacity = capacity or int(os.environ.get(MAX_LOADED_ENV, DEFAULT_MAX_LOADED))
        self.loader = loader
        self._models: "OrderedDict[str, LoadedModel]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model_id: str) -> LoadedModel:
        model_id = (model_id or "").strip()
        with self._lock:
            if model_id in self._models:
                self._models.move_to_end(model_id)
                return self._models[model_id]
            loaded = self.loader(model_id)
            self._models[model_id] = loaded
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
            return loaded


# ---------------------------------------------------------------------------------------------------
# Reading a text: the routing of every token
# ---------------------------------------------------------------------------------------------------

@dataclass
class Routing:
    """Which expert every token went to, for one text and one model.

    tokens: display text of each token (decoded so that they concatenate to the text);
    weights: (modules, routed tokens, E) float, or None (no token routing); routed tokens may lag behind
    tokens while generating (a generated token is routed when the model reads it);
    module_names / layers: per module; prompt_length: tokens of the prompt (all, for a plain text);
    sequence_probs: TT-LoRA MoE router probabilities (E,) for the sequence, else None;
    notes: messages for the user (truncation, no routing, ...); done: False while still generating.
    """

    model_id: str
    method: Optional[str]
    num_experts: int
    tokens: List[str]
    token_ids: List[int]
    special: List[bool]
    weights: Optional[torch.Tensor]
    module_names: List[str]
    prompt_length: int
    sequence_probs: Optional[List[float]] = None
    notes: List[str] = field(default_factory=list)
    done: bool = True
    generated: bool = False

    @property
    def layers(self) -> List[int]:
        return [layer_index_of(n) for n in self.module_names]

    @property
    def routed_tokens(self) -> int:
        return 0 if self.weights is None else int(self.weights.shape[1])

    @property
    def token_routed(self) -> bool:
        return self.weights is not None and len(self.module_names) > 0

    @property
    def chosen_expert(self) -> Optional[int]:
        if self.sequence_probs is None:
            return None
        return max(range(len(self.sequence_probs)), key=self.sequence_probs.__getitem__)


def layer_index_of(name: str) -> int:
    """The transformer block of a module: its first integer path component, or -1."""
    match = _LAYER_INDEX.search(f".{name}.")
    return int(match.group(1)) if match else -1


def short_module_name(name: str) -> str:
    """"base.model.layers.3.self_attn.q_proj" -> "self_attn.q_proj" (the part after the layer index)."""
    match = _LAYER_INDEX.search(f".{name}.")
    if not match:
        return name[5:] if name.startswith("base.") else name
    return f".{name}."[match.end():].strip(".")


def token_texts(tokenizer: Any, ids: Sequence[int], previous: Optional[Tuple[List[str], str]] = None
                ) -> Tuple[List[str], str]:
    """Each token's text such that the pieces concatenate to the decoded text (prefix decoding, so
    multi-byte characters and word-initial spaces come out right). previous: the result for a prefix of
    ids, to extend it (streaming). Returns (pieces, decoded text)."""
    pieces, text = (list(previous[0]), previous[1]) if previous else ([], "")
    for i in range(len(pieces), len(ids)):
        current = tokenizer.decode(list(ids[:i + 1]), skip_special_tokens=False, clean_up_tokenization_spaces=False)
        common = len(text) if current.startswith(text) else len(os.path.commonprefix([text, current]))
        if common < len(text):  # earlier pieces changed (e.g. a multi-byte character completed): trim them
            start = len(text)
            for j in range(len(pieces) - 1, -1, -1):
                start -= len(pieces[j])
                if start >= common:
                    pieces[j] = ""
                else:
                    pieces[j] = pieces[j][:common - start]
                    break
        pieces.append(current[common:])
        text = current
    return pieces, text


def _special_flags(tokenizer: Any, ids: Sequence[int]) -> List[bool]:
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    return [int(i) in special for i in ids]


def _encode(loaded: LoadedModel, text: str, room: int, keep: str) -> Tuple[List[int], List[str]]:
    """Token ids of text, at most `room` of them (keep "start" or "end"), and notes about truncation."""
    ids = loaded.tokenizer(text, add_special_tokens=True)["input_ids"]
    notes = []
    if len(ids) > room:
        where = "first" if keep == "start" else "last"
        notes.append(f"The text has {len(ids)} tokens, more than the {room} this model reads here "
                     f"({loaded.limit_reason}): it was truncated to its {where} {room} tokens.")
        ids = ids[:room] if keep == "start" else ids[-room:]
    return ids, notes


def _check_text(text: Optional[str], what: str) -> str:
    if text is None or not text.strip():
        raise SpaceError(f"The {what} is empty: type or paste some text first.")
    return text


def _model_notes(loaded: LoadedModel) -> List[str]:
    if loaded.method is None:
        return [f"`{loaded.model_id}` is not a talklora_hub adapter model (its config has no `adapter`): "
                "there are no experts and no routing to show, only its tokens."]
    if loaded.sequence_routed:
        return ["TT-LoRA MoE routes whole sequences, not tokens: the router reads the frozen base model's "
                "state at the last token and one expert serves every token. See *Expert per sequence*."]
    if not loaded.token_routed:
        name = METHOD_LABELS.get(loaded.method, loaded.method)
        return [f"`{loaded.model_id}` is a plain {name} adapter: one static update applied to every token, with "
                "no experts and no routing to show. Pick a TalkLoRA, MoELoRA or TT-LoRA MoE model to see routing."]
    return []


def analyze_text(loaded: LoadedModel, text: str) -> Routing:
    """One forward pass over text (truncated to what the model reads, and said so)."""
    _check_text(text, "text")
    ids, notes = _encode(loaded, text, loaded.max_tokens, keep="start")
    if not ids:
        raise SpaceError("The tokenizer produced no tokens for this text.")
    input_ids = torch.tensor([ids])
    extra = {"output_router_logits": True} if loaded.method is not None else {}
    with loaded.lock, torch.no_grad():
        out = loaded.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **extra)
    weights, names = None, []
    if getattr(out, "routing_weights", None):
        weights = torch.stack([w[0].float() for w in out.routing_weights])
        names = list(out.router_module_names)
    probs = _sequence_probs(out)
    pieces, _ = token_texts(loaded.tokenizer, ids)
    return Routing(loaded.model_id, loaded.method, loaded.num_experts, pieces, list(ids),
                   _special_flags(loaded.tokenizer, ids), weights, names, len(ids), probs,
                   notes=_model_notes(loaded) + notes)


def _sequence_probs(out: Any) -> Optional[List[float]]:
    logits = getattr(out, "sequence_router_logits", None)
    if logits is None:
        return None
    return [float(p) for p in logits[0].float().softmax(-1)]


class _QueueStreamer:
    """A generate() streamer that hands each new token to the thread rendering the views."""

    def __init__(self, sink: "queue.Queue[Any]"):
        self.sink = sink
        self.seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self.seen_prompt:  # generate() first pushes the prompt
            self.seen_prompt = True
            return
        self.sink.put(("tokens", [int(t) for t in value.reshape(-1).tolist()]))

    def end(self) -> None:
        pass


def _cache_of(out: Any) -> Dict[str, Any]:
    """generate()'s KV cache as the keyword this transformers version uses: `cache` in newer 5.x,
    `past_key_values` before (reading or passing the old name in newer versions warns)."""
    for name in ("cache", "past_key_values"):
        if name in getattr(type(out), "__dataclass_fields__", {}):
            return {name: getattr(out, name)}
    return {}


def _stack_steps(steps: List[list]) -> Optional[Tuple[torch.Tensor, List[str]]]:
    """A snapshot of RoutingTrace.steps -> ((modules, tokens, E), names) for batch row 0."""
    steps = [s for s in steps if s]
    if not steps:
        return None
    names = [r.name for r in steps[0]]
    per_module = [torch.cat([step[m].weights[0].float() for step in steps], dim=0) for m in range(len(names))]
    return torch.stack(per_module), names


def generate_routing(loaded: LoadedModel, prompt: str, max_new_tokens: int = 24) -> Iterator[Routing]:
    """Continues prompt with greedy generate(), yielding the routing after every new token.

    The prompt is kept to its last tokens so that prompt + new tokens fit what the model reads. A new
    token's routing is known once the model reads it (the next step); after the last step one more
    forward reads the last token, so the final Routing covers every token.
    """
    from transformers import StoppingCriteria, StoppingCriteriaList

    _check_text(prompt, "prompt")
    max_new_tokens = max(1, min(int(max_new_tokens), loaded.max_tokens - 1))
    ids, notes = _encode(loaded, prompt, loaded.max_tokens - max_new_tokens, keep="end")
    if not ids:
        raise SpaceError("The tokenizer produced no tokens for this prompt.")
    notes = _model_notes(loaded) + notes
    tokenizer, model = loaded.tokenizer, loaded.model
    input_ids = torch.tensor([ids])
    events: "queue.Queue[Any]" = queue.Queue()
    cancel = threading.Event()
    trace_box: Dict[str, Any] = {}

    class _Cancel(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def work() -> None:
        try:
            with torch.no_grad():
                if loaded.sequence_routed:
                    first = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
                    events.put(("sequence", _sequence_probs(first)))
                context = model.trace_routing() if loaded.token_routed else _nullcontext()
                with context as trace:
                    trace_box["trace"] = trace
                    out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                         max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                                         streamer=_QueueStreamer(events), return_dict_in_generate=True,
                                         stopping_criteria=StoppingCriteriaList([_Cancel()]))
                    sequences = out.sequences
                    if loaded.token_routed and sequences.shape[1] > input_ids.shape[1] and not cancel.is_set():
                        model(input_ids=sequences[:, -1:], attention_mask=torch.ones_like(sequences),
                              use_cache=True, **_cache_of(out))
            events.put(("done", None))
        except BaseException as error:  # handed to the rendering thread, which raises it
            events.put(("error", error))

    all_ids = list(ids)
    pieces = token_texts(tokenizer, all_ids)
    probs: Optional[List[float]] = None
    with loaded.lock:
        worker = threading.Thread(target=work, name="talklora-space-generate", daemon=True)
        worker.start()
        try:
            finished = False
            while not finished:
                kind, payload = events.get()
                if kind == "error":
                    raise payload
                if kind == "sequence":
                    probs = payload
                    continue
                if kind == "tokens":
                    all_ids.extend(payload)
                    pieces = token_texts(tokenizer, all_ids, pieces)
                finished = kind == "done"
                trace = trace_box.get("trace")
                stacked = _stack_steps(list(trace.steps)) if trace is not None else None
                weights, names = stacked if stacked else (None, [])
                yield Routing(loaded.model_id, loaded.method, loaded.num_experts, list(pieces[0]), list(all_ids),
                              _special_flags(tokenizer, all_ids), weights, names, len(ids), probs,
                              notes=list(notes), done=finished, generated=True)
        finally:
            cancel.set()
            worker.join()


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------------------------------------------------
# Selections and statistics (same definitions as talklora_hub.analysis.routing_stats)
# ---------------------------------------------------------------------------------------------------

def layer_choices(routing: Optional[Routing]) -> List[Tuple[str, str]]:
    choices = [("all layers (mean)", ALL)]
    if routing is not None and routing.token_routed:
        choices += [(f"layer {layer}", str(layer)) for layer in sorted(set(routing.layers))]
    return choices


def module_choices(routing: Optional[Routing]) -> List[Tuple[str, str]]:
    choices = [("all modules (mean)", ALL)]
    if routing is not None and routing.token_routed:
        seen: List[str] = []
        for name in routing.module_names:
            short = short_module_name(name)
            if short not in seen:
                seen.append(short)
        choices += [(s, s) for s in seen]
    return choices


def selected_modules(routing: Routing, layer: str = ALL, module: str = ALL) -> List[int]:
    """Indices of the modules matching the selection (empty when none matches)."""
    layer, module = str(layer if layer not in (None, "") else ALL), str(module if module not in (None, "") else ALL)
    return [i for i, name in enumerate(routing.module_names)
            if (layer == ALL or str(layer_index_of(name)) == layer)
            and (module == ALL or short_module_name(name) == module)]


def selection_label(layer: str, module: str) -> str:
    where = "all layers" if layer in (ALL, None, "") else f"layer {layer}"
    what = "all modules" if module in (ALL, None, "") else module
    return f"{what}, {where}" if (layer in (ALL, None, "") or module in (ALL, None, "")) else f"{what} of {where}"


def token_entropy(weights: torch.Tensor) -> torch.Tensor:
    """(...,) per-token routing entropy -sum g log g in nats (0: one expert; ln E: uniform)."""
    g = weights.float()
    return -(g * g.clamp_min(1e-12).log()).sum(dim=-1)


def expert_load(weights: torch.Tensor) -> torch.Tensor:
    """(E,) mean routing weight per expert over all leading dims (sums to 1)."""
    flat = weights.reshape(-1, weights.shape[-1]).float()
    return flat.mean(dim=0) if flat.numel() else torch.zeros(weights.shape[-1])


def balance_summary(weights: torch.Tensor, dead_threshold: float = 0.02) -> Dict[str, float]:
    """mean_entropy (nats), normalized_entropy (/ ln E), load_cv, max_share, dead_experts (load below
    dead_threshold) of routing weights (..., E)."""
    num_experts = weights.shape[-1]
    flat = weights.reshape(-1, num_experts).float()
    load = expert_load(weights)
    entropy = token_entropy(flat).mean().item() if flat.numel() else 0.0
    cv = (load.std(unbiased=False) / load.mean()).item() if load.sum() > 0 else 0.0
    return {"mean_entropy": entropy, "normalized_entropy": entropy / math.log(num_experts) if num_experts > 1 else 0.0,
            "load_cv": cv, "max_share": load.max().item(), "dead_experts": int((load < dead_threshold).sum())}


def selection_weights(routing: Routing, layer: str = ALL, module: str = ALL) -> torch.Tensor:
    """(selected modules, routed tokens, E) for the selection; SpaceError if nothing matches."""
    if not routing.token_routed:
        raise SpaceError("This model has no token routing.")
    index = selected_modules(routing, layer, module)
    if not index:
        raise SpaceError(f"No routed module matches {selection_label(layer, module)}: pick another layer or module.")
    return routing.weights[index]


def token_view_data(routing: Routing, layer: str = ALL, module: str = ALL) -> Dict[str, Any]:
    """Per routed token: the mean weights over the selected modules (T, E), the top expert and its
    weight, and the entropy (mean over the selected modules of each module's entropy)."""
    stacked = selection_weights(routing, layer, module)
    mean = stacked.mean(dim=0)
    top_weight, top = mean.max(dim=-1)
    return {"mean": mean, "top": top.tolist(), "top_weight": top_weight.tolist(),
            "entropy": token_entropy(stacked).mean(dim=0).tolist()}


def layer_load(routing: Routing, module: str = ALL) -> "OrderedDict[int, torch.Tensor]":
    """{layer: (E,) mean load over the text of the chosen module (all: mean of the layer's modules)}."""
    per_layer: "OrderedDict[int, List[torch.Tensor]]" = OrderedDict()
    for i in selected_modules(routing, ALL, module):
        per_layer.setdefault(layer_index_of(routing.module_names[i]), []).append(expert_load(routing.weights[i]))
    return OrderedDict((layer, torch.stack(v).mean(0)) for layer, v in sorted(per_layer.items()))


# ---------------------------------------------------------------------------------------------------
# Drawing (self-contained HTML and inline SVG; every figure has hover titles)
# ---------------------------------------------------------------------------------------------------

EXPERT_COLORS = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#EECA3B", "#9D755D",
                 "#FF9DA6", "#79706E"]
BLUES = [(0.0, (247, 251, 255)), (0.25, (198, 219, 239)), (0.5, (107, 174, 214)), (0.75, (33, 113, 181)),
         (1.0, (8, 48, 107))]
CSS = """<style>
.trl-view{font-family:ui-sans-serif,system-ui,-apple-system,'Segoe UI',sans-serif;color:#1f2328;background:#fff;
 border:1px solid #d8dee4;border-radius:8px;padding:10px 12px;margin:2px 0}
.trl-view h4{margin:0 0 6px 0;font-size:14px;font-weight:600;color:#1f2328}
.trl-sub{font-size:12px;color:#57606a;margin:0 0 8px 0}
.trl-tokens{white-space:pre-wrap;word-break:break-word;line-height:2.0;
 font-family:ui-monospace,Menlo,Consolas,monospace;
 font-size:15px;color:#111}
.trl-tok{border-radius:3px;padding:1px 0;margin-right:1px;cursor:help}
.trl-gen{outline:1px dashed #57606a;outline-offset:-1px}
.trl-pending{background:#eaeef2;color:#8c959f}
.trl-special{font-style:italic;color:#57606a}
.trl-legend{display:flex;flex-wrap:wrap;gap:6px 14px;font-size:12px;margin:6px 0 2px 0;color:#1f2328}
.trl-legend span.sw{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:-2px}
.trl-scroll{max-height:460px;overflow:auto}
.trl-table{border-collapse:collapse;font-size:12px;margin-top:6px}
.trl-table, .trl-table tr, .trl-table td{border:none !important;background:transparent !important}
.trl-table td{padding:2px 12px 2px 0 !important;color:#1f2328}
.trl-table td.v{font-family:ui-monospace,Menlo,Consolas,monospace;text-align:right}
.trl-empty{font-size:13px;color:#57606a}
.trl-flex{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
</style>"""


def expert_color(expert: int, num_experts: int) -> str:
    if num_experts <= len(EXPERT_COLORS):
        return EXPERT_COLORS[expert]
    return _hsl_to_hex(expert / num_experts, 0.6, 0.5)


def _hsl_to_hex(h: float, s: float, l: float) -> str:
    import colorsys

    r, g, b = colorsys.hls_to_rgb(h, l, s)
    return "#%02x%02x%02x" % (round(r * 255), round(g * 255), round(b * 255))


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha:.3f})"


def diverging(value: float, centre: float, span: float) -> str:
    """Blue below centre, white at centre, red above; span: the deviation drawn at full colour."""
    t = max(-1.0, min(1.0, (value - centre) / span)) if span > 0 else 0.0
    end = (178, 24, 43) if t > 0 else (33, 102, 172)
    t = abs(t)
    return "#%02x%02x%02x" % tuple(round(255 + (e - 255) * t) for e in end)


def _ink(value: float) -> str:
    return "#fff" if value > 0.55 else "#111"


def esc(text: Any) -> str:
    """HTML-escape, also braces and dollars (the Gradio HTML component treats ${...} and {{...}} as templates)."""
    return html.escape(str(text), quote=True).replace("$", "&#36;").replace("{", "&#123;").replace("}", "&#125;")


def _show(piece: str, limit: Optional[int] = None) -> str:
    """A token's text for labels: newlines, tabs and edge spaces made visible."""
    shown = piece.replace("\n", "↵").replace("\t", "⇥")
    stripped = shown.strip(" ")
    if stripped != shown:
        left, right = len(shown) - len(shown.lstrip(" ")), len(shown) - len(shown.rstrip(" "))
        shown = "·" * left + stripped + "·" * right if stripped else "·" * len(shown)
    if limit and len(shown) > limit:
        shown = shown[:limit - 1] + "…"
    return shown


def _view(title: str, body: str, subtitle: str = "", view: str = "") -> str:
    sub = f'<p class="trl-sub">{subtitle}</p>' if subtitle else ""
    return f'{CSS}<div class="trl-view" data-view="{esc(view)}"><h4>{esc(title)}</h4>{sub}{body}</div>'


def empty_view(title: str, message: str, view: str = "") -> str:
    return _view(title, f'<p class="trl-empty">{esc(message)}</p>', view=view)


def expert_legend(num_experts: int) -> str:
    items = "".join(f'<span><span class="sw" style="background:{expert_color(e, num_experts)}"></span>expert {e}</span>'
                    for e in range(num_experts))
    return f'<div class="trl-legend">{items}</div>'


def _weights_line(row: Sequence[float]) -> str:
    return " · ".join(f"E{e} {w:.2f}" for e, w in enumerate(row))


def render_tokens(routing: Routing, layer: str = ALL, module: str = ALL) -> str:
    """The text with every token coloured by its top expert (shade: how sure the router is); hover shows
    the token's weights. Generated tokens are outlined; tokens not yet routed are grey."""
    title = "Tokens by top expert"
    num_experts = routing.num_experts
    data = None
    if routing.token_routed:
        try:
            data = token_view_data(routing, layer, module)
        except SpaceError as error:
            return empty_view(title, str(error), "tokens")
    chosen = routing.chosen_expert
    most = 1.0  # the most decided token's sureness: shades are relative to it
    if data is not None and data["top_weight"] and num_experts > 1:
        most = max(max((w - 1 / num_experts) / (1 - 1 / num_experts) for w in data["top_weight"]), 1e-6)
    spans = []
    for t, piece in enumerate(routing.tokens):
        shown = piece if piece else "∅"
        if piece.endswith("\n"):
            shown = piece[:-1] + "↵\n"
        classes = ["trl-tok"]
        if routing.special[t] if t < len(routing.special) else False:
            classes.append("trl-special")
        if t >= routing.prompt_length:
            classes.append("trl-gen")
        where = f"token {t}{' (generated)' if t >= routing.prompt_length else ''}: {piece!r}"
        style, tip = "", where
        if data is not None and t < len(data["top"]):
            top, weight = data["top"][t], data["top_weight"][t]
            sureness = (weight - 1 / num_experts) / (1 - 1 / num_experts) if num_experts > 1 else 1.0
            color = expert_color(top, num_experts)
            style = (f"background:{_rgba(color, 0.15 + 0.6 * max(0.0, min(1.0, sureness / most)))};"
                     f"box-shadow:inset 0 -3px 0 {color}")
            tip = (f"{where}\ntop expert {top} (weight {weight:.3f})\n{_weights_line(data['mean'][t].tolist())}"
                   f"\nentropy {data['entropy'][t]:.3f} nats")
            spans.append(f'<span class="{" ".join(classes)}" data-expert="{top}" style="{style}" '
                         f'title="{esc(tip)}">{esc(shown)}</span>')
            continue
        if data is not None:
            classes.append("trl-pending")
            tip = f"{where}\nrouted when the model reads it (next step)"
        elif chosen is not None:
            color = expert_color(chosen, num_experts)
            style = f"background:{_rgba(color, 0.35)};box-shadow:inset 0 -3px 0 {color}"
            tip = f"{where}\nwhole sequence → expert {chosen} (p = {routing.sequence_probs[chosen]:.3f})"
            spans.append(f'<span class="{" ".join(classes)}" data-expert="{chosen}" style="{style}" '
                         f'title="{esc(tip)}">{esc(shown)}</span>')
            continue
        spans.append(f'<span class="{" ".join(classes)}" title="{esc(tip)}">{esc(shown)}</span>')
    if data is not None:
        best = max(data["top_weight"]) if data["top_weight"] else 0.0
        subtitle = (f"{esc(selection_label(layer, module))} · colour: top expert · shade: its weight, full at the "
                    f"most decided token ({best:.2f}), pale = undecided · hover a token for its weights")
        legend = expert_legend(num_experts)
    elif chosen is not None:
        subtitle = f"TT-LoRA MoE: the whole sequence goes to expert {chosen}"
        legend = expert_legend(num_experts)
    else:
        subtitle, legend = "no routing: tokens only", ""
    if routing.generated:
        subtitle += " · dashed outline: generated"
    body = f'{legend}<div class="trl-tokens">{"".join(spans)}</div>'
    return _view(title, body, subtitle, "tokens")


def render_token_heatmap(routing: Routing, layer: str = ALL, module: str = ALL) -> str:
    """tokens x experts: the routing weight of every token (rows) to every expert (columns)."""
    title = "Routing weights: tokens × experts"
    if not routing.token_routed:
        return empty_view(title, "No token routing for this model.", "token-heatmap")
    try:
        data = token_view_data(routing, layer, module)
    except SpaceError as error:
        return empty_view(title, str(error), "token-heatmap")
    mean = data["mean"].tolist()
    num_experts = routing.num_experts
    # Diverging around the uniform weight 1/E, full colour at the largest deviation shown: a router a few
    # percent from uniform is as readable as a decided one (a 0..max scale would leave it all one shade).
    uniform = 1.0 / max(1, num_experts)
    span = max((abs(w - uniform) for row in mean for w in row), default=0.0) or 1e-6
    label_w, cell_w, row_h, head_h = 120, max(36, min(64, 360 // max(1, num_experts))), 18, 22
    width, height = label_w + cell_w * num_experts + 4, head_h + row_h * len(mean) + 4
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="ui-monospace,Menlo,Consolas,monospace" font-size="11" data-rows="{len(mean)}">']
    for e in range(num_experts):
        x = label_w + e * cell_w
        parts.append(f'<rect x="{x + 2}" y="4" width="{cell_w - 4}" height="4" fill="{expert_color(e, num_experts)}"/>')
        parts.append(f'<text x="{x + cell_w / 2}" y="{head_h - 4}" text-anchor="middle" fill="#1f2328">E{e}</text>')
    show_numbers = cell_w >= 36
    for t, row in enumerate(mean):
        y = head_h + t * row_h
        piece = routing.tokens[t] if t < len(routing.tokens) else ""
        gen = t >= routing.prompt_length
        parts.append(f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" fill="{"#8250df" if gen else "#1f2328"}">'
                     f'{esc(_show(piece, 14))}</text>')
        for e, w in enumerate(row):
            x = label_w + e * cell_w
            parts.append(f'<rect class="trl-cell" x="{x}" y="{y}" width="{cell_w - 1}" height="{row_h - 1}" '
                         f'fill="{diverging(w, uniform, span)}"><title>{esc(f"token {t} {piece!r} · expert {e}: {w:.3f}")}'
                         "</title></rect>")
            if show_numbers:
                parts.append(f'<text x="{x + cell_w / 2}" y="{y + 13}" text-anchor="middle" '
                             f'fill="{_ink(abs(w - uniform) / span)}" '
                             f'pointer-events="none">{w:.2f}</text>')
        if gen and t == routing.prompt_length:
            parts.append(f'<line x1="0" x2="{width}" y1="{y}" y2="{y}" stroke="#8250df" stroke-dasharray="4 3"/>')
    parts.append("</svg>")
    subtitle = (f"{esc(selection_label(layer, module))} · white = the uniform 1/{num_experts} = {uniform:.3f}, red above, "
                f"blue below, full colour at ±{span:.3f} (the largest deviation shown) · generated tokens in purple")
    return _view(title, f'<div class="trl-scroll">{"".join(parts)}</div>', subtitle, "token-heatmap")


def render_layer_heatmap(routing: Routing, module: str = ALL, layer: str = ALL) -> str:
    """layers x experts: each expert's mean load over the text, per layer (red: above the uniform share
    1/E, blue: below). The chosen layer is outlined."""
    title = "Expert load per layer: layers × experts"
    if not routing.token_routed:
        return empty_view(title, "No token routing for this model.", "layer-heatmap")
    loads = layer_load(routing, module)
    if not loads:
        return empty_view(title, f"No routed module matches {module}.", "layer-heatmap")
    num_experts = routing.num_experts
    uniform = 1.0 / num_experts
    span = max(max(abs(v - uniform) for load in loads.values() for v in load.tolist()), 1e-6)
    label_w, cell_w, row_h, head_h = 64, max(40, min(64, 360 // max(1, num_experts))), 18, 22
    width, height = label_w + cell_w * num_experts + 4, head_h + row_h * len(loads) + 4
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="ui-monospace,Menlo,Consolas,monospace" font-size="11" data-rows="{len(loads)}">']
    for e in range(num_experts):
        x = label_w + e * cell_w
        parts.append(f'<rect x="{x + 2}" y="4" width="{cell_w - 4}" height="4" fill="{expert_color(e, num_experts)}"/>')
        parts.append(f'<text x="{x + cell_w / 2}" y="{head_h - 4}" text-anchor="middle" fill="#1f2328">E{e}</text>')
    for row, (layer_index, load) in enumerate(loads.items()):
        y = head_h + row * row_h
        parts.append(f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" fill="#1f2328">'
                     f"layer {layer_index}</text>")
        for e, v in enumerate(load.tolist()):
            x = label_w + e * cell_w
            fill = diverging(v, uniform, span)
            strength = abs(v - uniform) / span
            parts.append(f'<rect class="trl-cell" x="{x}" y="{y}" width="{cell_w - 1}" height="{row_h - 1}" '
                         f'fill="{fill}">'
                         f'<title>{esc(f"layer {layer_index} · expert {e}: load {v:.3f} (uniform {uniform:.3f})")}'
                         f'</title></rect>')
            parts.append(f'<text x="{x + cell_w / 2}" y="{y + 13}" text-anchor="middle" '
                         f'fill="{"#fff" if strength > 0.6 else "#111"}" pointer-events="none">{v:.2f}</text>')
        if str(layer) == str(layer_index):
            parts.append(f'<rect x="{label_w - 1}" y="{y - 1}" width="{cell_w * num_experts + 1}" height="{row_h + 1}" '
                         'fill="none" stroke="#1f2328" stroke-width="2"/>')
    parts.append("</svg>")
    what = "all modules (mean)" if module in (ALL, None, "") else module
    subtitle = (f"{esc(what)} · mean routing weight over the text · red: above the uniform share "
                f"{uniform:.2f}, blue: below (full colour at ±{span:.2f})")
    return _view(title, f'<div class="trl-scroll">{"".join(parts)}</div>', subtitle, "layer-heatmap")


def _entropy_svg(routing: Routing, data: Dict[str, Any]) -> str:
    entropy = data["entropy"]
    num_experts = routing.num_experts
    top_value = math.log(num_experts) if num_experts > 1 else 1.0
    count = len(entropy)
    bar_w = max(3.0, min(16.0, 640.0 / max(1, count)))
    left, plot_h, top_pad, bottom = 40, 120, 14, 18
    width, height = left + bar_w * count + 8, top_pad + plot_h + bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" font-size="10" '
             f'font-family="ui-sans-serif,system-ui,sans-serif" data-bars="{count}">']
    for frac, label in ((0.0, "0"), (1.0, f"{top_value:.2f}")):
        y = top_pad + plot_h * (1 - frac)
        parts.append(f'<text x="{left - 4}" y="{y + 3}" text-anchor="end" fill="#57606a">{label}</text>')
    y_uniform = top_pad
    parts.append(f'<line x1="{left}" x2="{width}" y1="{y_uniform}" y2="{y_uniform}" stroke="#8c959f" '
                 f'stroke-dasharray="4 3"><title>ln E = {top_value:.3f}: uniform routing</title></line>')
    parts.append(f'<text x="{left + 2}" y="{y_uniform - 3}" fill="#57606a">uniform (ln E)</text>')
    parts.append(f'<line x1="{left}" x2="{width}" y1="{top_pad + plot_h}" y2="{top_pad + plot_h}" stroke="#d0d7de"/>')
    for t, h in enumerate(entropy):
        bar = plot_h * max(0.0, min(1.0, h / top_value))
        x = left + t * bar_w
        piece = routing.tokens[t] if t < len(routing.tokens) else ""
        color = expert_color(data["top"][t], num_experts)
        parts.append(f'<rect class="trl-bar" x="{x:.1f}" y="{top_pad + plot_h - bar:.1f}" '
                     f'width="{max(1.0, bar_w - 1):.1f}" '
                     f'height="{bar:.1f}" fill="{color}"><title>{esc(f"token {t} {piece!r}: entropy {h:.3f} nats")}'
                     "</title></rect>")
    parts.append(f'<text x="{left}" y="{height - 4}" fill="#57606a">tokens →</text></svg>')
    return "".join(parts)


def _load_bars_svg(load: List[float], num_experts: int) -> str:
    uniform = 1.0 / num_experts
    scale = max(max(load), uniform) * 1.15
    label_w, bar_max, row_h = 64, 260, 20
    width, height = label_w + bar_max + 60, row_h * num_experts + 18
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11" '
             f'font-family="ui-sans-serif,system-ui,sans-serif" data-bars="{num_experts}">']
    for e, v in enumerate(load):
        y = 4 + e * row_h
        w = bar_max * v / scale
        parts.append(f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" fill="#1f2328">expert {e}</text>')
        parts.append(f'<rect class="trl-bar" x="{label_w}" y="{y}" width="{w:.1f}" height="{row_h - 5}" '
                     f'fill="{expert_color(e, num_experts)}"><title>{esc(f"expert {e}: load {v:.3f}")}</title></rect>')
        parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 12}" fill="#1f2328">{100 * v:.1f}%</text>')
    x_uniform = label_w + bar_max * uniform / scale
    parts.append(f'<line x1="{x_uniform:.1f}" x2="{x_uniform:.1f}" y1="0" y2="{height - 14}" stroke="#57606a" '
                 f'stroke-dasharray="4 3"><title>uniform share 1/E = {uniform:.3f}</title></line>')
    parts.append(f'<text x="{x_uniform:.1f}" y="{height - 3}" text-anchor="middle" fill="#57606a">1/E</text></svg>')
    return "".join(parts)


def render_stats(routing: Routing, layer: str = ALL, module: str = ALL) -> str:
    """Per-token routing entropy, expert load bars and the balance figures of the selection."""
    title = "Entropy, expert load and balance"
    if not routing.token_routed:
        if routing.sequence_probs is not None:
            return empty_view(title, "TT-LoRA MoE: no per-token routing; see Expert per sequence.", "stats")
        return empty_view(title, "No routing for this model.", "stats")
    try:
        data = token_view_data(routing, layer, module)
        stacked = selection_weights(routing, layer, module)
    except SpaceError as error:
        return empty_view(title, str(error), "stats")
    summary = balance_summary(stacked)
    load = expert_load(stacked).tolist()
    rows = [("mean entropy", f"{summary['mean_entropy']:.3f} nats"),
            ("normalised entropy", f"{summary['normalized_entropy']:.3f}  (1 = uniform)"),
            ("load CV", f"{summary['load_cv']:.3f}  (0 = balanced)"),
            ("max share", f"{summary['max_share']:.3f}  (uniform {1 / routing.num_experts:.3f})"),
            ("dead experts", f"{summary['dead_experts']}  (load < 2%)"),
            ("tokens", f"{stacked.shape[1]}"), ("modules", f"{stacked.shape[0]}")]
    table = "".join(f'<tr><td>{esc(k)}</td><td class="v" data-stat="{esc(k)}">{esc(v)}</td></tr>' for k, v in rows)
    body = (f'<div class="trl-sub">per-token routing entropy (bar colour: top expert)</div>'
            f'<div class="trl-scroll" style="max-height:none">{_entropy_svg(routing, data)}</div>'
            '<div class="trl-flex"><div><div class="trl-sub">expert load</div>'
            f"{_load_bars_svg(load, routing.num_experts)}"
            f'</div><div><div class="trl-sub">balance</div><table class="trl-table" data-view="balance">{table}</table>'
            "</div></div>")
    return _view(title, body, esc(selection_label(layer, module)), "stats")


def render_sequence_router(routing: Routing) -> str:
    """TT-LoRA MoE: the expert chosen for the whole sequence and the router's probabilities."""
    title = "Expert per sequence (TT-LoRA MoE)"
    if routing.sequence_probs is None:
        if routing.token_routed:
            return empty_view(title, "This model routes every token (see above); per-sequence routing is "
                              "TT-LoRA MoE's.", "sequence")
        return empty_view(title, "No per-sequence router in this model.", "sequence")
    probs = routing.sequence_probs
    chosen = routing.chosen_expert
    bars = _load_bars_svg(probs, len(probs))
    body = (f'<p style="font-size:14px;margin:4px 0 8px 0" data-chosen="{chosen}">Chosen expert: '
            f'<b style="color:{expert_color(chosen, len(probs))}">expert {chosen}</b> (p = {probs[chosen]:.3f}), '
            "serving every token of the sequence.</p>"
            f'<div class="trl-sub">router probabilities (softmax of the router logits on the '
            f'{"prompt" if routing.generated else "text"}; the router reads the frozen base model\'s last-token state)'
            f"</div>{bars}")
    return _view(title, body, "", "sequence")


def render_status(routing: Optional[Routing] = None, loaded: Optional[LoadedModel] = None,
                  error: Optional[str] = None) -> str:
    """Markdown for the status line: what was read, and any note or error."""
    lines = []
    if error:
        lines.append(f"**⚠ {error}**")
    if routing is not None:
        kind = loaded.kind if loaded is not None else (routing.method or "no adapter")
        head = f"**{model_label(routing.model_id)}** · {kind} · {len(routing.tokens)} tokens"
        if routing.token_routed:
            layers = sorted(set(routing.layers))
            head += f" · {len(routing.module_names)} routed modules in {len(layers)} layers"
        if routing.generated:
            new = len(routing.tokens) - routing.prompt_length
            head += f" · {new} generated" + ("" if routing.done else " (generating…)")
        lines.append(head)
        lines.extend(f"- {note}" for note in routing.notes)
    return "\n".join(lines)


def render_all(routing: Routing, layer: str = ALL, module: str = ALL) -> Tuple[str, str, str, str, str]:
    """(tokens, token heatmap, layer heatmap, stats, sequence router) HTML for one selection."""
    return (render_tokens(routing, layer, module), render_token_heatmap(routing, layer, module),
            render_layer_heatmap(routing, module, layer), render_stats(routing, layer, module),
            render_sequence_router(routing))


def render_compare_column(routing: Routing, loaded: Optional[LoadedModel] = None) -> str:
    """One model's column in the side-by-side view (aggregated over the whole model)."""
    kind = loaded.kind if loaded is not None else (routing.method or "")
    header = (f'{CSS}<div class="trl-view" data-view="compare-header"><h4>{esc(model_label(routing.model_id))}</h4>'
              f'<p class="trl-sub">{esc(kind)} · {len(routing.tokens)} tokens</p>'
              + "".join(f'<p class="trl-sub">{esc(n.replace("*", "").replace("`", ""))}</p>' for n in routing.notes)
              + "</div>")
    parts = [header, render_tokens(routing)]
    if routing.token_routed:
        parts += [render_layer_heatmap(routing), render_stats(routing)]
    elif routing.sequence_probs is not None:
        parts.append(render_sequence_router(routing))
    return "".join(parts)
