"""talklora_hub: mixture-of-LoRA-experts adapters (TalkLoRA, MoELoRA, LoRA, TT-LoRA MoE) for any
transformers model, with models whose code travels inside every saved repo."""

__version__ = "0.1.0"
