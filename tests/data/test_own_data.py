"""Your own data as a task (talklora_hub.data.own_data): the formats it reads, the splits it makes, and one
test per error, each checking that the message names the argument, the value received and the fix."""

from __future__ import annotations

import csv
import json

import pytest

from talklora_hub.data.own_data import OwnData, load_own_task, own_task_name
from talklora_hub.data.splits import SPLITS

from .talklora_raw_fixtures import phrase

TOPICS = ("food", "law", "sports")


def table(n=60, start=0):
    return [{"sentence": f"Note {phrase(i)}", "topic": TOPICS[i % 3]} for i in range(start, start + n)]


def write_csv(path, rows, columns=("sentence", "topic")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([[row[c] for c in columns] for row in rows])
    return str(path)


def own(path, **kwargs):
    return OwnData(train_file=str(path), text_column="sentence", label_column="topic", **kwargs)


def error_of(data: OwnData) -> str:
    with pytest.raises(ValueError) as raised:
        load_own_task(data)
    return str(raised.value)


# ---- what it reads ------------------------------------------------------------------------------
def test_csv_becomes_a_task_named_after_the_file(tmp_path):
    name, splits = load_own_task(own(write_csv(tmp_path / "My Tickets.csv", table())))
    assert name == "my_tickets"
    assert sum(len(splits[s]) for s in SPLITS) == 60 and all(len(splits[s]) for s in SPLITS)
    assert splits["train"].features["label"].names == list(TOPICS)
    row = splits["train"][0]
    assert row["prompt"].startswith("Classify the text as food or law or sports.") and row["target"] == " " + row["answer"]


def test_split_of_a_row_depends_on_its_text_not_on_row_order(tmp_path):
    rows = table(80)
    _, first = load_own_task(own(write_csv(tmp_path / "a.csv", rows), task_name="a"))
    _, again = load_own_task(own(write_csv(tmp_path / "b.csv", rows[::-1] + table(10, start=500)), task_name="a"))
    for split in SPLITS:
        assert set(first[split]["text"]) <= set(again[split]["text"])


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl", ".json", ".parquet", ".csv-bom"])
def test_other_formats(tmp_path, suffix):
    rows = table()
    path = tmp_path / f"data{suffix.replace('-bom', '')}"
    if suffix == ".tsv":
        path.write_text("sentence\ttopic\n" + "".join(f"{r['sentence']}\t{r['topic']}\n" for r in rows))
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:  # Excel's "CSV UTF-8" starts with a byte-order mark
        path.write_bytes(b"\xef\xbb\xbf" + "sentence,topic\n".encode() + "".join(
            f"{r['sentence']},{r['topic']}\n" for r in rows).encode())
    name, splits = load_own_task(own(path))
    assert name == "data" and sum(len(splits[s]) for s in SPLITS) == 60


def test_validation_and_test_files_are_kept_and_numbers_sort_as_numbers(tmp_path):
    rows = [{"sentence": r["sentence"], "topic": str([2, 10, 1][i % 3])} for i, r in enumerate(table(90))]
    data = own(write_csv(tmp_path / "train.csv", rows[:60]), test_file=write_csv(tmp_path / "test.csv", rows[60:75]),
               validation_file=write_csv(tmp_path / "dev.csv", rows[75:]))
    _, splits = load_own_task(data)
    assert (len(splits["train"]), len(splits["validation"]), len(splits["test"])) == (60, 15, 15)
    assert splits["train"].features["label"].names == ["1", "2", "10"]


def test_a_test_file_alone_carves_validation_from_train(tmp_path):
    rows = table(110)
    _, splits = load_own_task(own(write_csv(tmp_path / "t.csv", rows[:100]), test_file=write_csv(tmp_path / "x.csv", rows[100:])))
    assert len(splits["test"]) == 10 and len(splits["validation"]) > 0
    assert len(splits["train"]) + len(splits["validation"]) == 100


def test_a_validation_file_alone_is_kept_and_test_is_carved_from_train(tmp_path):
    rows = table(110)
    data = own(write_csv(tmp_path / "t.csv", rows[:100]), validation_file=write_csv(tmp_path / "v.csv", rows[100:]))
    _, splits = load_own_task(data)
    assert set(splits["validation"]["text"]) == {r["sentence"] for r in rows[100:]} and len(splits["test"]) > 0
    assert len(splits["train"]) + len(splits["test"]) == 100


def test_saved_dataset_dict_with_classlabel(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"body": Value("string"), "y": ClassLabel(names=["no", "yes"])})
    part = lambda lo, hi: Dataset.from_dict({"body": [phrase(i) for i in range(lo, hi)],  # noqa: E731
                                             "y": [i % 2 for i in range(lo, hi)]}, features=features)
    DatasetDict({"train": part(0, 60), "test": part(60, 70)}).save_to_disk(str(tmp_path / "saved"))
    name, splits = load_own_task(OwnData(dataset=str(tmp_path / "saved"), text_column="body", label_column="y"))
    assert name == "saved" and len(splits["test"]) == 10
    assert splits["train"].features["label"].names == ["no", "yes"]


def test_task_name_rules():
    assert own_task_name(OwnData(train_file="/x/2024 Sales-Data.csv")) == "data_2024_sales_data"
    assert own_task_name(OwnData(dataset="user/reviews")) == "reviews"
    assert own_task_name(OwnData(train_file="a.csv", task_name="mine")) == "mine"


