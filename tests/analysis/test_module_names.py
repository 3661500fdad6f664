"""Where a routed module sits, read from its name; the modeling bundle's own copy must agree."""

from talklora_hub.analysis.module_names import group_by_layer, layer_index_of, short_module_name
from talklora_hub.modeling import adapter_base

NAMES = ["base.model.layers.0.self_attn.q_proj", "base.model.layers.12.mlp.down_proj", "transformer.h.3.attn.c_attn",
         "encoder.layer.5.attention.self.query", "base.lm_head", "sequence_router", "model.layers.2.experts.7.w1"]


def test_layer_and_short_name():
    assert [layer_index_of(n) for n in NAMES] == [0, 12, 3, 5, -1, -1, 2]
    assert [short_module_name(n) for n in NAMES] == ["self_attn.q_proj", "mlp.down_proj", "attn.c_attn",
                                                     "attention.self.query", "lm_head", "sequence_router",
                                                     "experts.7.w1"]


def test_the_modeling_bundles_copy_agrees():
    # The bundle travels inside every saved model and cannot import analysis, so it keeps its own copy.
    assert [adapter_base.layer_index_of(n) for n in NAMES] == [layer_index_of(n) for n in NAMES]


def test_group_by_layer_sorts_layers_and_keeps_module_order():
    names = ["m.layers.1.v", "m.layers.0.q", "m.layers.1.q", "head", "m.layers.0.v"]
    assert list(group_by_layer(names).items()) == [(-1, [3]), (0, [1, 4]), (1, [0, 2])]
