"""Write a tiny random Llama GGUF file laid out like the SmolLM2 one (Q4_1 matrices, GPT-2 byte-level
BPE tokenizer metadata), so the GGUF -> safetensors conversion can be tested in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 64, 2, 4, 2, 128


def _byte_level_alphabet() -> list[str]:
    """The 256 printable stand-ins GPT-2's byte-level BPE uses for raw bytes."""
    visible = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for byte in range(256):
        if byte in visible:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_tiny_llama_gguf(path: str | Path, seed: int = 0) -> Path:
    import gguf

    rng = np.random.default_rng(seed)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    merges = ["Ġ t", "h e", "Ġt he", "Ġ a"]
    tokens = specials + _byte_level_alphabet() + ["Ġt", "he", "Ġthe", "Ġa"]
    tokens += [f"<pad_{i}>" for i in range(-len(tokens) % 32)]  # vocab a multiple of the quant block
    vocab = len(tokens)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(specials) + [1] * (vocab - len(specials)))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)

    def matrix(rows: int, cols: int, name: str) -> None:
        weights = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
        quantized = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q4_1)
        writer.add_tensor(name, quantized, raw_shape=quantized.shape, raw_dtype=gguf.GGMLQuantizationType.Q4_1)

    def vector(size: int, name: str) -> None:
        writer.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(size)).astype(np.float32))

    head_dim = HIDDEN // HEADS
    matrix(vocab, HIDDEN, "token_embd.weight")
    for layer in range(LAYERS):
        prefix = f"blk.{layer}."
        vector(HIDDEN, prefix + "attn_norm.weight")
        matrix(HIDDEN, HIDDEN, prefix + "attn_q.weight")
        matrix(KV_HEADS * head_dim, HIDDEN, prefix + "attn_k.weight")
        matrix(KV_HEADS * head_dim, HIDDEN, prefix + "attn_v.weight")
        matrix(HIDDEN, HIDDEN, prefix + "attn_output.weight")
        vector(HIDDEN, prefix + "ffn_norm.weight")
        matrix(FFN, HIDDEN, prefix + "ffn_gate.weight")
        matrix(FFN, HIDDEN, prefix + "ffn_up.weight")
        matrix(HIDDEN, FFN, prefix + "ffn_down.weight")
    vector(HIDDEN, "output_norm.weight")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
