"""The PEFT LoRA baseline trains on the recipe's batches and scores through the zoo's scoring."""

import torch

from talklora_hub.evaluation.peft_lora import train_peft_lora
from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM
from talklora_hub.evaluation.scoring import score

from ..train.helpers import build_tokenizer, colors_task, save_tiny_llama


def test_peft_lora_trains_the_same_adapter_size_and_is_scored(tmp_path):
    from transformers import AutoModelForCausalLM

    base = str(save_tiny_llama(tmp_path / "llama"))
    task = colors_task(60)
    train = dict(base=base, tasks=[task], r=4, target_modules=["q_proj", "v_proj"], max_steps=4, batch_size=4,
                 max_length=40, lr=5e-2, seed=0)
    model, tokenizer, info = train_peft_lora(train, progress=False)
    ours = TalkLoRAForCausalLM.from_base(AutoModelForCausalLM.from_pretrained(base),
                                         AdapterSettings(method="lora", r=4, target_modules=["q_proj", "v_proj"]))
    assert info["trainable"] == ours.parameter_counts()["trainable"]  # the same rank on the same modules
    ids = torch.tensor([[1, 7, 8, 9]])
    plain = AutoModelForCausalLM.from_pretrained(base).eval()
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, plain(ids).logits)  # the adapter learned something
    scored = score(model, build_tokenizer(), [task], "causal", 40, progress=False)[task[0]]
    assert scored["n"] == len(task[1]["test"]) and scored["low"] <= scored["accuracy"] <= scored["high"]
