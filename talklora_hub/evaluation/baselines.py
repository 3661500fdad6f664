"""The baselines every zoo entry is measured against, on the same test split with the same metric.

- majority: always the most frequent label of the training split;
- tfidf_lr: TF-IDF over word 1-2-grams (sublinear tf) + logistic regression with C = 10 (scikit-learn),
  trained on the training split's text: the classical model a practitioner tries first (C = 10 rather
  than the default 1: on these tasks it is the stronger of the two, so the bar is not set low);
- zero_shot_lm: the untouched causal LM base, constrained scoring of the task's verbalizers after its
  prompt (exactly how the zoo's causal models are scored, with a zero update);
- zero_shot_encoder: a sentence encoder's cosine similarity between the text and a short description
  of each label (the encoder's own zero-shot use; its classification head would be random);
- frozen_encoder_lr: logistic regression on the frozen encoder's mean-pooled embeddings (a linear probe:
  the floor an adapter on that encoder should clear; benchmarks/quality/encoder_probe.py).

Each returns a BaselineResult: the accuracy with its 95% interval and the per-example hits, so that
paired comparisons against a model on the same examples are possible.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Dict, List, Optional, Sequence

from .intervals import Accuracy
from .scoring import accuracy_and_hits

# Label descriptions for the sentence-encoder zero-shot baseline, written once and not tuned on any split.
ZERO_SHOT_LABELS = {
    "spam": {"ham": "a normal personal or work email", "spam": "an unsolicited advertising spam email"},
    "sotu_party": {"Democratic": "a speech by a Democratic president", "Republican": "a speech by a Republican president"},
    "sotu_era": {"1790-1860": "a speech from the early republic, 1790 to 1860",
                 "1861-1932": "a speech from the industrial era, 1861 to 1932",
                 "1933-1980": "a speech from the mid twentieth century, 1933 to 1980",
                 "1981-2021": "a speech from the modern era, 1981 to 2021"},
}


@dataclass
class BaselineResult:
    """name: which baseline; accuracy: on `split` of `task`; hits: one bool per example, in split order."""

    name: str
    task: str
    split: str
    accuracy: Accuracy
    hits: List[bool] = field(repr=False)
    details: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "task": self.task, "split": self.split, **self.accuracy.to_dict(),
                "details": self.details}


def _result(name: str, task: str, split: str, predictions: Sequence[int], labels: Sequence[int],
            **details) -> BaselineResult:
    accuracy, hits = accuracy_and_hits(predictions, labels)
    return BaselineResult(name, task, split, accuracy, hits, details)


def _base_name(base_path) -> str:
    """The base's folder name, which is what a result records: a cache path means nothing on another machine."""
    return PurePath(str(base_path)).name


def _splits(task: str, splits=None):
    if splits is not None:
        return splits
    from ..data.tasks import load_task

    return load_task(task)


def majority(task: str, split: str = "test", splits=None) -> BaselineResult:
    """Always predict the training split's most frequent label."""
    data = _splits(task, splits)
    label, _ = Counter(data["train"]["label"]).most_common(1)[0]
    labels = data[split]["label"]
    # The training split's majority is what a model could know; the split's own majority share (an
    # oracle) is recorded beside it, since the splits are by speech year and their label mix differs.
    split_share = Counter(labels).most_common(1)[0][1] / len(labels)
    return _result("majority class", task, split, [label] * len(labels), labels, label=int(label),
                   split_majority_share=split_share)


def tfidf_lr(task: str, split: str = "test", splits=None, max_train_examples: Optional[int] = None,
             seed: int = 0) -> BaselineResult:
    """TF-IDF (word 1-2-grams, sublinear tf) + logistic regression (C = 10) on the training split's text."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    data = _splits(task, splits)
    train = data["train"]
    if max_train_examples is not None and max_train_examples < len(train):
        train = train.shuffle(seed=seed).select(range(max_train_examples))
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                          LogisticRegression(C=10.0, max_iter=2000, random_state=seed))
    model.fit(train["text"], train["label"])
    predictions = [int(p) for p in model.predict(data[split]["text"])]
    return _result("TF-IDF + LR", task, split, predictions, data[split]["label"], train_examples=len(train))


def zero_shot_lm(task: str, base_path: str, split: str = "test", splits=None, max_length: int = 96,
                 batch_size: int = 16) -> BaselineResult:
    """The bare causal LM base scoring the task's verbalizers after its prompt (no training)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..data.tasks import get_task
    from ..modeling import AdapterSettings, TalkLoRAForCausalLM
    from ..train.evaluate import score_choices

    spec = get_task(task)
    data = _splits(task, splits)[split]
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    # A LoRA with B = 0 computes exactly the base: the same scoring code path as the trained models.
    model = TalkLoRAForCausalLM.from_base(base, AdapterSettings(method="lora", r=1)).eval()
    choices = [" " + v for v in spec.verbalizers]
    scores = score_choices(model, tokenizer, data["prompt"], [choices] * len(data), max_length, batch_size)
    predictions = [max(range(len(s)), key=s.__getitem__) for s in scores]
    return _result("zero-shot base", task, split, predictions, data["label"], max_length=max_length,
                   base=_base_name(base_path))


