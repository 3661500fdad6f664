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
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

import torch
import torch.nn as nn
from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, GenerationMixin,
                          PreTrainedModel)

from .adapter_base import AdaptedLinear, SharedAdapterState, adapter_layers
from .adapter_settings import AdapterSettings, config_error
from .adapter_state import adapter_state_dict, adapter_tensor_names, count_parameters, set_adapter_trainable
from .configuration_talklora import TalkLoRAConfig
from .injection import inject_adapters, merge_adapters
from .methods import plugin_files
from .loading import (check_adapter_loaded, corrupt_weights_error, explain_weight_mismatch, hub_commit, hub_kwargs,
                      load_adapter_only, save_adapter_only)
from .saving import owned_by_model_save, recover_interrupted_save, staged_directory
from .outputs import CACHE_FIELD, SEQUENCE_ARGS_DOC, TalkLoRAHeadOutput, TalkLoRAModelOutput  # noqa: F401 (CACHE_FIELD re-exported)
from .routing import RoutingTrace
from .sequence_router import SEQUENCE_ROUTER_CE_WEIGHT, SequenceRouter
from .sequence_routing import SequenceRoutingMixin

BUNDLE_DIR = Path(__file__).resolve().parent

class TalkLoRAPreTrainedModel(SequenceRoutingMixin, PreTrainedModel):
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
        self.sequence_router = (SequenceRouter(text.hidden_size, settings.num_experts, settings.router_noise)
                                if settings.is_sequence_routed else None)
        # Full names of the base modules the adapter trains and carries (a classifier's head, modules_to_save).
        self.trained_module_prefixes = ["base." + p for p in self._extra_trainable(inner, settings)]
        self.set_adapter_trainable(True)
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
        # Parsed once per value of config.adapter, not on every forward: parsing validates every field (slow per
        # decoding step), and torch.compile cannot trace it (dataclasses.fields: a graph break in every forward).
        # Compiled code skips the check: a graph is specialised to its settings anyway.
        held = self.__dict__.get("_held_adapter_settings")
        if held is None or (not torch.compiler.is_compiling() and held[0] != repr(self.config.adapter)):
            held = (repr(self.config.adapter), self.config.adapter_settings)
            self.__dict__["_held_adapter_settings"] = held
        return held[1]

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
        ready to train: the base is frozen, the adapter (and a classification head) trainable. A Hub repo id is
        loaded at the commit its revision (default: main) resolves to, and that commit is recorded in the config,
        so an adapter-only save or push pins exactly the base it was trained on."""
        name = None
        if isinstance(base, (str, os.PathLike)):
            name = str(base)
            if not os.path.isdir(name):  # a Hub repo id: record the commit actually loaded (adapter-only saves pin it)
                hub = {k: load_kwargs[k] for k in ("cache_dir", "token", "local_files_only") if k in load_kwargs}
                revision = hub_commit(name, revision, **hub) or revision
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
    def adapter_tensor_names(self) -> List[str]:
        """Full names of what the adapter adds to the base (adapter layers' tensors, shared banks, the sequence
        router) and the base modules it trains (head, modules_to_save): by name, never by requires_grad."""
        return adapter_tensor_names(self, self.trained_module_prefixes)

    def adapter_state_dict(self) -> Dict[str, torch.Tensor]:
        """{full name: detached tensor} of the adapter: what an expert file or an adapter-only save holds."""
        return adapter_state_dict(self, self.trained_module_prefixes)

    def set_adapter_trainable(self, trainable: bool = True) -> None:
        """True: base frozen, adapter trainable (as after from_base). False: nothing trainable (inference)."""
        set_adapter_trainable(self, trainable, self.trained_module_prefixes)

    def parameter_counts(self) -> Dict[str, int]:
        """{"adapter": the adapter's parameters (by name), "trainable": requires_grad now, "total"}."""
        return count_parameters(self, self.trained_module_prefixes)

    def print_trainable_parameters(self) -> None:
        """One line, as peft users expect: trainable and total parameter counts and the trainable share."""
        counts = self.parameter_counts()
        share = 100.0 * counts["trainable"] / max(counts["total"], 1)  # peft's line: what requires grad now
        print(f"trainable params: {counts['trainable']:,d} || all params: {counts['total']:,d} || "
              f"trainable%: {share:.4f}")

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Inside the block every adapter layer runs its frozen base projection only, so the model computes
        what the base computes (no routing is recorded; a TT-LoRA MoE's router pass still runs, unused).
        Trained heads and modules_to_save are the model's own and stay: a classifier keeps its head."""
        shared = self.adapter_shared
        enabled = shared.adapters_enabled
        shared.adapters_enabled = False
        try:
            yield
        finally:
            shared.adapters_enabled = enabled

    def merge_and_unload(self) -> PreTrainedModel:
        """Folds a static adapter (LoRA, a single TT-LoRA) into the base weights and returns the plain
        base-architecture model, which saves and loads without remote code."""
        settings = self.adapter_settings
        if not settings.is_mergeable:
            kind = f"sequence-routed {settings.spec.label} MoE" if settings.is_sequence_routed else settings.method
            raise ValueError(
                f"A {kind} adapter cannot be merged into the base weights: the update depends on the input "
                "(routing weights per token, or an expert chosen per sequence), so no single weight matrix "
                "equals it. Save the full model with save_pretrained instead.")
        return merge_adapters(self.inner_model)

    def load_adapter(self, peft_model_id=None, *args, **kwargs):
        """transformers' PEFT integration wraps plain linear layers; this model's already hold a talklora_hub adapter."""
        raise ValueError(
            f"`load_adapter` adds a PEFT adapter to a plain transformers model, but this {type(self).__name__} already "
            f"carries a talklora_hub {self.adapter_settings.method} adapter in its linear layers, got "
            f"peft_model_id={peft_model_id!r}. Fix: import the PEFT LoRA as a talklora_hub model with "
            "talklora_hub.publish.peft_interop.import_peft(PEFT_DIR, base=BASE) (shell: talklora-hub peft import "
            "PEFT_DIR OUT_DIR --base BASE), or call load_adapter on the plain base model.")

    def add_adapter(self, *args, **kwargs):
        self.load_adapter(kwargs.get("adapter_name"))

    # ---- routing --------------------------------------------------------------------------
    def method_info(self) -> Dict[str, Any]:
        """What this model's own code says about its method, for readers that carry no method tables (the Space):
        {"method", "label", "title", "routing": "none" | "token" | "sequence", "num_experts"}."""
        settings = self.adapter_settings
        spec = settings.spec
        return {"method": settings.method, "label": spec.label, "title": spec.title, "routing": settings.routing,
                "num_experts": settings.num_experts}

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

    def _run_with_routing(self, call_inner, output_router_logits: Optional[bool], labels_given: bool,
                          sequence_experts: Optional[torch.Tensor] = None,
                          router_attention_mask: Optional[torch.Tensor] = None,
                          sequence_labels: Optional[torch.Tensor] = None,
                          sequence_router_ce_weight: Optional[float] = None, **kwargs):
        settings = self.adapter_settings
        shared = self.adapter_shared
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if self.sequence_router is None:
            given = [name for name, value in (("sequence_experts", sequence_experts),
                                              ("router_attention_mask", router_attention_mask),
                                              ("sequence_labels", sequence_labels)) if value is not None]
            if given:
                raise config_error(given[0], "only applies to a TT-LoRA MoE (method='ttlora', num_experts > 1)",
                                   f"method={settings.method!r}, num_experts={settings.num_experts}",
                                   f"drop {given[0]} for this model.")
            sequence_logits = None
        else:
            sequence_logits = self._choose_sequence_experts(kwargs, sequence_experts, router_attention_mask)
        keep = bool(output_router_logits) and settings.is_routed
        need_aux = settings.is_routed and (keep or (self.training and settings.router_aux_loss_coef > 0))
        token_mask = self._current_token_mask(kwargs)
        shared.recorder.begin(keep, need_aux, token_mask,
                              shared.sequence_experts if self.sequence_router is not None else None)
        try:
            inner_out = call_inner(**kwargs)
        finally:
            records, aux = shared.recorder.end()
        fields = {k: v for k, v in inner_out.items() if k in self.output_class.__dataclass_fields__}
        if labels_given and aux is not None and settings.router_aux_loss_coef > 0 and fields.get("loss") is not None:
            fields["loss"] = fields["loss"] + settings.router_aux_loss_coef * aux.to(fields["loss"].dtype)
        sequence_loss = None
        if sequence_labels is not None and sequence_logits is not None:
            targets = torch.as_tensor(sequence_labels).to(sequence_logits.device).long().reshape(-1)
            sequence_loss = nn.functional.cross_entropy(sequence_logits.float(), targets)
            weight = SEQUENCE_ROUTER_CE_WEIGHT if sequence_router_ce_weight is None else float(sequence_router_ce_weight)
            if "loss" in self.output_class.__dataclass_fields__:
                task, term = fields.get("loss"), weight * sequence_loss
                fields["loss"] = term if task is None else task + term.to(task.dtype)
        if keep:
            fields.update(router_logits=tuple(r.logits for r in records),
                          routing_weights=tuple(r.weights for r in records),
                          router_module_names=tuple(r.name for r in records))
        return self.output_class(**fields, aux_loss=aux, sequence_router_logits=sequence_logits,
                                 sequence_router_loss=sequence_loss)

    @staticmethod
    def _current_token_mask(kwargs: Dict[str, Any]) -> Optional[torch.Tensor]:
        """(batch * new tokens,) True for real tokens: the attention mask's columns of this step."""
        mask = kwargs.get("attention_mask")
        ids = kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        # Continuous batching passes prepared masks (4D, or a dict per layer type): no per-token mask to read.
        if not isinstance(mask, torch.Tensor) or ids is None or mask.dim() != 2:
            return None
        return mask[:, -ids.shape[1]:].bool().reshape(-1)

    # ---- loading ----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, is_trainable: bool = False, **kwargs):
        """transformers' from_pretrained, strict about the adapter, and for adapter-only saves too.

        The result has its base frozen and is in eval mode; is_trainable=False (default) also freezes the adapter
        (inference), is_trainable=True leaves it trainable as after from_base (continue training: call .train()).
        An adapter-only folder or repo (config.json's `adapter_only`) fetches its base by repo id at the recorded
        commit and checks its weight fingerprint. A missing or unexpected adapter tensor, an unreadable weights
        file, or config.json settings that disagree with the saved shapes are errors that name the tensor, the
        file or the setting."""
        path = pretrained_model_name_or_path
        if isinstance(path, (str, os.PathLike)):
            recover_interrupted_save(path)  # a save killed between two renames left the folder aside
        config = kwargs.get("config")
        if not isinstance(config, TalkLoRAConfig):
            config = TalkLoRAConfig.from_pretrained(path, **hub_kwargs(kwargs))
        want_info = kwargs.pop("output_loading_info", False)
        if getattr(config, "adapter_only", False):
            model = load_adapter_only(cls, path, config, kwargs)  # strict: every adapter tensor, nothing else
            info = {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
        else:
            try:
                model, info = super().from_pretrained(path, *model_args, output_loading_info=True, **kwargs)
            except Exception as error:
                explained = cls._explain_load_error(path, kwargs, error)
                if explained is None:
                    raise
                raise explained from error
            check_adapter_loaded(model, info, path)
        model.set_adapter_trainable(is_trainable)
        return (model, info) if want_info else model

    @classmethod
    def _explain_load_error(cls, path, kwargs: Dict[str, Any], error: Exception) -> Optional[Exception]:
        """A clearer error for a failed load (best effort: None keeps the original): a truncated or corrupt
        weights file named, or the adapter setting in config.json that disagrees with the saved shapes."""
        try:
            corrupt = corrupt_weights_error(path, kwargs)
            if corrupt is not None:
                return corrupt
            if isinstance(error, RuntimeError) and "mismatch" in str(error):
                return explain_weight_mismatch(cls, path, kwargs)
        except Exception:  # the diagnosis is best effort: never hide the original error
            return None
        return None

    # ---- saving ---------------------------------------------------------------------------
    def save_pretrained(self, save_directory: Union[str, os.PathLike], *args, push_to_hub: bool = False,
                        adapter_only: bool = False, **kwargs):
        """Writes weights (safetensors), config and this bundle's code into save_directory, atomically: into a
        sibling folder first, which then takes the folder's place in one step, so a crash never leaves a
        half-written model (or no model) behind. Files already in the folder that a model save does not own
        (a tokenizer saved first, a README) are kept; stale weight files are not.

        adapter_only: write only the adapter's tensors (adapter_model.safetensors, a few MB) and a config.json
        naming the base by repo id, commit and weight fingerprint; from_pretrained (the Auto classes too) then
        fetches that base and attaches the adapter. Needs a base loaded by repo id and revision (a commit)."""
        if push_to_hub:
            raise ValueError("`push_to_hub` is not supported in save_pretrained; call model.push_to_hub(repo_id) "
                             "or talklora_hub's push, which upload a complete snapshot in one commit.")
        bundle = {p.name for p in BUNDLE_DIR.glob("*.py") if p.name != "__init__.py"}
        plugins = plugin_files(self.adapter_settings.method)  # a method defined outside the bundle travels too

        def keep(name: str) -> bool:
            return (not owned_by_model_save(name) and name not in bundle and name not in plugins
                    and name != "config.json")

        with staged_directory(save_directory, keep_existing=keep) as staging:
            if adapter_only:
                save_adapter_only(self, staging)
            else:
                super().save_pretrained(staging, *args, **kwargs)
            for name in bundle:
                shutil.copyfile(BUNDLE_DIR / name, staging / name)
            for name, text in plugins.items():
                (staging / name).write_text(text)


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

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, *, inputs_embeds=None, use_cache=None,
                output_router_logits=None, sequence_experts=None, router_attention_mask=None, sequence_labels=None,
                sequence_router_ce_weight=None, **kwargs) -> TalkLoRAModelOutput:
        """The base model's forward (the KV cache and every other keyword pass through as given) plus
        routing; see TalkLoRAForCausalLM.forward for the TT-LoRA MoE arguments."""
        return self._run_with_routing(self.inner_model, output_router_logits, False, sequence_experts,
                                      router_attention_mask, sequence_labels, sequence_router_ce_weight,
                                      input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                      inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)


class TalkLoRAForCausalLM(TalkLoRAPreTrainedModel, GenerationMixin):
    """Causal LM with the adapter; generate() works with the KV cache."""

    base_auto_class = AutoModelForCausalLM
    output_class = TalkLoRAHeadOutput

    def get_output_embeddings(self) -> nn.Module:
        return self.base.get_output_embeddings()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, *, inputs_embeds=None, labels=None,
                use_cache=None, output_router_logits=None, sequence_experts=None, router_attention_mask=None,
                sequence_labels=None, sequence_router_ce_weight=None, **kwargs) -> TalkLoRAHeadOutput:
        return self._run_with_routing(self.base, output_router_logits, labels is not None, sequence_experts,
                                      router_attention_mask, sequence_labels, sequence_router_ce_weight,
                                      input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                      inputs_embeds=inputs_embeds, labels=labels, use_cache=use_cache, **kwargs)

    forward.__doc__ = ("The base causal LM's forward (the KV cache, logits_to_keep and every other keyword pass "
                       "through as given) plus routing.\n" + SEQUENCE_ARGS_DOC)


class TalkLoRAForSequenceClassification(TalkLoRAPreTrainedModel):
    """Sequence classification with the adapter; the classification head trains with it."""

    base_auto_class = AutoModelForSequenceClassification
    output_class = TalkLoRAHeadOutput

    def _extra_trainable(self, inner: nn.Module, settings: AdapterSettings) -> List[str]:
        # Everything the head adds on top of the backbone (e.g. `score`, `classifier`) trains.
        head = [name for name, _ in inner.named_children() if name != inner.base_model_prefix]
        return head + super()._extra_trainable(inner, settings)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, *, inputs_embeds=None, labels=None,
                output_router_logits=None, sequence_experts=None, router_attention_mask=None, sequence_labels=None,
                sequence_router_ce_weight=None, **kwargs) -> TalkLoRAHeadOutput:
        return self._run_with_routing(self.base, output_router_logits, labels is not None, sequence_experts,
                                      router_attention_mask, sequence_labels, sequence_router_ce_weight,
                                      input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                      inputs_embeds=inputs_embeds, labels=labels, **kwargs)

    forward.__doc__ = "The base classifier's forward plus routing.\n" + SEQUENCE_ARGS_DOC


__all__ = ["TalkLoRAModel", "TalkLoRAForCausalLM", "TalkLoRAForSequenceClassification", "TalkLoRAPreTrainedModel"]
