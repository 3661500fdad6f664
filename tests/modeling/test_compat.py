"""The supported transformers range: declared once in the bundle, equal to pyproject's lower bound, and an older
release fails at import / load of the bundle with a message naming the range, the release found and the fix.
(scripts/transformers_matrix.sh checks the range's two ends on real releases.)"""

import re
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest
import transformers
from transformers import AutoConfig

from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM
from talklora_hub.modeling.compat import (SUPPORTED_TRANSFORMERS, TRANSFORMERS_MIN_VERSION, check_transformers_version,
                                          parse_version)

from .conftest import tiny_base

REPO = Path(__file__).resolve().parents[2]
MESSAGE = ("talklora_hub models need transformers>=5.20.0, this is 4.57.6; "
           "fix: pip install -U 'transformers>=5.20.0'")


def test_pyproject_requires_the_bundles_minimum_transformers():
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = [d for d in dependencies if re.match(r"transformers\b", d)]
    assert declared == [SUPPORTED_TRANSFORMERS] == [f"transformers>={TRANSFORMERS_MIN_VERSION}"]


def test_installed_transformers_is_supported():
    check_transformers_version()
    assert parse_version(transformers.__version__) >= parse_version(TRANSFORMERS_MIN_VERSION)


@pytest.mark.parametrize("version,ok", [("4.57.6", False), ("5.19.0", False), ("5.19.99", False), ("5.0.0", False),
                                        ("5.20.0", True), ("5.20.0.dev0", True), ("5.24.0", True), ("6.0", True),
                                        ("unknown", True)])
def test_version_check(version, ok):
    if ok:
        check_transformers_version(version)
    else:
        with pytest.raises(ImportError, match=re.escape(f"this is {version}; fix: pip install -U 'transformers>=5.20.0'")):
            check_transformers_version(version)


def test_loading_a_saved_model_on_old_transformers_names_the_range_and_the_fix(tmp_path, monkeypatch):
    folder = tmp_path / f"old-transformers-{uuid.uuid4().hex[:8]}"  # a module name no other test imported
    TalkLoRAForCausalLM.from_base(tiny_base("llama"), AdapterSettings(r=8)).save_pretrained(folder)
    # The module object bound to the name now (transformers' lazy module can be swapped once models are built).
    monkeypatch.setattr(sys.modules["transformers"], "__version__", "4.57.6")
    with pytest.raises(ImportError) as caught:
        AutoConfig.from_pretrained(folder, trust_remote_code=True)
    assert str(caught.value) == MESSAGE


def test_importing_the_package_on_old_transformers_names_the_range_and_the_fix(tmp_path):
    code = "import transformers; transformers.__version__ = '4.57.6'; import talklora_hub.modeling"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == f"ImportError: {MESSAGE}"
