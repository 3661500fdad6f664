"""Every entry shipped in zoo/ loads through the real loading path (attached to its bootstrapped base,
checked by weight fingerprint) and scores a fixed slice of its test split as its record says.

This catches a stale or corrupted artifact (weights that do not match their record, a base that changed,
a scoring change); it is not the full evaluation, which `talklora-hub zoo retrain` records on the whole
test splits. Slice scores are compared with the recorded per-example hits on the same examples: they
must agree up to SLACK flips, since another CPU may round a near-tie the other way.
"""

import pytest

from talklora_hub.zoo.shipped import attach_shipped, default_zoo_dir, read_record, shipped_entries

SLICE = 24
SLACK = 2

ENTRIES = shipped_entries(default_zoo_dir())


def _bootstrapped(name):
    from talklora_hub.data.base_models import base_model_path

    try:
        base_model_path(name)
        return True
    except (FileNotFoundError, ValueError):
        return False


def test_the_zoo_ships_every_kind_of_entry():
    kinds = {read_record(folder)["kind"] for folder in ENTRIES.values()}
    assert "expert" in kinds and "model" in kinds, f"the shipped zoo lacks entries: {sorted(ENTRIES)}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_a_shipped_entry_scores_its_recorded_slice(name):
    from transformers import AutoTokenizer

    from talklora_hub.data.base_models import base_model_path
    from talklora_hub.evaluation.scoring import score

    folder = ENTRIES[name]
    record = read_record(folder)
    if not _bootstrapped(record["base"]["name"]):
        pytest.skip(f"base {record['base']['name']} is not bootstrapped (talklora-hub data bootstrap-models)")
    model = attach_shipped(folder)  # raises if the base's fingerprint differs from the recorded one
    tokenizer = AutoTokenizer.from_pretrained(base_model_path(record["base"]["name"]))
    scored = score(model, tokenizer, record["tasks"], "classification" if record["head"] == "classification" else "causal",
                   record["recipe"]["max_length"], limit=SLICE, progress=False)
    for task, result in scored.items():
        recorded = [c == "1" for c in record["metrics"][task]["hits"][:SLICE]]
        flips = sum(a != b for a, b in zip(result["hits"], recorded))
        assert len(result["hits"]) == len(recorded)
        assert flips <= SLACK, (f"{name} on {task}: {flips} of {len(recorded)} slice predictions differ from the record "
                                f"(now {sum(result['hits'])}/{len(recorded)}, recorded {sum(recorded)}/{len(recorded)})")


def test_the_report_has_a_row_per_entry_and_task_and_pairs_the_mixtures(tmp_path):
    from talklora_hub.zoo.report import write_report

    text = write_report(out=tmp_path / "README.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and " | " in line]
    for name, folder in ENTRIES.items():
        for task in read_record(folder)["metrics"]:
            assert any(line.startswith(f"| {name} |") and f"| {task} |" in line for line in rows), (name, task)
    if {"talklora", "lora"} <= {read_record(f)["adapter"]["method"] for f in ENTRIES.values()
                                if read_record(f)["kind"] == "model"}:
        assert "talklora − lora" in text and "pooled" in text
