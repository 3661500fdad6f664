"""Tiny offline pieces for the training tests: a word-level tokenizer built in code, tiny random base
models saved as ordinary transformers folders, and synthetic tasks registered through
load_task_from_dataset."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, List

import torch
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, BertConfig, LlamaConfig,
                          PreTrainedTokenizerFast)

SPECIALS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]", "[CLS]", "[SEP]"]  # ids 0..5: pad 0, bos 1, eos 2 as in the tiny configs

WARM = ["red", "orange", "yellow", "gold", "amber", "coral", "crimson", "peach"]
COOL = ["blue", "green", "teal", "navy", "cyan", "mint", "indigo", "jade"]
LAND = ["lion", "horse", "goat", "tiger", "camel", "zebra", "mouse", "bear"]
SEA = ["shark", "whale", "squid", "crab", "eel", "tuna", "seal", "octopus"]
FILLER = ["the", "a", "some", "very", "and", "with", "one", "two"]

COLOR_TEMPLATE = "Colors : {text} . Warm or cool ? Answer :"
ANIMAL_TEMPLATE = "Animals : {text} . Land or sea ? Result :"
SUM_TEMPLATE = "Add : {text} . Sum :"


def _words(texts: List[str]) -> List[str]:
    from tokenizers.pre_tokenizers import Whitespace

    pre = Whitespace()
    seen: Dict[str, None] = {}
    for text in texts:
        for piece, _ in pre.pre_tokenize_str(text):
            seen.setdefault(piece, None)
    return list(seen)


def build_tokenizer(extra_texts: List[str] = (), bert: bool = False) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer over every word the synthetic tasks use (plus digits)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    texts = [COLOR_TEMPLATE, ANIMAL_TEMPLATE, SUM_TEMPLATE, "Classify the text as {choices} . Answer :",
             " ".join(WARM + COOL + LAND + SEA + FILLER), "warm cool land sea pos neg or",
             " ".join(str(i) for i in range(20)), *extra_texts]
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for word in _words(texts):
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    if bert:
        core.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 4), ("[SEP]", 5)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", eos_token="[EOS]", bos_token="[BOS]",
                                  unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", model_max_length=64)
    return tok


def save_tiny_llama(folder: Path, seed: int = 0, vocab_size: int = None) -> Path:
    tok = build_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size or len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True, pad_token_id=0, eos_token_id=2, bos_token_id=1,
                      initializer_range=0.5)  # wide enough embeddings that a frozen tied head can be confident
    AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def save_tiny_bert(folder: Path, seed: int = 0) -> Path:
    tok = build_tokenizer(bert=True)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=128, pad_token_id=0)
    AutoModelForSequenceClassification.from_config(cfg, dtype=torch.float32).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def color_rows(n: int, seed: int = 0) -> Dict[str, list]:
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        warm = i % 2 == 0
        pool = WARM if warm else COOL
        words = [rng.choice(pool) for _ in range(3)] + [rng.choice(FILLER)]
        rng.shuffle(words)
        texts.append(" ".join(words) + f" {i % 20}")
        labels.append("warm" if warm else "cool")
    return {"text": texts, "label": labels}


def animal_rows(n: int, seed: int = 1) -> Dict[str, list]:
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        land = i % 2 == 0
        pool = LAND if land else SEA
        words = [rng.choice(pool) for _ in range(3)] + [rng.choice(FILLER)]
        rng.shuffle(words)
        texts.append(" ".join(words) + f" {i % 20}")
        labels.append("land" if land else "sea")
    return {"text": texts, "label": labels}


def sum_rows(n: int, seed: int = 2) -> Dict[str, list]:
    rng = random.Random(seed)
    texts, answers = [], []
    for i in range(n):
        a, b = rng.randrange(10), rng.randrange(10)
        texts.append(f"{a} {b} {rng.choice(FILLER)} {i}")
        answers.append(str(a + b))
    return {"text": texts, "answer": answers}


def colors_task(n: int = 48, name: str = "syn_colors"):
    from datasets import Dataset

    from talklora_hub.data import load_task_from_dataset

    return name, load_task_from_dataset(Dataset.from_dict(color_rows(n)), name=name, label_column="label",
                                        label_names=["warm", "cool"], template=COLOR_TEMPLATE)


def animals_task(n: int = 48, name: str = "syn_animals"):
    from datasets import Dataset

    from talklora_hub.data import load_task_from_dataset

    return name, load_task_from_dataset(Dataset.from_dict(animal_rows(n)), name=name, label_column="label",
                                        label_names=["land", "sea"], template=ANIMAL_TEMPLATE)


def sums_task(n: int = 40, name: str = "syn_sums"):
    from datasets import Dataset

    from talklora_hub.data import load_task_from_dataset

    return name, load_task_from_dataset(Dataset.from_dict(sum_rows(n)), name=name, answer_column="answer",
                                        answer_kind="number", template=SUM_TEMPLATE)
