"""One switch for third-party chatter in the main job's commands (`data fetch`, `data bootstrap-models`,
`zoo build`).

Quiet by default: the Hugging Face libraries' progress bars (Hub uploads and downloads, Xet's "Processing
Files" / "New Data Upload" bars, datasets' shard and parquet bars, transformers' "Loading weights" and
"Writing model shards") and their INFO/WARNING chatter ("Setting num_proc from 1 back to 1", transformers'
load reports, bitsandbytes' kernel fallbacks) are off; our own stage bars and results stay. `--verbose`, or
TALKLORA_VERBOSE=1 in the environment, leaves every library exactly as it is.

Only the libraries' own knobs are used, and every one is put back on exit, so a command run in-process
(the tests do) leaves nothing behind. Child processes (zoo build's fresh interpreter, the Space) read the
same settings from environment variables, which the libraries take at import; those are set for the
block's duration only.
"""

from __future__ import annotations

import argparse
import logging
import os
from contextlib import ExitStack, contextmanager
from typing import Dict, Iterator, Mapping, Optional

ENV_SWITCH = "TALKLORA_VERBOSE"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")

# Plain `logging` loggers with no knob of their own. bitsandbytes warns on import when it cannot fetch its
# CPU kernel from the Hub ("Failed to load CPU gemm_4bit_forward from kernels-community"), which offline
# is always; the fallback it takes is the one we want.
QUIET_LOGGERS = ("bitsandbytes",)

# What a child interpreter reads at import: the same quiet the parent sets through the knobs below.
CHILD_ENV: Dict[str, str] = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",       # huggingface_hub's bars, Xet's, and transformers' (it follows them)
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
    "TRANSFORMERS_VERBOSITY": "error",         # load reports ("Notes: - MISSING ...") are warnings
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    # No library reads this one: zoo build's fresh interpreter (FRESH_LOAD) applies it to QUIET_LOGGERS.
    "TALKLORA_QUIET_LOGGERS": ",".join(QUIET_LOGGERS),
}


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """The one switch, the same on every command of the main job."""
    parser.add_argument("--verbose", action="store_true",
                        help="show the libraries' progress bars and messages, and a line per item "
                             f"(also: {ENV_SWITCH}=1)")


def wants_verbose(flag: bool = False, environ: Optional[Mapping[str, str]] = None) -> bool:
    """True when `--verbose` was given or TALKLORA_VERBOSE says so; an unreadable value is an error, not a
    silent guess."""
    value = (os.environ if environ is None else environ).get(ENV_SWITCH, "").strip().lower()
    if value not in _TRUE + _FALSE:
        raise ValueError(f"{ENV_SWITCH}: must be one of {', '.join(repr(v) for v in _TRUE + _FALSE[1:])} or unset; "
                         f"got {value!r}. Fix: `export {ENV_SWITCH}=1` to see third-party output, or unset it.")
    return flag or value in _TRUE


@contextmanager
def third_party_output(verbose: bool) -> Iterator[None]:
    """Within the block, third-party progress bars and chatter are off unless `verbose`; on exit every knob
    and environment variable touched is put back."""
    if verbose:
        yield
        return
    with ExitStack() as stack:
        # Registered first so it runs last: transformers' own restore may re-enable the Hub's bars.
        _quiet_hub(stack)
        _quiet_datasets(stack)
        _quiet_transformers(stack)
        for name in QUIET_LOGGERS:
            _set_level(stack, logging.getLogger(name), logging.ERROR)
        # After the libraries are imported, so the parent's own import-time settings are unaffected and
        # the knobs above stay free to change back.
        _set_env(stack, CHILD_ENV)
        yield


def _quiet_hub(stack: ExitStack) -> None:
    from huggingface_hub import constants
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars
    from huggingface_hub.utils import logging as hub_logging

    # HF_HUB_DISABLE_PROGRESS_BARS=0 in the user's environment is their explicit choice (and the library
    # would only warn that it cannot comply).
    if constants.HF_HUB_DISABLE_PROGRESS_BARS is not False and not are_progress_bars_disabled():
        # Its own context manager re-enables on exit exactly when it was enabled before.
        stack.enter_context(disable_progress_bars())
    _set_verbosity(stack, hub_logging)


def _quiet_datasets(stack: ExitStack) -> None:
    try:
        from datasets import config
        from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
        from datasets.utils import logging as datasets_logging
    except ImportError:  # datasets is a dependency, but a command must not fail for want of quiet
        return
    if config.HF_DATASETS_DISABLE_PROGRESS_BARS is not False and not are_progress_bars_disabled():
        disable_progress_bars()
        stack.callback(enable_progress_bars)
    _set_verbosity(stack, datasets_logging)


def _quiet_transformers(stack: ExitStack) -> None:
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return
    from huggingface_hub import constants

    # Its switch also flips the Hub's, which HF_HUB_DISABLE_PROGRESS_BARS=0 forbids (see _quiet_hub).
    if constants.HF_HUB_DISABLE_PROGRESS_BARS is not False and transformers_logging.is_progress_bar_enabled():
        transformers_logging.disable_progress_bar()
        stack.callback(transformers_logging.enable_progress_bar)
    _set_verbosity(stack, transformers_logging)


def _set_verbosity(stack: ExitStack, library_logging) -> None:
    """A library's set_verbosity (it configures the library's root logger first, which setLevel alone
    would not), restored to the level it had."""
    before = library_logging.get_verbosity()
    library_logging.set_verbosity(logging.ERROR)
    stack.callback(library_logging.set_verbosity, before)


def _set_level(stack: ExitStack, logger: logging.Logger, level: int) -> None:
    before = logger.level
    logger.setLevel(max(level, before))
    stack.callback(logger.setLevel, before)


def _set_env(stack: ExitStack, values: Mapping[str, str]) -> None:
    """Sets what the user has not set themselves (their explicit choice wins), restored on exit."""
    added = [key for key in values if key not in os.environ]
    for key in added:
        os.environ[key] = values[key]
    stack.callback(lambda: [os.environ.pop(key, None) for key in added])
