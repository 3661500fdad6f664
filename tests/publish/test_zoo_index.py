"""The zoo index README, built with huggingface_hub's DatasetCard (no server needed)."""

from huggingface_hub import DatasetCard

from talklora_hub.publish.zoo_index import render_zoo_readme

ENTRIES = [{"repo_id": "user/a", "kind": "model", "method": "lora", "base": "user/base", "task": "spam",
            "headline": {"task": "spam", "metric": "accuracy", "value": 0.875}, "revision": "0123456789abcdef"},
           {"repo_id": "user/r", "kind": "router", "method": "ttlora-moe", "base": None, "task": ["a", None, "b"],
            "headline": None, "revision": None}]


def test_zoo_readme_is_a_dataset_card_with_one_row_per_entry():
    text = render_zoo_readme(ENTRIES)
    card = DatasetCard(text)
    assert card.data.tags == ["talklora", "talklora-zoo"]
    rows = [line for line in card.text.splitlines() if line.startswith("| `")]
    assert rows == ["| `user/a` | model | lora | `user/base` | spam | spam accuracy 0.875 | `0123456789` |",
                    "| `user/r` | router | ttlora-moe | `` | a, b |  | `` |"]
    assert text.startswith("---\ntags:\n- talklora\n- talklora-zoo\n---\n\n# talklora_hub zoo\n")


def test_empty_zoo_readme_has_the_table_header_only():
    lines = DatasetCard(render_zoo_readme([])).text.strip().splitlines()
    assert lines[-2:] == ["| repo | kind | method | base | task | headline | commit |", "|---|---|---|---|---|---|---|"]
