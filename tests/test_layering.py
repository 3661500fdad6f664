"""The package's imports run one way: a package imports only the packages below it (the README's layout
section draws the same picture). Function-level imports count too: hiding an upward import inside a
function does not make it go away. Read from the source with ast, so nothing here is imported."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "talklora_hub"

# Lowest first; a package may import packages of a LOWER rank only (peers do not import each other).
LAYERS = [
    ["modeling"],                         # the adapters and the Hub-travelling model code
    ["data", "analysis", "localhub", "testing"],
    ["train"],
    ["evaluation", "publish"],
    ["zoo", "space"],
    ["jobs"],
    ["cli"],
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _imported_packages(path: Path, root: Path = PACKAGE):
    """(line, package) for every talklora_hub sub-package the module at `path` (inside `root`) imports."""
    package = path.relative_to(root.parent).with_suffix("").parts[:-1]  # ("talklora_hub", "zoo") for zoo/x.py
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[:len(package) - (node.level - 1)])
                target = base + (node.module.split(".") if node.module else [])
                if len(target) == 1:  # `from .. import x`: x is the sub-package
                    target += [alias.name for alias in node.names][:1]
            else:
                target = (node.module or "").split(".")
            if target[0] == "talklora_hub" and len(target) > 1:
                yield node.lineno, target[1]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "talklora_hub" and len(parts) > 1:
                    yield node.lineno, parts[1]


def _sub_packages():
    return sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())


def test_every_sub_package_has_a_layer():
    assert sorted(RANK) == _sub_packages(), "a new sub-package needs a place in LAYERS (and the README's layout)"


def test_no_module_sits_beside_the_packages():
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"modules belong in a sub-package, found {loose} at the package root"


def test_imports_run_one_way():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).parts[0]
        if own not in RANK:
            continue
        for line, target in _imported_packages(path):
            if target != own and (target not in RANK or RANK[target] >= RANK[own]):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({own}) imports {target}")
    assert upward == [], "imports that run up or sideways:\n" + "\n".join(upward)


def test_the_checker_sees_relative_and_function_level_imports(tmp_path):
    probe = PACKAGE / "train" / "__init__.py"  # a real module: the walker must find nothing upward there
    assert all(RANK.get(t, -1) < RANK["train"] or t == "train" for _, t in _imported_packages(probe))
    fake = tmp_path / "talklora_hub" / "train" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("import torch\n\ndef f():\n    from ..publish import publisher\n"
                    "    from talklora_hub.cli import main\n    from . import config\n    from .. import zoo\n")
    found = sorted(t for _, t in _imported_packages(fake, tmp_path / "talklora_hub"))
    assert found == ["cli", "publish", "train", "zoo"]