def load_encoder(base_path: str):
    """(tokenizer, encoder) of a frozen sentence encoder, in eval mode."""
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(base_path), AutoModel.from_pretrained(base_path).eval()


def mean_pooled_embeddings(encoder, tokenizer, texts: Sequence[str], max_length: int = 128, batch_size: int = 32):
    """The frozen encoder's sentence embeddings: last hidden states mean-pooled over the real tokens, then
    L2-normalised (how all-MiniLM-L6-v2 is meant to be used). Returns a float32 tensor (N, hidden)."""
    import torch

    rows = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[start:start + batch_size]), truncation=True, max_length=max_length,
                            padding=True, return_tensors="pt")
            hidden = encoder(**enc).last_hidden_state  # (B, S, H)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            rows.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(rows).float()


def zero_shot_encoder(task: str, base_path: str, split: str = "test", splits=None, max_length: int = 128,
                      batch_size: int = 32) -> BaselineResult:
    """A sentence encoder's zero-shot classification: the label whose description embedding (mean-pooled,
    L2-normalised) is closest in cosine to the text's."""
    from ..data.tasks import get_task

    spec = get_task(task)
    data = _splits(task, splits)[split]
    phrases = ZERO_SHOT_LABELS.get(task, {})
    descriptions = [phrases.get(name, name) for name in spec.label_names]
    tokenizer, encoder = load_encoder(base_path)
    similarity = (mean_pooled_embeddings(encoder, tokenizer, data["text"], max_length, batch_size)
                  @ mean_pooled_embeddings(encoder, tokenizer, descriptions, max_length, batch_size).T)  # (N, labels)
    predictions = [int(i) for i in similarity.argmax(-1)]
    return _result("zero-shot base", task, split, predictions, data["label"], label_descriptions=descriptions,
                   base=_base_name(base_path))


PROBE_CS = (0.3, 1.0, 3.0, 10.0, 30.0)


def frozen_encoder_lr(task: str, base_path: str, split: str = "test", splits=None, max_length: int = 256,
                      batch_size: int = 32, cs: Sequence[float] = PROBE_CS, seed: int = 0) -> BaselineResult:
    """A linear probe: logistic regression on the frozen encoder's mean-pooled embeddings, trained on the
    whole training split. What an adapter on that encoder should at least reach: it sees the same
    features and may change them. C is chosen on the validation split where the task has one (never on
    `split`), else C = 1; every C's validation accuracy is in the details."""
    from sklearn.linear_model import LogisticRegression

    data = _splits(task, splits)
    tokenizer, encoder = load_encoder(base_path)
    features = {name: mean_pooled_embeddings(encoder, tokenizer, data[name]["text"], max_length, batch_size).numpy()
                for name in {"train", split, *(["validation"] if "validation" in data else [])}}

    def fit(c: float):
        return LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(features["train"], data["train"]["label"])

    chosen, validation = 1.0, {}
    if "validation" in data and split != "validation":
        validation = {c: float(fit(c).score(features["validation"], data["validation"]["label"])) for c in cs}
        chosen = max(cs, key=lambda c: (validation[c], -abs(c - 1.0)))  # ties: the C nearest the default
    predictions = [int(p) for p in fit(chosen).predict(features[split])]
    return _result("frozen encoder + LR", task, split, predictions, data[split]["label"], C=chosen,
                   validation_accuracy={str(c): v for c, v in validation.items()}, max_length=max_length,
                   train_examples=len(data["train"]), base=_base_name(base_path))
