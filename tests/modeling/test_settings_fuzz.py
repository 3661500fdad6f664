"""Property-based fuzz of the adapter settings and config.json: any value of any field (and unknown keys, and a
non-object `adapter` section) either builds valid settings or is a ValueError that names the field, the rule,
the value and the fix. Never a TypeError/AttributeError/KeyError from deep inside. Bounded: ~300 examples."""

import dataclasses
import json

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from talklora_hub import AdapterSettings  # noqa: E402
from talklora_hub.modeling import TalkLoRAConfig  # noqa: E402

FIELDS = [f.name for f in dataclasses.fields(AdapterSettings)]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["lora", "moelora", "talklora", "ttlora", "kaiming", "identity", "q_proj", "",
                                     "masked-train", "x"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)
settings_dicts = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), values, max_size=6)


def _check_clear(error: ValueError) -> None:
    text = str(error)
    assert "`" in text and "Fix:" in text, text


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(settings_dicts)
def test_any_settings_dict_is_valid_or_a_clear_error(data):
    try:
        built = AdapterSettings.from_dict(data)
    except ValueError as error:
        _check_clear(error)
        return
    again = AdapterSettings.from_dict(json.loads(json.dumps(built.to_dict())))  # what config.json round-trips
    assert again == built


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.one_of(values, settings_dicts))
def test_any_adapter_section_of_config_json_is_valid_or_a_clear_error(section):
    try:
        TalkLoRAConfig(adapter=section)
    except ValueError as error:
        _check_clear(error)
