"""The zoo index: one dataset repo per namespace (`{namespace}/talklora-zoo`) holding `zoo.json` and a
README table of every published model, expert and router (method, base, task, headline metric),
updated on each push. Updates name their parent commit and retry on a conflict, so two publishers
never drop each other's entries.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from huggingface_hub import CommitOperationAdd, DatasetCard, DatasetCardData, HfApi, hf_hub_download

from .push import http_status, with_retries

ZOO_FILE = "zoo.json"
ZOO_TAGS = ["talklora", "talklora-zoo"]
# Rendered by DatasetCard.from_template (Jinja2): `card_data` is the YAML that DatasetCardData writes.
ZOO_CARD_TEMPLATE = """---
{{ card_data }}
---

# talklora_hub zoo

| repo | kind | method | base | task | headline | commit |
|---|---|---|---|---|---|---|
{% for row in rows %}| {{ row | join(" | ") }} |
{% endfor %}"""


def default_zoo_repo(api: HfApi, namespace: Optional[str] = None) -> str:
    namespace = namespace or api.whoami()["name"]
    return f"{namespace}/talklora-zoo"


def read_zoo(zoo_repo: str, api: Optional[HfApi] = None, revision: Optional[str] = None) -> Dict[str, Any]:
    api = api or HfApi()
    if not api.repo_exists(zoo_repo, repo_type="dataset") or not api.file_exists(zoo_repo, ZOO_FILE,
                                                                                  repo_type="dataset", revision=revision):
        return {"entries": {}}
    with tempfile.TemporaryDirectory(prefix="zoo-") as cache:  # a private cache, gone after the read
        path = hf_hub_download(zoo_repo, ZOO_FILE, repo_type="dataset", revision=revision,
                               endpoint=api.endpoint, token=api.token, cache_dir=cache)
        return json.loads(Path(path).read_text())


def list_zoo(zoo_repo: Optional[str] = None, api: Optional[HfApi] = None) -> List[Dict[str, Any]]:
    """Entries sorted by kind then repo id."""
    api = api or HfApi()
    entries = read_zoo(zoo_repo or default_zoo_repo(api), api)["entries"].values()
    return sorted(entries, key=lambda e: (e.get("kind", ""), e["repo_id"]))


def _headline_text(entry: Dict[str, Any]) -> str:
    headline = entry.get("headline")
    return f"{headline['task']} {headline['metric']} {headline['value']:.3f}" if headline else ""


def _row(entry: Dict[str, Any]) -> List[str]:
    """The README table's cells for one entry: repo, kind, method, base, task(s), headline, commit."""
    task = entry.get("task")
    tasks = ", ".join(t for t in task if t) if isinstance(task, list) else (task or "")
    return [f"`{entry['repo_id']}`", entry.get("kind", ""), entry.get("method", ""), f"`{entry.get('base') or ''}`",
            tasks, _headline_text(entry), f"`{(entry.get('revision') or '')[:10]}`"]


def render_zoo_readme(entries: List[Dict[str, Any]]) -> str:
    """The index repo's README: dataset card metadata (tags) above a table of `entries`."""
    card = DatasetCard.from_template(DatasetCardData(tags=ZOO_TAGS), template_str=ZOO_CARD_TEMPLATE,
                                     rows=[_row(entry) for entry in entries])
    return str(card)


def update_zoo(entry: Dict[str, Any], zoo_repo: Optional[str] = None, api: Optional[HfApi] = None,
               attempts: int = 5) -> str:
    """Upserts `entry` (keyed by its repo_id) and rewrites the index; returns the new commit id."""
    api = api or HfApi()
    zoo_repo = zoo_repo or default_zoo_repo(api, entry["repo_id"].split("/")[0])
    with_retries(lambda: api.create_repo(zoo_repo, repo_type="dataset", exist_ok=True))
    for attempt in range(attempts):
        head = api.repo_info(zoo_repo, repo_type="dataset").sha
        zoo = read_zoo(zoo_repo, api, revision=head)
        zoo["entries"][entry["repo_id"]] = {**entry, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        entries = sorted(zoo["entries"].values(), key=lambda e: (e.get("kind", ""), e["repo_id"]))
        operations = [CommitOperationAdd(ZOO_FILE, json.dumps(zoo, indent=2, sort_keys=True).encode()),
                      CommitOperationAdd("README.md", render_zoo_readme(entries).encode())]
        try:
            info = api.create_commit(zoo_repo, operations, commit_message=f"Index {entry['repo_id']}",
                                     repo_type="dataset", parent_commit=head)
            return info.oid
        except Exception as error:  # noqa: BLE001  a concurrent update moved the head: read again
            if http_status(error) not in (409, 412) or attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")
