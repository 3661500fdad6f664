"""transformers models that wrap any base architecture with a mixture-of-LoRA-experts adapter.

TalkLoRAModel (bare), TalkLoRAForCausalLM (with generate()) and TalkLoRAForSequenceClassification
build the standard transformers model recorded in the config, inject the adapter, and add routing
outputs. save_pretrained writes safetensors, a config.json whose auto_map points at the files of
this folder, and copies those files, so `AutoModel*.from_pretrained(path, trust_remote_code=True)`
works where only torch, transformers and safetensors are installed.

Part of the bundle that travels inside every saved model.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, GenerationMixin,
                          PreTrainedModel)
from transformers.utils import ModelOutput

from .adapter_base import AdaptedLinear, SharedAdapterState, adapter_layers
from .adapter_settings import AdapterSettings
from .configuration_talklora import TalkLoRAConfig
from .injection import inject_adapters, mark_trainable, merge_adapters
from .routing import RoutingTrace
from .sequence_router import SequenceRouter

BUNDLE_DIR = Path(__file__).resolve().parent


@dataclass
class TalkLoRAModelOutput(ModelOutput):
    """The base model's outputs plus routing.

    router_logits / routing_weights: one (batch, seq, E) tensor per routed module, in execution
    order, named by router_module_names (when output_router_logits=True); aux_loss: the mean
    load-balancing loss over routed modules; sequence_router_logits: (batch, E) for a TT-LoRA MoE.
    """

    last_hidden_state: Optional[torch.Tensor] = None
    pooler_output: Optional[torch.Tensor] = None
    past_key_values: Optional[Any] = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None
    aux_loss: Optional[torch.Tensor] = None
    router_logits: Optional[Tuple[torch.Tensor, ...]] = None
    routing_weights: Optional[Tuple[torch.Tensor, ...]] = None
    router_module_names: Optional[Tuple[str, ...]] = None
    sequence_router_logits: Optional[torch.Tensor] = None


@dataclass
class TalkLoRAHeadOutput(ModelOutput):
    """A head's outputs (causal LM or classification): loss includes router_aux_loss_coef * aux_loss."""

    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None
    past_key_values: Optional[Any] = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None
    aux_loss: Optional[torch.Tensor] = None
    router_logits: Optional[Tuple[torch.Tensor, ...]] = None
    routing_weights: Optional[Tuple[torch.Tensor, ...]] = None
    router_module_names: Optional[Tuple[str, ...]] = None
    sequence_router_logits: Optional[torch.Tensor] = None


