"""Tiny random models saved to folders for the Space tests: a byte-level BPE tokenizer trained in code on a
few sentences (never downloaded) and a 2-layer Llama wrapped with each adapter method."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM

CORPUS = [
    "The Senate met today to discuss the budget for the coming year.",
    "def add(a, b): return a + b",
    "Call me Ishmael. Some years ago, never mind how long precisely.",
    "Q: What is 12 plus 30? A: 42. The answer is 42.",
    "Experts route every token; the router decides which expert reads it.",
]
VOCAB_SIZE = 320
MAX_POSITIONS = 64  # small on purpose: the Space must truncate longer texts and say so

METHODS = {
    "talklora": AdapterSettings(method="talklora", r=8, num_experts=4),
    "moelora": AdapterSettings(method="moelora", r=8, num_experts=4),
    "lora": AdapterSettings(method="lora", r=4),
    "ttlora": AdapterSettings(method="ttlora", r=4, num_experts=3, tt_rank=2),
}


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   model_max_length=MAX_POSITIONS)


def tiny_llama(seed: int = 0):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=MAX_POSITIONS,
                         tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return AutoModelForCausalLM.from_config(config).eval()


def make_router_opinionated(model, seed: int) -> None:
    """Random routers at init give near-uniform weights; scale them up so tokens pick clear experts."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "router" in name or "sequence_router.gate" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 2.0)


def save_tiny_models(root: Path) -> dict:
    """{method: folder} with a model (and the tokenizer) saved for each adapter method."""
    tokenizer = tiny_tokenizer()
    folders = {}
    for i, (method, settings) in enumerate(METHODS.items()):
        model = TalkLoRAForCausalLM.from_base(tiny_llama(seed=i), settings).eval()
        make_router_opinionated(model, seed=10 + i)
        model.generation_config.eos_token_id = None  # always generate max_new_tokens: stable test lengths
        folder = root / f"tiny-{method}"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[method] = folder
    return folders
