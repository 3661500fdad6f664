"""The main job's closing table: every zoo entry, its kind, its accuracy on EVERY task it covers (a mixture
covers three) with the 95% interval, and where to click. Built from the shipped records (zoo/<entry>/
record.json, written by zoo/retrain.py from evaluation/scoring.py's whole-test-split scores), so it reads the same
figures as the model cards and zoo/README.md."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

# Mixtures first (the Space's models), then the single-task experts, then the router that composes them.
KIND_ORDER = {"model": 0, "expert": 1, "router": 2}


def card_url(endpoint: str, repo_id: str) -> str:
    """The entry's model card on the Hub (the embedded Hub serves files, not repo pages)."""
    return f"{endpoint.rstrip('/')}/{repo_id}/resolve/main/README.md"


def accuracy_text(metrics: Dict[str, Any]) -> str:
    """0.957 [0.937, 0.972]: the accuracy and its 95% interval."""
    return f"{metrics['accuracy']:.3f} [{metrics['low']:.3f}, {metrics['high']:.3f}]"


def _ordered(records: Dict[str, Dict[str, Any]]) -> List[str]:
    return sorted(records, key=lambda name: (KIND_ORDER.get(records[name]["kind"], len(KIND_ORDER)), name))


def closing_table(records: Dict[str, Dict[str, Any]], endpoint: str, user: str) -> List[str]:
    """Lines of the table: a header, then per entry one row per task (name and kind on the first) and a line
    with its model card's URL. `records`: {entry name: shipped record} with "kind" and "metrics"
    ({task: {"accuracy", "low", "high", "n"}})."""
    width = max([len("entry")] + [len(name) for name in records])
    tasks = max([len("task")] + [len(task) for record in records.values() for task in record["metrics"]])
    lines = [f"{'entry':{width}}  {'kind':6}  {'task':{tasks}}  {'n':>4}  accuracy on the whole test split [95% CI]"]
    for name in _ordered(records):
        record = records[name]
        if not record["metrics"]:
            raise ValueError(f"records[{name!r}]['metrics']: every shipped entry must carry at least one task's "
                             f"accuracy; got none. Fix: re-score it with `talklora-hub zoo retrain --only {name}`.")
        for i, (task, metrics) in enumerate(record["metrics"].items()):
            entry, kind = (name, record["kind"]) if i == 0 else ("", "")
            lines.append(f"{entry:{width}}  {kind:6}  {task:{tasks}}  {metrics['n']:>4}  {accuracy_text(metrics)}")
        lines.append(f"  card: {card_url(endpoint, f'{user}/{name}')}")
    return lines


def closing_lines(records: Dict[str, Dict[str, Any]], endpoint: str, user: str, index_repo: str, seconds: float,
                  new_commits: int, space_url: Optional[str]) -> List[str]:
    """The whole closing block: a title, the table, the time taken and where the Space is (or why not)."""
    commits = f"{new_commits} new commit{'s' if new_commits != 1 else ''}" if new_commits else "no new commits"
    lines = [f"The zoo: {len(records)} entries on the embedded Hub {endpoint} (index {index_repo}); {commits}; "
             f"{seconds:.0f} s in all."]
    lines += closing_table(records, endpoint, user)
    if space_url:
        lines.append(f"Space: {space_url} (starting; Ctrl-C stops it and the Hub)")
    else:
        lines.append("Space: not started (--no-serve); the Hub, and the links above, stopped with this job. "
                     "Run without --no-serve to keep both up.")
    return lines
