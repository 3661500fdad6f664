"""Session-wide isolation, applied before any test imports transformers or huggingface_hub.

Hugging Face caches (downloads, and the dynamic modules that trust_remote_code imports) go to a fresh
temporary folder, so the tests never read or write the user's ~/.cache/huggingface, and no test can
leave `transformers_modules` pointing somewhere the next one cannot see.
"""

import os
import tempfile

_ROOT = tempfile.mkdtemp(prefix="talklora-tests-hf-")
os.environ["HF_HOME"] = os.path.join(_ROOT, "home")
os.environ["HF_MODULES_CACHE"] = os.path.join(_ROOT, "modules")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
