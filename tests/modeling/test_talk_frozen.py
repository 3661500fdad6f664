"""talk_trainable=False: the Talking Module T frozen at its init (with talk_init='identity', the TalkLoRA
paper's no-talk ablation). T must stay exactly I through training, survive save/load, and the router must
then read the un-mixed chunks: logits = R z with z = A x."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM
from talklora_hub.modeling.adapter_base import adapter_layers
from talklora_hub.train.checkpoint import adapter_tensor_names

from .conftest import tiny_base

NO_TALK = dict(method="talklora", r=8, num_experts=4, talk_init="identity", talk_trainable=False)


def _no_talk_model():
    torch.manual_seed(0)
    return TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(**NO_TALK))


def test_frozen_talk_stays_identity_through_a_step_and_round_trips(tmp_path, input_ids):
    model = _no_talk_model()
    layers = adapter_layers(model)
    assert all("talk" not in n for n, p in model.named_parameters() if p.requires_grad)
    assert all(name + ".talk" in model.state_dict() for name in layers)  # saved, as a buffer
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    model.train()
    for _ in range(2):  # two steps: B moves off zero at step 1, so the second step gives T a real gradient path
        loss = model(input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    eye = torch.eye(4)
    assert all(torch.equal(layer.talk, eye) for layer in layers.values())
    model.eval()
    with torch.no_grad():
        expected = model(input_ids).logits
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True).eval()
    assert loaded.adapter_settings.talk_trainable is False
    with torch.no_grad():
        assert torch.equal(loaded(input_ids).logits, expected)
    assert all(torch.equal(layer.talk, eye) for layer in adapter_layers(loaded).values())


def test_frozen_kaiming_talk_is_kept_exactly_by_save_and_load(tmp_path, input_ids):
    torch.manual_seed(0)
    model = TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(**{**NO_TALK, "talk_init": "kaiming"}))
    talks = {n: layer.talk.clone() for n, layer in adapter_layers(model).items()}
    assert not any(torch.equal(t, torch.eye(4)) for t in talks.values())
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True)
    for name, layer in adapter_layers(loaded).items():
        assert torch.equal(layer.talk, talks[name])


def test_identity_talk_router_reads_the_unmixed_chunks(input_ids):
    model = _no_talk_model().eval()
    layer = next(iter(adapter_layers(model).values()))
    captured = {}
    handle = layer.register_forward_pre_hook(lambda module, args: captured.setdefault("x", args[0].detach()))
    with torch.no_grad():
        out = model(input_ids, output_router_logits=True)
    handle.remove()
    z = captured["x"].reshape(-1, layer.in_features) @ layer.lora_A.T  # (N, r)
    position = list(out.router_module_names).index(layer.module_name)
    assert torch.allclose(out.router_logits[position], z @ layer.router_weight.T, atol=1e-6)


def test_frozen_talk_is_not_a_checkpointed_or_trainable_tensor():
    names = adapter_tensor_names(_no_talk_model())
    assert names and not any(n.endswith(".talk") for n in names)


@pytest.mark.parametrize("method", ["lora", "moelora", "ttlora"])
def test_talk_trainable_false_is_refused_for_other_methods(method):
    with pytest.raises(ValueError, match="`talk_trainable` only applies to method='talklora'"):
        AdapterSettings(method=method, talk_trainable=False)


def test_talk_trainable_must_be_a_bool():
    with pytest.raises(ValueError, match="`talk_trainable` must be a bool"):
        AdapterSettings(method="talklora", talk_trainable="no")


def test_a_frozen_talk_expert_round_trips_adapter_only(tmp_path):
    """Adapter-only export keeps the frozen T (a buffer) with the adapter, and the base fingerprint of the
    wrapped model equals the bare base's, so the expert attaches to a fresh base."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from talklora_hub.publish.artifacts import attach_expert, export_expert
    from talklora_hub.publish.fingerprint import base_fingerprint
    from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    base = LlamaForCausalLM(config)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    model = TalkLoRAForCausalLM.from_base(base, AdapterSettings(method="talklora", r=8, talk_init="kaiming",
                                                                 talk_trainable=False))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.2)
    fresh = LlamaForCausalLM(config)
    fresh.load_state_dict(state)
    assert base_fingerprint(model) == base_fingerprint(fresh)
    assert any(name.endswith(".talk") for name in model.adapter_state_dict())
    folder = export_expert(model, tmp_path / "expert", "t", "me/base", "abc")
    again = attach_expert(folder, base=fresh)
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        assert torch.equal(again(ids).logits, model.eval()(ids).logits)
