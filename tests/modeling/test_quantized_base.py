"""A bitsandbytes 8-bit or 4-bit base (QLoRA-style): the adapter runs on top of the base module's own forward, so
the quantized base trains and generates with every method (bitsandbytes' CPU backend runs it here).

bitsandbytes' CPU 4-bit inference kernel packs each weight in blocks of 32 output rows (it asserts `N must be
divisible by block_n`) once the frozen base runs without gradients, so the tiny base's every projection has a
multiple of 32 outputs, as real models' have (SmolLM2: 576, 192, 1536)."""

import pytest
import torch

from talklora_hub import AdapterSettings, TalkLoRAForCausalLM

from .conftest import tiny_base

bnb = pytest.importorskip("bitsandbytes")
from transformers import AutoModelForCausalLM, BitsAndBytesConfig  # noqa: E402


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base")
    tiny_base("llama", hidden_size=64, intermediate_size=128, head_dim=16).save_pretrained(folder)
    return folder


QUANTIZATIONS = {
    "8bit": dict(load_in_8bit=True),
    "4bit": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32),
}


def _quantized(folder, bits: str = "8bit"):
    return AutoModelForCausalLM.from_pretrained(folder, quantization_config=BitsAndBytesConfig(**QUANTIZATIONS[bits]),
                                                device_map="cpu")


def _integer_state(module) -> dict:
    """A quantized layer's integer tensors as its state_dict stores them."""
    return {k: t.clone() for k, t in module.state_dict().items() if not t.dtype.is_floating_point}


@pytest.mark.parametrize("bits", sorted(QUANTIZATIONS))
@pytest.mark.parametrize("method", ["lora", "moelora", "talklora", "ttlora"])
def test_a_quantized_base_trains_and_generates(base_folder, method, bits):
    base = _quantized(base_folder, bits)
    ids = torch.randint(3, 90, (2, 7), generator=torch.Generator().manual_seed(0))
    # Frozen first, as from_base leaves it: bitsandbytes picks its kernel by whether the input needs gradients
    # (4-bit on CPUs with AVX512-bf16: a packed bf16 kernel, about 1e-3 from the gradient path's dequantised one).
    # Compared as saved: that kernel repacks the 4-bit weights in place, and state_dict() stores them unpacked.
    quantized = {m: _integer_state(m) for m in base.modules() if isinstance(m, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit))}
    assert quantized, "the base is not quantized"
    base.requires_grad_(False)
    reference = base(input_ids=ids).logits
    model = TalkLoRAForCausalLM.from_base(base, AdapterSettings(method=method, r=8))
    with model.disable_adapter():
        assert torch.allclose(model(input_ids=ids).logits, reference, atol=1e-5)
    adapter = set(model.adapter_tensor_names())
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if n in adapter)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(3):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    for module, state in quantized.items():  # the quantized base never moves
        after = _integer_state(module)
        assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    model.eval()
    with torch.no_grad():  # bitsandbytes' CPU inference path (4-bit: its packed kernel)
        logits = model(input_ids=ids).logits
        out = model.generate(ids[:1], max_new_tokens=4, do_sample=False)
    assert torch.isfinite(logits).all()
    assert out.shape == (1, 11)


def test_merging_into_a_quantized_base_is_refused(base_folder):
    model = TalkLoRAForCausalLM.from_base(_quantized(base_folder), AdapterSettings(method="lora", r=8))
    with pytest.raises(ValueError, match="quantized base"):
        model.merge_and_unload()
