"""The configuration of a talklora_hub model: the base model's own config, where the base came from,
and the adapter settings.

Part of the bundle that travels inside every saved model: imports only the standard library,
transformers and its sibling files.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from transformers import AutoConfig, PretrainedConfig

from .compat import check_transformers_version

# Before anything that needs a recent transformers: an older one fails here, naming the range and the fix.
check_transformers_version()

from transformers.configuration_utils import SubConfigSpec  # noqa: E402  (needs transformers>=5.20)

from .adapter_settings import AdapterSettings, config_error  # noqa: E402

# Written into every config.json so that the Auto classes find the code shipped beside the weights.
AUTO_MAP = {
    "AutoConfig": "configuration_talklora.TalkLoRAConfig",
    "AutoModel": "modeling_talklora.TalkLoRAModel",
    "AutoModelForCausalLM": "modeling_talklora.TalkLoRAForCausalLM",
    "AutoModelForSequenceClassification": "modeling_talklora.TalkLoRAForSequenceClassification",
}


class TalkLoRAConfig(PretrainedConfig):
    """Config of a base transformers model wrapped with a mixture-of-LoRA-experts adapter.

    base_config: the base model's config (any architecture; a dict is resolved by its model_type).
    adapter: the AdapterSettings as a dict (method, r, num_experts, ...). Unknown keys are ignored
        with a warning, so repos written by newer versions keep loading.
    base_model_name_or_path / base_model_revision: where the base weights came from (repo id and
        commit), recorded so experts can be re-attached to exactly the base they were trained on.
    base_model_fingerprint: a hash of the base weights (see fingerprint.py), checked on loading.
    adapter_only: the folder holds only the adapter's tensors (adapter_model.safetensors); loading fetches the
        base named above (repo id at that commit), checks its fingerprint and attaches the adapter.
    """

    model_type = "talklora_hub"
    sub_configs_defaults = {"base_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")}

    base_config: dict | PretrainedConfig | None = None
    adapter: dict | None = None
    base_model_name_or_path: str | None = None
    base_model_revision: str | None = None
    base_model_fingerprint: str | None = None
    adapter_only: bool = False
    auto_map: dict | None = None

    def __post_init__(self, **kwargs):
        # Validate (and normalise, e.g. fill method defaults) the adapter settings once, here.
        if self.adapter is not None and not isinstance(self.adapter, dict):
            raise config_error("adapter", "in config.json must be a JSON object of adapter settings",
                               self.adapter, 'write e.g. "adapter": {"method": "talklora", "r": 32, '
                               '"num_experts": 4}, or re-save the model.')
        self.adapter = AdapterSettings.from_dict(self.adapter or {}).to_dict()
        if self.auto_map is None:
            self.auto_map = dict(AUTO_MAP)
        super().__post_init__(**kwargs)
        # Classification heads read num_labels / id2label from the base config.
        if self.base_config is not None and self.id2label is not None and kwargs.get("num_labels") is not None:
            self.base_config.num_labels = self.num_labels

    @property
    def adapter_settings(self) -> AdapterSettings:
        return AdapterSettings.from_dict(self.adapter)

    def get_text_config(self, decoder=None, encoder=None) -> PretrainedConfig:
        # Generation, caches and losses ask for vocab size, layers and heads: those are the base's.
        return self.base_config.get_text_config(decoder=decoder, encoder=encoder)

    @classmethod
    def from_base_config(cls, base_config: PretrainedConfig, adapter: AdapterSettings | Dict[str, Any],
                         base_model_name_or_path: Optional[str] = None, base_model_revision: Optional[str] = None,
                         **kwargs) -> "TalkLoRAConfig":
        if isinstance(adapter, AdapterSettings):
            adapter = adapter.to_dict()
        # The attention implementation is set recursively on sub-configs: carry the base's over, or
        # the base model (which shares this config object) would lose its own.
        kwargs.setdefault("attn_implementation", getattr(base_config, "_attn_implementation", None))
        return cls(base_config=base_config, adapter=dict(adapter), base_model_name_or_path=base_model_name_or_path,
                   base_model_revision=base_model_revision, **kwargs)
