"""Built-in tasks on fixture sources: splits, determinism, dedup, formatting, errors."""

from __future__ import annotations

import pytest

from talklora_hub.data.splits import SPLITS
from talklora_hub.data.tasks import get_task, list_tasks, load_task
from talklora_hub.data.text import normalize_text

TASK_SOURCES = {"spam": "spam-assassin", "fortune_topic": "fortunes", "sotu_party": "sotu",
                "sotu_era": "sotu", "gsm8k": "gsm8k", "chatter_topic": "chatterbot-corpus"}


@pytest.fixture(scope="module")
def built(raw_sources):
    """Every built-in task built twice from the fixtures (to compare runs)."""
    return {name: (load_task(name, source_dir=raw_sources[src]), load_task(name, source_dir=raw_sources[src]))
            for name, src in TASK_SOURCES.items()}


def test_registry_lists_the_builtin_tasks():
    assert set(TASK_SOURCES) <= set(list_tasks())


@pytest.mark.parametrize("name", list(TASK_SOURCES))
def test_splits_are_disjoint_stable_and_nonempty(built, name):
    first, second = built[name]
    assert list(first) == list(SPLITS)
    for split in SPLITS:
        assert len(first[split]) > 0, f"{name}/{split} is empty"
        assert list(first[split]["id"]) == list(second[split]["id"])  # same ids, same order, twice
    ids = [set(first[s]["id"]) for s in SPLITS]
    texts = [{normalize_text(t) for t in first[s]["text"]} for s in SPLITS]
    groups = [set(first[s]["group"]) for s in SPLITS]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not ids[a] & ids[b]
            assert not texts[a] & texts[b]  # no test or validation text in train
            assert not groups[a] & groups[b]  # a group (speech year, mail, question) never straddles splits
    all_ids = [i for s in SPLITS for i in first[s]["id"]]
    assert len(all_ids) == len(set(all_ids)) and all(i.startswith(f"{name}:") for i in all_ids)


@pytest.mark.parametrize("name", list(TASK_SOURCES))
def test_prompt_and_target_follow_the_spec(built, name):
    spec = get_task(name)
    row = built[name][0]["train"][0]
    assert row["prompt"] == spec.format_prompt(row["text"])
    assert row["text"] in row["prompt"]
    if spec.kind == "classification":
        assert row["target"] == " " + spec.verbalizers[row["label"]]
        assert row["answer"] == spec.verbalizers[row["label"]]
        assert built[name][0]["train"].features["label"].names == list(spec.label_names)
    else:
        assert row["target"].endswith(f"#### {row['answer']}")


def test_spam_strips_headers_quotes_footers_and_html(built):
    dd = built["spam"][0]
    texts = [t for s in SPLITS for t in dd[s]["text"]]
    joined = "\n".join(texts)
    for gone in ("Return-Path", "Received:", "quoted line", "mailing list", "[Example]", "<script", "var x", "http://"):
        assert gone not in joined
    assert any("BUY NOW" in t and "& more" in t for t in texts)  # HTML reduced to its text
    assert all(t.startswith("Subject: ") for t in texts)


def test_spam_deduplicates_and_drops_conflicting_labels(built):
    dd = built["spam"][0]
    texts = [normalize_text(t) for s in SPLITS for t in dd[s]["text"]]
    assert len(texts) == len(set(texts))
    assert not any("identical text in two classes" in t for t in texts)
    # 40 ham + 30 spam + 1 duplicate + 2 conflicting = 73 mails -> 70 examples.
    assert len(texts) == 70


def test_fortunes_clean_overstrike_drop_long_and_conflicts(built):
    dd = built["fortune_topic"][0]
    texts = [t for s in SPLITS for t in dd[s]["text"]]
    assert "Bold words on law" in texts
    assert not any("\b" in t or len(t) > 1000 for t in texts)
    assert not any("shared saying" in t.lower() for t in texts)
    assert sum(len(dd[s]) for s in SPLITS) == 6 * 26


def test_sotu_paragraphs_are_chunks_and_years_stay_together(built):
    dd = built["sotu_party"][0]
    row = dd["train"][0]
    assert len(row["text"].split()) >= 40 and row["group"].startswith("sotu:")
    years_party = {int(g.split(":")[1]) for s in SPLITS for g in dd[s]["group"]}
    assert min(years_party) >= 1933  # the modern-era cut
    era = built["sotu_era"][0]
    # Both SOTU tasks put a speech year in the same split, so mixing them leaks nothing.
    for split in SPLITS:
        party_groups, era_groups = set(dd[split]["group"]), set(era[split]["group"])
        for other in SPLITS:
            if other != split:
                assert not party_groups & set(era[other]["group"])
        assert era_groups


def test_gsm8k_answer_and_solution(built):
    dd = built["gsm8k"][0]
    rows = [r for s in SPLITS for r in dd[s]]
    assert len(rows) == 60  # the duplicate question is dropped
    row = next(r for r in rows if r["id"] == "gsm8k:test-0000")
    assert row["answer"] == "3" and "<<" not in row["solution"] and row["target"] == " He has 2 + 1 = 3 apples.\n#### 3"
    big = next(r for r in rows if r["id"] == "gsm8k:test-0059")
    assert big["answer"] == str(61 + 178)  # "#### 239" parsed; thousands commas would be removed too


def test_unknown_task_lists_known_names():
    with pytest.raises(ValueError) as error:
        load_task("no_such_task")
    message = str(error.value)
    assert "task" in message and "'no_such_task'" in message and "spam" in message and "gsm8k" in message


def test_missing_source_says_how_to_fetch(tmp_path):
    with pytest.raises(FileNotFoundError, match="data fetch spam-assassin"):
        load_task("spam", cache_dir=tmp_path)


def test_task_cache_round_trip(fixture_cache):
    first = load_task("fortune_topic", cache_dir=fixture_cache)
    saved = list((fixture_cache / "tasks").glob("fortune_topic-*"))
    assert len(saved) == 1 and (saved[0] / "dataset_dict.json").is_file()
    again = load_task("fortune_topic", cache_dir=fixture_cache)
    assert list(again["test"]["id"]) == list(first["test"]["id"])
    assert list(again["train"]["prompt"]) == list(first["train"]["prompt"])
