"""A bitsandbytes 8-bit base (QLoRA-style): the adapter runs on top of the base module's own forward, so the
quantized base trains and generates with every method (bitsandbytes' CPU backend runs it here)."""

import pytest
import torch

from talklora_hub import AdapterSettings, TalkLoRAForCausalLM

from .conftest import tiny_base

bnb = pytest.importorskip("bitsandbytes")
from transformers import AutoModelForCausalLM, BitsAndBytesConfig  # noqa: E402


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base")
    tiny_base("llama", hidden_size=64, intermediate_size=128).save_pretrained(folder)
    return folder


def _quantized(folder):
    return AutoModelForCausalLM.from_pretrained(folder, quantization_config=BitsAndBytesConfig(load_in_8bit=True),
                                                device_map="cpu")


@pytest.mark.parametrize("method", ["lora", "moelora", "talklora", "ttlora"])
def test_an_8bit_base_trains_and_generates(base_folder, method):
    base = _quantized(base_folder)
    ids = torch.randint(3, 90, (2, 7), generator=torch.Generator().manual_seed(0))
    reference = base(input_ids=ids).logits
    int8 = {n: p.detach().clone() for n, p in base.named_parameters() if not p.dtype.is_floating_point}
    assert int8, "the base is not quantized"
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
    for name, value in int8.items():  # the quantized base never moves
        assert torch.equal(dict(model.base.named_parameters())[name], value)
    out = model.eval().generate(ids[:1], max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 11)


def test_merging_into_a_quantized_base_is_refused(base_folder):
    model = TalkLoRAForCausalLM.from_base(_quantized(base_folder), AdapterSettings(method="lora", r=8))
    with pytest.raises(ValueError, match="quantized base"):
        model.merge_and_unload()
