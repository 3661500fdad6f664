"""Tiny random base models (built from configs, never downloaded) for the adapter tests."""

import pytest
import torch
from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, BertConfig,
                          GPT2Config, LlamaConfig, Qwen2Config)


def tiny_config(arch: str, **overrides):
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          tie_word_embeddings=True, pad_token_id=0, eos_token_id=2, bos_token_id=1)
    elif arch == "qwen2":
        cfg = Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          tie_word_embeddings=False, pad_token_id=0, eos_token_id=2)
    elif arch == "gpt2":
        cfg = GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64, pad_token_id=0)
    elif arch == "bert":
        cfg = BertConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=64, pad_token_id=0)
    else:
        raise ValueError(arch)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def tiny_base(arch: str, head: str = "causal", seed: int = 0, dtype: torch.dtype = torch.float32, **overrides):
    """A random tiny model; dtype is applied at construction, as from_pretrained(dtype=...) does (a later
    .to(dtype) would also cast buffers such as rotary frequencies, which loading never does)."""
    torch.manual_seed(seed)
    cfg = tiny_config(arch, **overrides)
    auto = {"causal": AutoModelForCausalLM, "bare": AutoModel, "seqcls": AutoModelForSequenceClassification}[head]
    return auto.from_config(cfg, dtype=dtype).eval()


@pytest.fixture
def input_ids():
    torch.manual_seed(1)
    return torch.randint(3, 96, (2, 9))
