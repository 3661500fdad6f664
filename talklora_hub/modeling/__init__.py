"""The bundle that travels inside every saved model (flat files, single-dot relative imports, only the
standard library, torch, transformers and safetensors). Imported here for package users."""

from .adapter_settings import AdapterSettings
from .methods import MethodSpec, load_method_file, method_names, method_spec, register_method
from .configuration_talklora import TalkLoRAConfig
from .modeling_talklora import (TalkLoRAForCausalLM, TalkLoRAForSequenceClassification, TalkLoRAModel,
                                TalkLoRAPreTrainedModel)
from .routing import RoutingTrace

__all__ = ["AdapterSettings", "MethodSpec", "load_method_file", "method_names", "method_spec", "register_method", "TalkLoRAConfig", "TalkLoRAModel", "TalkLoRAForCausalLM",
           "TalkLoRAForSequenceClassification", "TalkLoRAPreTrainedModel", "RoutingTrace"]
