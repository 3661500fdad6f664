"""Builds the deployable Space folder from this package: app.py and routing_views.py copied verbatim (this
package holds the one source), plus a README.md with the Space front matter and a requirements.txt.

The folder is self-contained: the Space never imports talklora_hub, the models bring their own code.
`talklora-hub space build` rewrites spaces/talklora-routing/; `check_space` lists what drifted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent.parent
SPACE_DIR = REPO_ROOT / "spaces" / "talklora-routing"  # the checked-in copy (exists in a source checkout)
SOURCES = ("app.py", "routing_views.py")

# The gradio the Space runs on (Spaces install it from sdk_version); a test checks it is the installed one.
GRADIO_VERSION = "6.31.0"
REQUIREMENTS = [
    f"gradio=={GRADIO_VERSION}",
    "torch>=2.4",
    "transformers>=5.20.0",
    "safetensors>=0.4",
    "huggingface_hub>=1.0",
]
# The zoo's full models as the main job publishes them on the embedded Hub (its user is "user"), the
# trained TalkLoRA mixture first: offered when no list or index is configured. Override with
# `space build --models` / `space push --models` for another Hub.
DEFAULT_MODELS = [
    "user/smollm2-talklora-mixture",
    "user/smollm2-moelora-mixture",
    "user/smollm2-lora-mixture",
]

README_TEMPLATE = """---
title: TalkLoRA Routing
emoji: 🔀
colorFrom: indigo
colorTo: yellow
sdk: gradio
sdk_version: {gradio_version}
python_version: "3.11"
app_file: app.py
pinned: false
license: apache-2.0
short_description: See which LoRA expert every token is routed to
models:
{models}
tags:
  - mixture-of-experts
  - lora
  - talklora
  - routing
---

# TalkLoRA routing: which expert does every token go to?

Mixture-of-LoRA-experts adapters route every token to a soft mix of E low-rank experts in each adapted
module. This Space loads a model of the talklora_hub zoo and shows the routing of any text:

1. **Tokens by top expert**: the text, each token coloured by the expert with the largest weight (for one
   layer and module, or averaged over the model); the shade says how sure the router is, hovering a token
   shows all its weights and its routing entropy.
2. **Tokens × experts**: a heatmap of the routing weights of every token for the chosen layer/module.
3. **Layers × experts**: each expert's mean load over the text, per layer (red above the uniform share
   1/E, blue below).
4. **Entropy, load and balance**: per-token routing entropy, expert load bars, and the balance figures
   (mean and normalised entropy, coefficient of variation of the load, max share, dead experts).
5. **Compare two models** (e.g. MoELoRA and TalkLoRA) on the same text, side by side.
6. **Expert per sequence** for a TT-LoRA MoE: the expert its router picks for the whole sequence and the
   router's probabilities.

**Continue with generate()** streams new tokens and colours each one as soon as the model reads it.
A plain LoRA model has no routing (the Space says so and shows its tokens only).

## Models

The picker lists, in order: the ids in `TALKLORA_SPACE_MODELS` (comma-separated local folders or repo ids),
the zoo index named by `TALKLORA_ZOO_INDEX` (e.g. `talklora-hub/talklora-zoo`, a dataset repo with
`zoo.json`), and otherwise the `models:` above. Every model loads with
`AutoModelForCausalLM.from_pretrained(id, trust_remote_code=True)`; repo ids resolve against `HF_ENDPOINT`.
Only listed models are offered; `TALKLORA_SPACE_ALLOW_ANY_MODEL=1` also accepts typed ids (they run their
own code: for local use). Texts longer than the model reads (its context, or `TALKLORA_SPACE_MAX_TOKENS`,
default 512) are truncated, and the Space says so.

## Run locally

```bash
pip install -r requirements.txt
python app.py --models path/to/saved-model another/repo-id   # http://127.0.0.1:7860
```

Everything is drawn as inline HTML/SVG: no plotting library, no external assets, no analytics, so the
Space also runs offline. This folder is generated from `talklora_hub/space/` by `talklora-hub space build`
(edit the sources there); `talklora-hub space push OWNER/NAME` uploads it.
"""


def render_readme(models: Sequence[str]) -> str:
    lines = "\n".join(f"  - {m}" for m in models) if models else "  []"
    return README_TEMPLATE.format(gradio_version=GRADIO_VERSION, models=lines)


def space_files(models: Optional[Sequence[str]] = None) -> Dict[str, bytes]:
    """{relative path: content} of the Space folder."""
    files = {name: (PACKAGE_DIR / name).read_bytes() for name in SOURCES}
    files["README.md"] = render_readme(list(models) if models is not None else DEFAULT_MODELS).encode()
    files["requirements.txt"] = ("\n".join(REQUIREMENTS) + "\n").encode()
    return files


def build_space(out_dir: Union[str, os.PathLike, None] = None, models: Optional[Sequence[str]] = None) -> Path:
    """Writes the Space folder (default: spaces/talklora-routing) and returns its path. Files it does not
    generate are removed, so the folder is exactly what gets deployed; caches are ignored."""
    out = Path(out_dir) if out_dir is not None else SPACE_DIR
    out.mkdir(parents=True, exist_ok=True)
    files = space_files(models)
    for path in out.iterdir():
        if path.name not in files and path.name != "__pycache__":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for name, content in files.items():
        target = out / name
        if not target.exists() or target.read_bytes() != content:
            staging = target.with_name(f".{name}.tmp")
            staging.write_bytes(content)
            os.replace(staging, target)
    return out


def check_space(space_dir: Union[str, os.PathLike, None] = None, models: Optional[Sequence[str]] = None) -> List[str]:
    """What differs between a Space folder and a fresh build ([] when up to date). models None: the
    README's own list, so only the generated text and the copied sources are compared."""
    folder = Path(space_dir) if space_dir is not None else SPACE_DIR
    if models is None:
        models = _readme_models(folder / "README.md")
    expected = space_files(models)
    problems = []
    for name, content in expected.items():
        path = folder / name
        if not path.exists():
            problems.append(f"{name}: missing")
        elif path.read_bytes() != content:
            problems.append(f"{name}: differs from a fresh build")
    present = {p.name for p in folder.iterdir() if p.name != "__pycache__"} if folder.exists() else set()
    problems += [f"{name}: not part of the build" for name in sorted(present - set(expected))]
    return problems


def _readme_models(path: Path) -> List[str]:
    from .routing_views import readme_models

    return readme_models(str(path)) if path.exists() else list(DEFAULT_MODELS)


def build_to_temp(models: Optional[Sequence[str]] = None) -> Path:
    """A fresh build in a temporary folder (the caller removes it)."""
    return build_space(Path(tempfile.mkdtemp(prefix="talklora-space-")), models)
