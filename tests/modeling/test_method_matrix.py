"""One matrix over every registered method: what each part of the product does with a method is what its
MethodSpec says (layer class, default experts, routing kind, card rows, label), so a new method's spec is
checked here without new tests."""

import pytest
import torch

from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM
from talklora_hub.modeling.adapter_base import adapter_layers
from talklora_hub.modeling.methods import CARD_FIELDS, method_names, method_spec

from .conftest import tiny_base


def _settings(name: str, experts=None) -> AdapterSettings:
    return AdapterSettings(method=name, r=8, num_experts=experts)


@pytest.mark.parametrize("name", method_names())
def test_the_model_follows_its_methods_spec(name):
    spec = method_spec(name)
    settings = _settings(name)
    assert settings.num_experts == spec.default_num_experts
    assert settings.share_expert_banks is spec.shares_banks_by_default
    model = TalkLoRAForCausalLM.from_base(tiny_base("llama"), settings).eval()
    layers = adapter_layers(model)
    assert layers and all(type(layer) is spec.layer_class for layer in layers.values())
    info = model.method_info()
    assert info == {"method": name, "label": spec.label, "title": spec.title, "routing": spec.routing_of(
        settings.num_experts), "num_experts": settings.num_experts}
    ids = torch.tensor([[1, 4, 9, 3]])
    with torch.no_grad():
        out = model(input_ids=ids, output_router_logits=True)
    routed = info["routing"] == "token"
    assert (out.routing_weights is not None and len(out.routing_weights) == len(layers)) is routed
    assert bool(model.routed_module_names()) is routed


@pytest.mark.parametrize("name", [n for n in method_names() if method_spec(n).routing == "sequence"])
def test_a_per_sequence_method_routes_per_sequence_with_several_experts(name):
    assert _settings(name, experts=1).routing == "none" and _settings(name, experts=1).is_mergeable
    assert _settings(name, experts=3).routing == "sequence" and _settings(name, experts=3).is_sequence_routed


@pytest.mark.parametrize("name", method_names())
def test_cards_summaries_and_the_cli_read_the_spec(name):
    from talklora_hub.cli.train import method_option
    from talklora_hub.publish.cards import adapter_rows

    spec = method_spec(name)
    rows = adapter_rows(_settings(name).to_dict(), ["q_proj"])
    assert [key for key, _ in rows] == list(CARD_FIELDS + spec.card_fields)
    assert dict(rows)["target_modules"] == ["q_proj"]
    option = method_option()
    assert name in option["metavar"].strip("{}").split(",") and f"{name}: {spec.description}" in option["help"]


@pytest.mark.parametrize("name", [n for n in method_names() if method_spec(n).exclusive_fields])
def test_a_methods_exclusive_settings_are_refused_elsewhere(name):
    field = method_spec(name).exclusive_fields[0]
    default = AdapterSettings.__dataclass_fields__[field].default
    other = next(n for n in method_names() if n != name and field not in method_spec(n).exclusive_fields)
    with pytest.raises(ValueError, match=f"`{field}` only applies to method='{name}'"):
        AdapterSettings(method=other, r=8, **{field: not default if isinstance(default, bool) else None})