# ---- the errors, one test each ----------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"\n  \n"])
def test_empty_file(tmp_path, content):
    (tmp_path / "data.csv").write_bytes(content)
    message = error_of(own(tmp_path / "data.csv"))
    assert "`--train-file` must not be empty" in message and "data.csv" in message and "Fix:" in message


def test_non_utf8_file_names_the_byte_offset_and_how_to_re_encode(tmp_path):
    (tmp_path / "data.csv").write_bytes("sentence,topic\nCaf".encode() + "é au lait,food\n".encode("latin-1"))
    message = error_of(own(tmp_path / "data.csv"))
    assert "`--train-file` must be UTF-8 text" in message and "data.csv" in message
    assert "byte 0xe9 at byte offset 18 (line 2, column 4)" in message and "iconv" in message


def test_missing_column_lists_the_real_columns(tmp_path):
    path = write_csv(tmp_path / "data.csv", table())
    message = error_of(OwnData(train_file=path, text_column="sentense", label_column="topic"))
    assert "`--text-column` must name a column of data.csv" in message and "['sentence', 'topic']" in message
    assert "got 'sentense'" in message and "Fix: pass --text-column 'sentence'" in message
    message = error_of(OwnData(train_file=path, text_column="sentence"))  # no --label-column, no 'label' column
    assert "`--label-column` is needed" in message and "pass --label-column topic" in message


def test_semicolon_separated_file_gets_a_hint(tmp_path):
    (tmp_path / "data.csv").write_text("sentence;topic\n" + "".join(f"{r['sentence']};{r['topic']}\n" for r in table()))
    assert "looks like one column holding several" in error_of(own(tmp_path / "data.csv"))


def test_header_only_file(tmp_path):
    (tmp_path / "data.csv").write_text("sentence,topic\n")
    message = error_of(own(tmp_path / "data.csv"))
    assert "`--train-file` must hold at least one row of data" in message
    assert "['sentence', 'topic'] and no rows" in message and "Fix: add one row per example" in message


def test_single_class(tmp_path):
    rows = [{**r, "topic": "sports"} for r in table()]
    message = error_of(own(write_csv(tmp_path / "data.csv", rows)))
    assert "`--label-column` must hold at least two classes" in message
    assert "'topic' is 'sports' in all 60 rows of data.csv" in message and "Fix: add rows of the other classes" in message


def test_too_few_rows_says_how_many_are_needed(tmp_path):
    message = error_of(own(write_csv(tmp_path / "data.csv", table(30))))
    assert "`--train-file` must have at least 50 distinct training rows" in message
    assert "10% validation and test splits" in message and "got '30 rows'" in message and "add at least 20 more rows" in message


def test_rows_left_too_few_by_deduplication(tmp_path):
    rows = [table(4)[i % 4] for i in range(80)]  # 80 rows, 4 distinct texts
    message = error_of(own(write_csv(tmp_path / "data.csv", rows)))
    assert "`--train-file` must keep at least 50 distinct training rows after deduplication" in message
    assert "80 rows but only 4 distinct ones (76 repeated texts removed)" in message and "Fix: add more distinct" in message


def test_train_emptied_by_a_test_file_with_the_same_texts(tmp_path):
    path = write_csv(tmp_path / "data.csv", table())
    message = error_of(own(path, test_file=path))
    assert "after deduplication" in message and "texts also in the validation/test data" in message
    assert "60 rows but only 0 distinct ones" in message


def test_test_file_emptied_by_deduplication(tmp_path):
    rows = table(60)
    message = error_of(own(write_csv(tmp_path / "a.csv", rows), validation_file=write_csv(tmp_path / "v.csv", rows[:5]),
                           test_file=write_csv(tmp_path / "b.csv", rows[:5])))
    assert "`--validation-file` must keep at least one example after deduplication" in message and "5 rows" in message


def test_missing_labels_name_the_lines(tmp_path):
    rows = table()
    rows[3]["topic"] = ""
    message = error_of(own(write_csv(tmp_path / "data.csv", rows)))
    assert "`--label-column` must have a label in every row" in message and "data.csv line 5" in message


def test_ragged_csv_row(tmp_path):
    (tmp_path / "data.csv").write_text("sentence,topic\nfine text,food\nsalt, pepper and oil,food\n")
    message = error_of(own(tmp_path / "data.csv"))
    assert "line 3 with 3 fields" in message and "double quotes" in message


@pytest.mark.parametrize("data, expected", [
    (OwnData(train_file="a.csv", dataset="b"), "`--dataset` cannot be combined with --train-file"),
    (OwnData(dataset="b", test_file="t.csv"), "`--test-file` needs --train-file"),
    (OwnData(train_file="a.csv", template="no slot"), "`--template` must contain the slot {text}"),
    (OwnData(train_file="spam.csv"), "`--task-name` must not be a built-in task's name"),
    (OwnData(train_file="a.csv", label_column="y", answer_column="z"), "`--answer-column` cannot be combined"),
])
def test_argument_rules(data, expected):
    assert expected in error_of(data)


def test_missing_and_unknown_format_files(tmp_path):
    assert "`--train-file` must be an existing data file" in error_of(own(tmp_path / "nope.csv"))
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    assert "`--train-file` must end in one of" in error_of(own(tmp_path / "data.xlsx"))
    assert "`--dataset` must be an existing folder" in error_of(OwnData(dataset="./no-such-folder"))
