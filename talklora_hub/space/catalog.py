"""Which models the Space's picker offers: an explicit list ($TALKLORA_SPACE_MODELS or --models), the zoo
index ($TALKLORA_ZOO_INDEX: a local JSON file or a Hub repo holding zoo.json), and, when both are empty,
the `models:` of the Space README's front matter. An index that is slow or unreachable never stops the
Space from starting.
"""

from __future__ import annotations

import json
import os
import re
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .models import model_label

MODELS_ENV = "TALKLORA_SPACE_MODELS"            # "id1,id2": the models the picker offers
ALLOW_ANY_ENV = "TALKLORA_SPACE_ALLOW_ANY_MODEL"  # "1": also accept ids typed by the user
ZOO_INDEX_ENV = "TALKLORA_ZOO_INDEX"              # where the zoo index lives (see default_zoo_lister)
ZOO_TIMEOUT_ENV = "TALKLORA_ZOO_TIMEOUT"          # seconds to wait for the index at start-up
DEFAULT_ZOO_TIMEOUT = 10.0

ModelChoice = Tuple[str, str]  # (label shown, model id: a local folder or a Hub repo id)

_zoo_listers: List[Callable[[], List[Any]]] = []


def register_zoo_lister(lister: Callable[[], List[Any]]) -> None:
    """Plugs in a zoo index reader: a callable returning entries (repo ids, (label, id) pairs or dicts
    with "repo_id"/"id" and optional "label"/"method"). Registered listers replace the default one."""
    _zoo_listers.append(lister)


def clear_zoo_listers() -> None:
    _zoo_listers.clear()


def default_zoo_lister() -> List[Any]:
    """Reads the zoo index named by $TALKLORA_ZOO_INDEX: a local JSON file, or a Hub repo holding
    zoo.json. "owner/talklora-zoo" is a dataset repo (as talklora_hub publishes it); "models/owner/name" or
    "datasets/owner/name" name the repo type; a path ending in .json names the file, e.g.
    "owner/talklora-zoo/zoo.json". Unset: no index."""
    spec = os.environ.get(ZOO_INDEX_ENV, "").strip()
    if not spec:
        return []
    if os.path.isfile(spec):
        with open(spec, encoding="utf-8") as handle:
            return _index_entries(json.load(handle))
    from huggingface_hub import hf_hub_download

    parts = spec.strip("/").split("/")
    repo_type = "dataset"
    if parts[0] in ("datasets", "spaces", "models"):
        repo_type = {"datasets": "dataset", "spaces": "space", "models": "model"}[parts[0]]
        parts = parts[1:]
    filename = "/".join(parts[2:]) if len(parts) > 2 and parts[-1].endswith(".json") else "zoo.json"
    local = hf_hub_download("/".join(parts[:2]), filename, repo_type=repo_type, etag_timeout=5)
    with open(local, encoding="utf-8") as handle:
        return _index_entries(json.load(handle))


def _index_entries(data: Any) -> List[Any]:
    """The loadable entries of an index: a list, {"models": [...]}, or talklora_hub's zoo.json
    ({"entries": {repo_id: entry}}), keeping full causal-LM models (experts and routers alone need
    talklora_hub to assemble)."""
    if isinstance(data, dict):
        data = data.get("models", data.get("entries", []))
    if isinstance(data, dict):
        data = list(data.values())
    if not isinstance(data, list):
        return []
    return [e for e in data if not isinstance(e, dict)
            or (e.get("kind", "model") == "model" and e.get("head", "causal") == "causal")]


def _as_choice(entry: Any) -> Optional[ModelChoice]:
    if isinstance(entry, str) and entry.strip():
        return (model_label(entry.strip()), entry.strip())
    if isinstance(entry, (tuple, list)) and len(entry) == 2:
        return (str(entry[0]), str(entry[1]))
    if isinstance(entry, dict):
        model_id = entry.get("repo_id") or entry.get("id") or entry.get("model_id")
        if not model_id:
            return None
        label = entry.get("label") or model_label(str(model_id))
        method = entry.get("method_label") or entry.get("method")  # the label the publisher wrote, else the name
        if method and not entry.get("label"):
            label = f"{label} ({method})"
        return (str(label), str(model_id))
    return None


def _call_with_timeout(lister: Callable[[], List[Any]], timeout: float) -> List[Any]:
    """lister() in a daemon thread; [] if it fails or takes longer than timeout seconds (the Hub client
    retries an unreachable host for a long while)."""
    box: Dict[str, Any] = {}

    def run() -> None:
        try:
            box["entries"] = list(lister() or [])
        except Exception:
            box["entries"] = []

    thread = threading.Thread(target=run, name="talklora-zoo-index", daemon=True)
    thread.start()
    thread.join(timeout)
    return box.get("entries", [])


def list_zoo_models(timeout: Optional[float] = None) -> List[ModelChoice]:
    """The zoo's models as (label, id) pairs; [] when no index is configured, it cannot be reached, or it
    does not answer within timeout seconds ($TALKLORA_ZOO_TIMEOUT, default 10)."""
    timeout = float(os.environ.get(ZOO_TIMEOUT_ENV, DEFAULT_ZOO_TIMEOUT)) if timeout is None else timeout
    choices: List[ModelChoice] = []
    for lister in list(_zoo_listers) or [default_zoo_lister]:
        entries = _call_with_timeout(lister, timeout)
        choices.extend(c for c in map(_as_choice, entries) if c is not None)
    return _unique(choices)


def readme_models(readme_path: str) -> List[str]:
    """The `models:` list of a Space README's front matter (the deployed Space's default list). Read by
    hand, not with a YAML parser: the deployed Space depends on no YAML library."""
    try:
        with open(readme_path, encoding="utf-8") as handle:
            lines = handle.read().split("\n")
    except OSError:
        return []
    if not lines or lines[0].strip() != "---":
        return []
    models, inside = [], False
    for line in lines[1:]:
        if line.strip() == "---":
            break
        if re.match(r"^models:\s*$", line):
            inside = True
        elif inside and re.match(r"^\s*-\s+", line):
            models.append(line.split("-", 1)[1].strip().strip("'\""))
        elif inside and line.strip():
            inside = False
    return models


def resolve_model_choices(explicit: Optional[Sequence[str]] = None,
                          readme_path: Optional[str] = None) -> List[ModelChoice]:
    """The picker's list: the explicit ids (else $TALKLORA_SPACE_MODELS), then the zoo index; the
    README's `models:` only when both are empty."""
    ids = list(explicit or [])
    if not ids:
        ids = [m.strip() for m in os.environ.get(MODELS_ENV, "").split(",") if m.strip()]
    choices = [(model_label(m), m) for m in ids] + list_zoo_models()
    if not choices and readme_path:
        choices = [(model_label(m), m) for m in readme_models(readme_path)]
    return _unique(choices)


def _unique(choices: List[ModelChoice]) -> List[ModelChoice]:
    seen, result = set(), []
    for label, model_id in choices:
        if model_id not in seen:
            seen.add(model_id)
            result.append((label, model_id))
    return result


def allow_any_model() -> bool:
    return os.environ.get(ALLOW_ANY_ENV, "").strip().lower() in ("1", "true", "yes")