class TalkLoRAPreTrainedModel(PreTrainedModel):
    """Shared machinery; subclasses set `base_auto_class` and `output_class`."""

    config_class = TalkLoRAConfig
    base_model_prefix = "base"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    base_auto_class = AutoModel
    output_class = TalkLoRAModelOutput

    def __init__(self, config: TalkLoRAConfig, base_model: Optional[nn.Module] = None):
        super().__init__(config)
        settings = config.adapter_settings
        self.adapter_shared = SharedAdapterState()  # first: injection registers shared banks here
        inner = base_model if base_model is not None else self.base_auto_class.from_config(config.base_config)
        self.base = self._hold(inner)
        inject_adapters(self.base, settings, self.adapter_shared, config.base_config.model_type, name_prefix="base")
        text = config.get_text_config()
        self.sequence_router = (SequenceRouter(text.hidden_size, settings.num_experts)
                                if settings.is_sequence_routed else None)
        mark_trainable(self, ["base." + p for p in self._extra_trainable(inner, settings)] +
                       (["sequence_router"] if self.sequence_router is not None else []))
        self.post_init()
        if getattr(inner, "generation_config", None) is not None and self.can_generate():
            self.generation_config = inner.generation_config

    # ---- structure ------------------------------------------------------------------------
    def _hold(self, inner: nn.Module) -> nn.Module:
        """The module registered as `self.base`; heads register the base model itself."""
        return inner

    def _extra_trainable(self, inner: nn.Module, settings: AdapterSettings) -> List[str]:
        return list(settings.modules_to_save or [])

    @property
    def inner_model(self) -> nn.Module:
        """The wrapped standard transformers model (with adapters injected)."""
        return self.base

    @property
    def adapter_settings(self) -> AdapterSettings:
        return self.config.adapter_settings

    def get_input_embeddings(self) -> nn.Module:
        return self.inner_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.inner_model.set_input_embeddings(value)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (SharedAdapterState, SequenceRouter)):
            module.reset_parameters()
        elif isinstance(module, AdaptedLinear):
            module.reset_adapter_parameters()

    def initialize_weights(self) -> None:
        super().initialize_weights()
        # The adapter layers sit inside the base model, whose own init does not know them; they
        # initialise only tensors the loader did not fill.
        for layer in adapter_layers(self).values():
            layer.reset_adapter_parameters()

    @classmethod
    def from_base(cls, base: Union[str, os.PathLike, PreTrainedModel], adapter: Union[AdapterSettings, Dict[str, Any]],
                  revision: Optional[str] = None, **load_kwargs) -> "TalkLoRAPreTrainedModel":
        """Wraps a pretrained model (an object, a local path or a Hub repo id) with a fresh adapter,
        ready to train: the base is frozen, the adapter (and a classification head) trainable."""
        name = None
        if isinstance(base, (str, os.PathLike)):
            name = str(base)
            base = cls.base_auto_class.from_pretrained(name, revision=revision, **load_kwargs)
        elif getattr(base, "name_or_path", None):
            name = str(base.name_or_path)
        if cls.base_auto_class is AutoModel and hasattr(base, "base_model") and base.base_model is not base:
            base = base.base_model  # a head model was given to the bare wrapper: keep its backbone
        settings = adapter if isinstance(adapter, AdapterSettings) else AdapterSettings(**adapter)
        config = TalkLoRAConfig.from_base_config(base.config, settings, base_model_name_or_path=name,
                                                 base_model_revision=revision)
        config.dtype = base.dtype
        return cls(config, base_model=base)

    # ---- parameters -----------------------------------------------------------------------
    def adapter_state_dict(self) -> Dict[str, torch.Tensor]:
        """Only the trainable tensors (adapters, shared banks, router, trained heads), by full name."""
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def parameter_counts(self) -> Dict[str, int]:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"trainable": trainable, "total": sum(p.numel() for p in self.parameters())}

    def merge_and_unload(self) -> PreTrainedModel:
        """Folds a static adapter (LoRA, a single TT-LoRA) into the base weights and returns the plain
        base-architecture model, which saves and loads without remote code."""
        settings = self.adapter_settings
        if not settings.is_mergeable:
            kind = "sequence-routed TT-LoRA MoE" if settings.is_sequence_routed else settings.method
            raise ValueError(
                f"A {kind} adapter cannot be merged into the base weights: the update depends on the input "
                "(routing weights per token, or an expert chosen per sequence), so no single weight matrix "
                "equals it. Save the full model with save_pretrained instead.")
        return merge_adapters(self.inner_model)

    # ---- routing --------------------------------------------------------------------------
    def routed_module_names(self) -> List[str]:
        """Dotted names of the token-routed adapter layers, in module order."""
        if not self.adapter_settings.is_routed:
            return []
        return [layer.module_name for layer in adapter_layers(self).values()]

    @contextlib.contextmanager
    def trace_routing(self) -> Iterator[RoutingTrace]:
        """Records the routing of every forward pass in the block (e.g. each step of generate())."""
        trace = RoutingTrace()
        recorder = self.adapter_shared.recorder
        recorder.traces.append(trace)
        try:
            yield trace
        finally:
            recorder.traces.remove(trace)

    @torch.no_grad()
    def route_sequences(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                        inputs_embeds: Optional[torch.Tensor] = None) -> torch.Tensor:
        """TT-LoRA MoE: the router's logits (batch, E) for these sequences (argmax: the expert that would
        serve each), from one pass of the bare base model; changes no state."""
        if self.sequence_router is None:
            raise ValueError("route_sequences needs a TT-LoRA MoE (method='ttlora', num_experts > 1); this model "
                             f"is method={self.adapter_settings.method!r} with {self.adapter_settings.num_experts} experts.")
        kept = self.adapter_shared.sequence_experts
        args = {k: v for k, v in dict(input_ids=input_ids, attention_mask=attention_mask,
                                      inputs_embeds=inputs_embeds).items() if v is not None}
        try:
            return self._choose_sequence_experts(args)
        finally:
            self.adapter_shared.sequence_experts = kept

    def _choose_sequence_experts(self, kwargs: Dict[str, Any]) -> Optional[torch.Tensor]:
        """TT-LoRA MoE: a first pass of the bare base model (adapters off) feeds the router, whose top-1
        expert then serves the whole sequence. In generation the choice is made on the prompt and
        held for every new token."""
        past = kwargs.get("past_key_values")
        if past is not None and hasattr(past, "get_seq_length") and past.get_seq_length() > 0:
            return None  # keep the experts chosen on the prompt
        backbone = self.inner_model.base_model if hasattr(self.inner_model, "base_model") else self.inner_model
        shared = self.adapter_shared
        backbone_args = {k: kwargs[k] for k in ("input_ids", "inputs_embeds", "attention_mask") if k in kwargs}
        shared.adapters_enabled = False
        try:
            with torch.no_grad():
                hidden = backbone(**backbone_args, use_cache=False).last_hidden_state
        finally:
            shared.adapters_enabled = True
        logits = self.sequence_router(hidden, kwargs.get("attention_mask"))
        shared.sequence_experts = logits.argmax(dim=-1)
        return logits

    def _run_with_routing(self, call_inner, output_router_logits: Optional[bool], labels_given: bool, **kwargs):
        settings = self.adapter_settings
        shared = self.adapter_shared
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        sequence_logits = self._choose_sequence_experts(kwargs) if self.sequence_router is not None else None
        keep = bool(output_router_logits) and settings.is_routed
        need_aux = settings.is_routed and (keep or (self.training and settings.router_aux_loss_coef > 0))
        token_mask = self._current_token_mask(kwargs)
        shared.recorder.begin(keep, need_aux, token_mask)
        try:
            inner_out = call_inner(**kwargs)
        finally:
            records, aux = shared.recorder.end()
        fields = {k: v for k, v in inner_out.items() if k in self.output_class.__dataclass_fields__}
        if labels_given and aux is not None and settings.router_aux_loss_coef > 0 and fields.get("loss") is not None:
            fields["loss"] = fields["loss"] + settings.router_aux_loss_coef * aux.to(fields["loss"].dtype)
        if keep:
            fields.update(router_logits=tuple(r.logits for r in records),
                          routing_weights=tuple(r.weights for r in records),
                          router_module_names=tuple(r.name for r in records))
        return self.output_class(**fields, aux_loss=aux, sequence_router_logits=sequence_logits)

    @staticmethod
    def _current_token_mask(kwargs: Dict[str, Any]) -> Optional[torch.Tensor]:
        """(batch * new tokens,) True for real tokens: the attention mask's columns of this step."""
        mask = kwargs.get("attention_mask")
        ids = kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        if mask is None or ids is None or mask.dim() != 2:
            return None
        return mask[:, -ids.shape[1]:].bool().reshape(-1)

    # ---- saving ---------------------------------------------------------------------------
    def save_pretrained(self, save_directory: Union[str, os.PathLike], *args, push_to_hub: bool = False, **kwargs):
        """Writes weights (safetensors), config and this bundle's code into save_directory, atomically:
        everything is written to a sibling temporary folder first and then renamed into place, so a
        crash never leaves a half-written model behind."""
        if push_to_hub:
            raise ValueError("`push_to_hub` is not supported in save_pretrained; call model.push_to_hub(repo_id) "
                             "or talklora_hub's push, which upload a complete snapshot in one commit.")
        with staged_directory(save_directory) as staging:
            super().save_pretrained(staging, *args, **kwargs)
            for source in BUNDLE_DIR.glob("*.py"):
                if source.name != "__init__.py":
                    shutil.copyfile(source, staging / source.name)


