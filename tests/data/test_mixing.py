"""mix_tasks: task column, common columns, determinism, leak guard and errors."""

from __future__ import annotations

import pytest

from talklora_hub.data.custom import load_task_from_dataset
from talklora_hub.data.mixing import mix_tasks
from talklora_hub.data.splits import SPLITS
from talklora_hub.data.tasks import load_task


@pytest.fixture()
def parts(raw_sources):
    return [("fortune_topic", load_task("fortune_topic", source_dir=raw_sources["fortunes"])),
            ("gsm8k", load_task("gsm8k", source_dir=raw_sources["gsm8k"]))]


def test_mixture_has_task_column_and_common_columns(parts):
    mixed = mix_tasks(parts)
    train = mixed["train"]
    assert train.features["task"].names == ["fortune_topic", "gsm8k"]
    assert set(train.column_names) == {"id", "task", "task_name", "text", "prompt", "target", "answer", "label"}
    for split in SPLITS:
        assert len(mixed[split]) == sum(len(dd[split]) for _, dd in parts)
    rows = list(train)
    assert {r["task_name"] for r in rows} == {"fortune_topic", "gsm8k"}
    assert all((r["label"] == -1) == (r["task_name"] == "gsm8k") for r in rows)
    assert all(train.features["task"].int2str(r["task"]) == r["task_name"] for r in rows)
    # Shuffled (tasks interleave) yet identical on every run.
    assert list(mix_tasks(parts)["train"]["id"]) == list(train["id"])
    names = [r["task_name"] for r in rows]
    assert names != sorted(names)


def test_max_per_task_caps_each_split(parts):
    mixed = mix_tasks(parts, max_per_task=5)
    assert len(mixed["train"]) == 10


def test_held_out_text_of_one_task_leaves_train_of_another(parts):
    leaked_text = parts[1][1]["test"][0]["text"]
    other = load_task_from_dataset([{"text": leaked_text, "label": "a"}, *({"text": f"filler {i}", "label": "b"} for i in range(30))],
                                   name="leaky", split_fractions=(1.0, 0.0, 0.0))
    assert leaked_text in list(other["train"]["text"])
    mixed = mix_tasks([*parts, ("leaky", other)])
    assert leaked_text not in list(mixed["train"]["text"])
    assert leaked_text in list(mixed["test"]["text"])


def test_mixture_errors(raw_sources):
    with pytest.raises(ValueError, match="tasks: must be a non-empty list"):
        mix_tasks([])
    with pytest.raises(ValueError, match="one of .*'spam'"):
        mix_tasks(["not_a_task"])
    dd = load_task("gsm8k", source_dir=raw_sources["gsm8k"])
    with pytest.raises(ValueError, match="each task may appear once"):
        mix_tasks([("a", dd), ("a", dd)])
    empty = {split: dd[split].select([]) for split in SPLITS}
    with pytest.raises(ValueError, match="tasks: the mixture has no examples"):
        mix_tasks([("empty_one", empty), ("empty_two", empty)])
    load_task_from_dataset([{"text": f"t {i}", "label": "a"} for i in range(5)], name="mine")
    with pytest.raises(ValueError, match=r"pass \('mine', the_datasetdict\)"):
        mix_tasks(["mine"])
