"""Loading the Space's models: from_pretrained with the model's own code, what kind of adapter it is,
how many tokens it reads, and a small cache of the last models used.

A model is a local folder or a Hub repo id (resolved against $HF_ENDPOINT); talklora_hub models bring
their code (trust_remote_code), so loading needs only torch and transformers.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from .errors import SpaceError

MAX_TOKENS_ENV = "TALKLORA_SPACE_MAX_TOKENS"      # cap on tokens read per request (CPU Spaces)
MAX_LOADED_ENV = "TALKLORA_SPACE_MAX_LOADED"      # models kept in memory at once
DEFAULT_MAX_TOKENS = 512
DEFAULT_MAX_LOADED = 3


def model_label(model_id: str) -> str:
    """A local folder shows as its name (the path stays the value); a repo id as itself."""
    if os.path.isdir(model_id):
        return f"{os.path.basename(os.path.normpath(model_id))} (local)"
    return model_id


@dataclass
class LoadedModel:
    """A model ready to read text. method is None for a model that is not a talklora_hub adapter;
    max_tokens: the most tokens one request reads, limit_reason: why (context length or the Space's cap);
    label and routing ("none" | "token" | "sequence"): what the model's own code says (method_info), so the
    Space keeps no table of methods and shows a new method's routing as soon as a model brings it."""

    model_id: str
    model: Any
    tokenizer: Any
    method: Optional[str]
    num_experts: int
    max_tokens: int
    limit_reason: str
    label: str = ""
    routing: str = "none"
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # one request at a time per model

    @property
    def token_routed(self) -> bool:
        return self.method is not None and self.routing == "token"

    @property
    def sequence_routed(self) -> bool:
        return self.method is not None and self.routing == "sequence"

    @property
    def kind(self) -> str:
        label = self.label or self.method
        if self.method is None:
            return "not a talklora_hub model"
        if self.sequence_routed:
            return f"{label} MoE · {self.num_experts} experts, one per sequence"
        if self.token_routed:
            return f"{label} · {self.num_experts} experts per token"
        return f"{label} · static update, no routing"


def method_info(model: Any, method: Optional[str]) -> dict:
    """{"label", "routing"} from the model's own code: its method_info(), or for a model saved by an older
    talklora_hub (no method_info) what its routing hooks show."""
    if method is None:
        return {"label": "", "routing": "none"}
    if hasattr(model, "method_info"):
        info = model.method_info()
        return {"label": info["label"], "routing": info["routing"]}
    if getattr(model, "sequence_router", None) is not None:
        routing = "sequence"
    elif hasattr(model, "routed_module_names") and model.routed_module_names():
        routing = "token"
    else:
        routing = "none"
    return {"label": method, "routing": routing}


def _hub_endpoint() -> str:
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT
    except Exception:
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def _load_error(model_id: str, error: Exception) -> SpaceError:
    """Turns a loading failure into a message that says which case it is (matched by class name and text:
    huggingface_hub and transformers raise many types, and wrap them)."""
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
    return LoadedModel(model_id, model, tokenizer, method, num_experts, limit, reason,
                       **method_info(model, method))


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
