"""User data through load_task_from_dataset: inputs, column mapping, splits and clear errors."""

from __future__ import annotations

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from talklora_hub.data.custom import load_task_from_dataset
from talklora_hub.data.splits import SPLITS
from talklora_hub.data.tasks import get_task
from talklora_hub.data.text import normalize_text

from .talklora_raw_fixtures import phrase


def rows(n=50):
    return [{"sentence": f"Review {phrase(i)}", "sentiment": "pos" if i % 2 else "neg", "uid": f"r{i}"} for i in range(n)]


def test_list_of_dicts_with_column_mapping():
    dd = load_task_from_dataset(rows(), name="reviews", text_column="sentence", label_column="sentiment", id_column="uid",
                                verbalizers=["negative", "positive"])
    assert sum(len(dd[s]) for s in SPLITS) == 50 and all(len(dd[s]) for s in SPLITS)
    row = dd["train"][0]
    spec = get_task("reviews")  # registered for this process
    assert spec.label_names == ("neg", "pos") and row["target"] == " " + spec.verbalizers[row["label"]]
    assert row["id"].startswith("reviews:r") and "Classify the text as negative or positive." in row["prompt"]
    again = load_task_from_dataset(rows(), name="reviews", text_column="sentence", label_column="sentiment", id_column="uid",
                                   verbalizers=["negative", "positive"])
    assert list(again["test"]["id"]) == list(dd["test"]["id"])


def test_csv_file_and_default_label_column(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\n" + "\n".join(f"{phrase(i)},{'a' if i % 3 else 'b'}" for i in range(30)) + "\n")
    dd = load_task_from_dataset(str(path), name="csv_task")
    assert sum(len(dd[s]) for s in SPLITS) == 30 and dd["train"].features["label"].names == ["a", "b"]


def test_classlabel_ints_and_generation_task():
    features = Features({"text": Value("string"), "label": ClassLabel(names=["cat", "dog"])})
    ds = Dataset.from_dict({"text": [phrase(i) for i in range(20)], "label": [i % 2 for i in range(20)]}, features=features)
    dd = load_task_from_dataset(ds, name="pets")
    assert dd["train"].features["label"].names == ["cat", "dog"]
    gen = load_task_from_dataset([{"q": phrase(i), "a": str(i)} for i in range(20)], name="echo", text_column="q",
                                 answer_column="a", answer_kind="number")
    assert gen["train"][0]["target"] == " " + gen["train"][0]["answer"]
    assert get_task("echo").metric_name == "exact_match_final_number"


def test_preset_splits_kept_and_test_text_removed_from_train():
    train = Dataset.from_list([{"text": phrase(i), "label": "x" if i % 2 else "y"} for i in range(40)])
    # The test split repeats a training text (differing only in case): it must leave train.
    test = Dataset.from_list([{"text": phrase(3).upper(), "label": "x"}, {"text": "held out only", "label": "y"}])
    dd = load_task_from_dataset(DatasetDict({"train": train, "test": test}), name="preset")
    assert len(dd["test"]) == 2
    assert len(dd["validation"]) > 0  # carved from train
    train_texts = {normalize_text(t) for t in [*dd["train"]["text"], *dd["validation"]["text"]]}
    assert normalize_text(phrase(3)) not in train_texts
    assert sum(len(dd[s]) for s in SPLITS) == 41


def test_missing_column_error_names_everything():
    with pytest.raises(ValueError) as error:
        load_task_from_dataset(rows(), name="bad", text_column="body", label_column="sentiment")
    message = str(error.value)
    assert "text_column" in message and "'body'" in message and "sentence" in message and "Pass text_column=" in message


@pytest.mark.parametrize("data", [[], Dataset.from_dict({"text": [], "label": []}), [{"text": "  ", "label": "a"}]])
def test_empty_dataset_error(data):
    with pytest.raises(ValueError, match="data: must contain at least one example"):
        load_task_from_dataset(data, name="empty")


def test_other_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="label_column/answer_column: pass exactly one"):
        load_task_from_dataset(rows(), text_column="sentence", label_column="sentiment", answer_column="uid")
    with pytest.raises(ValueError, match="label_column: needed"):
        load_task_from_dataset(rows(), text_column="sentence")
    with pytest.raises(ValueError, match="sentiment: every label must be one of"):
        load_task_from_dataset(rows(), text_column="sentence", label_column="sentiment", label_names=["pos"])
    with pytest.raises(ValueError, match="name: must not be a built-in task name"):
        load_task_from_dataset(rows(), name="spam", text_column="sentence", label_column="sentiment")
    with pytest.raises(ValueError, match="id_column: values must be unique"):
        load_task_from_dataset([{"text": phrase(i), "label": "a", "k": "same"} for i in range(3)], id_column="k")
    with pytest.raises(ValueError, match="data: a path must be"):
        load_task_from_dataset(str(tmp_path / "missing.csv"))
    with pytest.raises(ValueError, match="data: files must end in one of"):
        (tmp_path / "x.xml").write_text("<a/>")
        load_task_from_dataset(str(tmp_path / "x.xml"))
    with pytest.raises(ValueError, match="template: must contain the slot"):
        load_task_from_dataset(rows(), text_column="sentence", label_column="sentiment", template="no slot")