@contextlib.contextmanager
def staged_directory(save_directory: Union[str, os.PathLike]) -> Iterator[Path]:
    """Yields an empty sibling folder to write into; when the block ends without error, it replaces
    save_directory by renames only, so readers see the old folder or the new one, never a half-written one."""
    target = Path(save_directory).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        # mkdtemp makes a private (0700) folder; a saved model is meant to be shared like any other folder.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        _replace_directory(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace_directory(staging: Path, target: Path) -> None:
    """Moves staging to target with renames only (atomic on one filesystem)."""
    if target.exists():
        retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)


class _BackboneHolder(nn.Module):
    """Holds a bare backbone under its usual attribute name (e.g. `model` for Llama), so the bare model's
    tensor names equal the causal LM's ("base.model.layers.0...") and either loads the other's weights."""

    def __init__(self, backbone: PreTrainedModel):
        super().__init__()
        self.prefix = backbone.base_model_prefix or "model"
        self.add_module(self.prefix, backbone)

    @property
    def backbone(self) -> PreTrainedModel:
        return getattr(self, self.prefix)


class TalkLoRAModel(TalkLoRAPreTrainedModel):
    """The bare adapted backbone: returns last_hidden_state (plus routing)."""

    base_auto_class = AutoModel
    output_class = TalkLoRAModelOutput

    def _hold(self, inner: nn.Module) -> nn.Module:
        return _BackboneHolder(inner)

    @property
    def inner_model(self) -> nn.Module:
        return self.base.backbone

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, use_cache=None, output_router_logits=None, **kwargs) -> TalkLoRAModelOutput:
        return self._run_with_routing(self.inner_model, output_router_logits, False, input_ids=input_ids,
                                      attention_mask=attention_mask, position_ids=position_ids,
                                      past_key_values=past_key_values, inputs_embeds=inputs_embeds,
                                      use_cache=use_cache, **kwargs)


