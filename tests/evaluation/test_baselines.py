"""The majority, TF-IDF + LR and frozen-encoder linear-probe baselines on small tasks whose answer is in their words."""

import random

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from talklora_hub.evaluation import baselines


def word_task(n_train=200, n_test=80, seed=0):
    """Label 1 when the text holds a 'hot' word, 0 for a 'cold' word; 70% of training rows are label 0."""
    rng = random.Random(seed)
    hot, cold, filler = ["fire", "sun", "lava"], ["ice", "snow", "frost"], ["the", "a", "day", "was", "very", "it"]

    def rows(n, share_hot):
        out = []
        for _ in range(n):
            label = int(rng.random() < share_hot)
            words = rng.sample(filler, 4) + [rng.choice(hot if label else cold)]
            rng.shuffle(words)
            out.append({"text": " ".join(words), "label": label})
        return out

    features = Features({"text": Value("string"), "label": ClassLabel(names=["cold", "hot"])})
    return DatasetDict(train=Dataset.from_list(rows(n_train, 0.3), features=features),
                       test=Dataset.from_list(rows(n_test, 0.5), features=features))


def test_majority_predicts_the_training_majority_on_the_test_split():
    data = word_task()
    result = baselines.majority("words", splits=data)
    labels = data["test"]["label"]
    assert result.details["label"] == 0
    assert result.accuracy.value == pytest.approx(labels.count(0) / len(labels))
    assert result.hits == [label == 0 for label in labels]
    assert result.accuracy.low <= result.accuracy.value <= result.accuracy.high


def test_tfidf_lr_learns_the_words_and_beats_the_majority():
    data = word_task()
    tfidf = baselines.tfidf_lr("words", splits=data)
    assert tfidf.accuracy.value > 0.95
    assert tfidf.accuracy.low > baselines.majority("words", splits=data).accuracy.high
    few = baselines.tfidf_lr("words", splits=data, max_train_examples=20)
    assert few.details["train_examples"] == 20


def test_frozen_encoder_lr_reads_the_words_through_a_tiny_random_encoder_and_picks_c_on_validation(tmp_path):
    # The tiny BERT's vocabulary holds the helpers' colour words: warm (label 1) vs cool (label 0).
    from ..train.helpers import COOL, FILLER, WARM, save_tiny_bert

    rng = random.Random(0)

    def rows(n):
        out = []
        for i in range(n):
            label = i % 2
            words = [rng.choice(WARM if label else COOL)] + rng.sample(FILLER, 3)
            rng.shuffle(words)
            out.append({"text": " ".join(words), "label": label})
        return out

    features = Features({"text": Value("string"), "label": ClassLabel(names=["cool", "warm"])})
    data = DatasetDict(**{name: Dataset.from_list(rows(n), features=features)
                          for name, n in (("train", 160), ("validation", 60), ("test", 80))})
    base = save_tiny_bert(tmp_path / "bert")
    probe = baselines.frozen_encoder_lr("colours", str(base), splits=data, max_length=16, cs=(0.1, 1.0, 10.0))
    assert probe.accuracy.low > baselines.majority("colours", splits=data).accuracy.high
    assert set(probe.details["validation_accuracy"]) == {"0.1", "1.0", "10.0"}
    best = max(probe.details["validation_accuracy"].values())
    assert probe.details["validation_accuracy"][str(probe.details["C"])] == best
    assert len(probe.hits) == 80 and probe.details["train_examples"] == 160
    assert probe.details["base"] == "bert"  # the folder's name, never a path of this machine
    # Without a validation split nothing is tuned: C = 1.
    no_validation = DatasetDict(train=data["train"], test=data["test"])
    assert baselines.frozen_encoder_lr("colours", str(base), splits=no_validation, max_length=16).details["C"] == 1.0