class TalkLoRAForCausalLM(TalkLoRAPreTrainedModel, GenerationMixin):
    """Causal LM with the adapter; generate() works with the KV cache."""

    base_auto_class = AutoModelForCausalLM
    output_class = TalkLoRAHeadOutput

    def get_output_embeddings(self) -> nn.Module:
        return self.base.get_output_embeddings()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, output_router_logits=None,
                **kwargs) -> TalkLoRAHeadOutput:
        return self._run_with_routing(self.base, output_router_logits, labels is not None, input_ids=input_ids,
                                      attention_mask=attention_mask, position_ids=position_ids,
                                      past_key_values=past_key_values, inputs_embeds=inputs_embeds,
                                      labels=labels, use_cache=use_cache, **kwargs)


class TalkLoRAForSequenceClassification(TalkLoRAPreTrainedModel):
    """Sequence classification with the adapter; the classification head trains with it."""

    base_auto_class = AutoModelForSequenceClassification
    output_class = TalkLoRAHeadOutput

    def _extra_trainable(self, inner: nn.Module, settings: AdapterSettings) -> List[str]:
        # Everything the head adds on top of the backbone (e.g. `score`, `classifier`) trains.
        head = [name for name, _ in inner.named_children() if name != inner.base_model_prefix]
        return head + super()._extra_trainable(inner, settings)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, labels=None,
                output_router_logits=None, **kwargs) -> TalkLoRAHeadOutput:
        return self._run_with_routing(self.base, output_router_logits, labels is not None, input_ids=input_ids,
                                      attention_mask=attention_mask, position_ids=position_ids,
                                      inputs_embeds=inputs_embeds, labels=labels, **kwargs)


__all__ = ["TalkLoRAModel", "TalkLoRAForCausalLM", "TalkLoRAForSequenceClassification", "TalkLoRAPreTrainedModel"]
