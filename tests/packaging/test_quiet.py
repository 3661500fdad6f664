"""The main job's commands are quiet by default and readable at the end (issue 20).

- `data fetch`, `data bootstrap-models` and `zoo build` turn the Hugging Face libraries' progress bars and
  chatter off through the libraries' own knobs, put every knob back afterwards, and hand the quiet to child
  interpreters through the environment; `--verbose` or TALKLORA_VERBOSE=1 leaves the libraries alone.
- The closing table lists every entry with EVERY task's accuracy and interval, and where to click.

No model, no Hub, no network: the commands' work is replaced by recorders of the state they run under.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from talklora_hub.cli import main
from talklora_hub.cli.verbosity import CHILD_ENV, ENV_SWITCH, third_party_output, wants_verbose
from talklora_hub.jobs.zoo_summary import closing_lines, closing_table


def library_state() -> dict:
    """What the libraries would show right now."""
    from datasets.utils import are_progress_bars_disabled as datasets_bars_off
    from datasets.utils import logging as datasets_logging
    from huggingface_hub.utils import are_progress_bars_disabled as hub_bars_off
    from transformers.utils import logging as transformers_logging

    return {"hub bars off": hub_bars_off(), "datasets bars off": datasets_bars_off(),
            "transformers bars on": transformers_logging.is_progress_bar_enabled(),
            "transformers level": transformers_logging.get_verbosity(),
            "datasets level": datasets_logging.get_verbosity(),
            "bitsandbytes level": logging.getLogger("bitsandbytes").getEffectiveLevel(),
            "env": {key: os.environ.get(key) for key in CHILD_ENV}}


@pytest.fixture
def loud(monkeypatch):
    """The libraries as a user gets them: bars on, warnings shown, no switch in the environment."""
    for key in (ENV_SWITCH, *CHILD_ENV):
        monkeypatch.delenv(key, raising=False)
    state = library_state()
    if state["hub bars off"] or state["datasets bars off"] or not state["transformers bars on"]:
        pytest.skip("this environment forces the libraries' progress bars off (HF_*_DISABLE_PROGRESS_BARS)")
    return state


def test_the_switch_reads_the_flag_and_the_environment():
    assert wants_verbose(False, {}) is False
    assert wants_verbose(True, {}) is True
    assert wants_verbose(False, {ENV_SWITCH: "1"}) is True
    assert wants_verbose(False, {ENV_SWITCH: "0"}) is False
    assert wants_verbose(True, {ENV_SWITCH: "0"}) is True  # the flag is the louder of the two
    with pytest.raises(ValueError, match=f"{ENV_SWITCH}: must be one of .*got 'loud'.*Fix: `export {ENV_SWITCH}=1`"):
        wants_verbose(False, {ENV_SWITCH: "loud"})


def test_quiet_turns_bars_and_chatter_off_and_puts_everything_back(loud):
    with third_party_output(verbose=False):
        quiet = library_state()
    assert quiet["hub bars off"] and quiet["datasets bars off"] and not quiet["transformers bars on"]
    assert quiet["transformers level"] == quiet["datasets level"] == quiet["bitsandbytes level"] == logging.ERROR
    assert quiet["env"] == CHILD_ENV
    assert library_state() == loud


def test_verbose_leaves_the_libraries_alone(loud):
    with third_party_output(verbose=True):
        assert library_state() == loud


def test_a_user_set_variable_wins(loud, monkeypatch):
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    with third_party_output(verbose=False):
        assert os.environ["TRANSFORMERS_VERBOSITY"] == "info"
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "info"


def test_a_child_interpreter_inherits_the_quiet(loud):
    probe = ("from huggingface_hub.utils import are_progress_bars_disabled as off\n"
             "from datasets.utils import are_progress_bars_disabled as data_off\n"
             "from transformers.utils import logging as tl\n"
             "print(off(), data_off(), tl.is_progress_bar_enabled(), tl.get_verbosity())")
    with third_party_output(verbose=False):
        quiet = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    loud_child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert quiet.stdout.split() == ["True", "True", "False", str(logging.ERROR)], quiet.stderr
    assert loud_child.stdout.split() == ["False", "False", "True", str(logging.WARNING)], loud_child.stderr


def test_the_fresh_interpreter_quiets_the_loggers_the_parent_names(loud):
    """bitsandbytes' logger has no environment knob; zoo build's fresh interpreter applies the parent's list."""
    from talklora_hub.jobs.zoo_build import FRESH_LOAD

    preamble = FRESH_LOAD.split("import torch")[0]  # everything before the model is loaded
    probe = preamble + "print(logging.getLogger('bitsandbytes.backends.cpu.ops').getEffectiveLevel())"
    with third_party_output(verbose=False):
        quiet = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    loud_child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert (quiet.stdout.split(), loud_child.stdout.split()) == ([str(logging.ERROR)], [str(logging.WARNING)])


@pytest.fixture
def zoo_build_run(monkeypatch, tmp_path):
    """`talklora-hub zoo build` with the job replaced by a recorder of what it ran under."""
    from talklora_hub.jobs import zoo_build

    seen = []
    monkeypatch.setattr(zoo_build, "main_job", lambda plan, serve: seen.append((plan, serve, library_state())))

    def run(*extra):
        assert main(["zoo", "build", "--root", str(tmp_path / "zoo"), "--no-serve", *extra]) == 0
        return seen.pop()
    return run


def test_zoo_build_is_quiet_by_default_and_verbose_on_the_flag_or_variable(loud, zoo_build_run, monkeypatch):
    plan, serve, state = zoo_build_run()
    assert state["hub bars off"] and state["datasets bars off"] and not state["transformers bars on"]
    assert state["env"] == CHILD_ENV and plan.verbose is False and serve is False
    assert library_state() == loud  # the command put every knob back

    plan, _, state = zoo_build_run("--verbose")
    assert state == loud and plan.verbose is True

    monkeypatch.setenv(ENV_SWITCH, "1")
    plan, _, state = zoo_build_run()
    assert not state["hub bars off"] and plan.verbose is True


def test_data_commands_take_the_switch(loud, monkeypatch, tmp_path, capsys):
    from talklora_hub.data import base_models, sources

    seen = []
    manifest = {"sources": {"sotu": {"registry": "npm", "path": "sources/sotu",
                                     "files": [{"size": 7_200_000, "sha256": "ab" * 32}]}}}
    monkeypatch.setattr(sources, "fetch_sources", lambda *a, **k: seen.append(library_state()) or manifest)
    monkeypatch.setattr(base_models, "bootstrap_base_models",
                        lambda *a, **k: seen.append(library_state()) or {"tiny": tmp_path / "models" / "tiny"})
    cache = ["--cache-dir", str(tmp_path)]

    assert main(["data", "fetch", "sotu", *cache]) == 0
    assert seen.pop()["hub bars off"]
    assert capsys.readouterr().out.splitlines() == [
        f"1 sources ready (7 MB) in {tmp_path / 'sources'}; manifest {tmp_path / 'manifest.json'}"]
    assert main(["data", "fetch", "sotu", "--verbose", *cache]) == 0
    assert seen.pop() == loud
    assert capsys.readouterr().out.splitlines()[0].startswith("sotu                   npm       7.2 MB  abababab")

    assert main(["data", "bootstrap-models", *cache]) == 0
    assert seen.pop()["hub bars off"]
    assert capsys.readouterr().out.splitlines() == [f"1 base models ready (tiny) in {tmp_path / 'models'}"]
    assert main(["data", "bootstrap-models", "--verbose", *cache]) == 0
    assert seen.pop() == loud
    assert library_state() == loud


def test_the_gguf_bar_follows_transformers_switch(loud):
    gguf_utils = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    from talklora_hub.data.base_models import _gguf_bar_follows_transformers

    drawn = gguf_utils.tqdm
    with _gguf_bar_follows_transformers():
        assert gguf_utils.tqdm is drawn  # bars on: untouched
    with third_party_output(verbose=False), _gguf_bar_follows_transformers():
        assert gguf_utils.tqdm(range(3)).disable is True
    assert gguf_utils.tqdm is drawn


def _metrics(accuracy, low, high, n):
    return {"accuracy": accuracy, "low": low, "high": high, "n": n, "correct": round(accuracy * n)}


RECORDS = {
    "mini-expert": {"kind": "expert", "metrics": {"spam": _metrics(0.943, 0.920, 0.959, 541)}},
    "moe-router": {"kind": "router", "metrics": {"spam": _metrics(0.854, 0.822, 0.881, 541),
                                                 "sotu_party": _metrics(0.516, 0.450, 0.583, 213)}},
    "talk-mixture": {"kind": "model", "metrics": {"fortune_topic": _metrics(0.750, 0.668, 0.817, 128),
                                                  "sotu_party": _metrics(0.526, 0.459, 0.592, 213),
                                                  "spam": _metrics(0.957, 0.937, 0.972, 541)}},
}


def test_the_closing_table_shows_every_task_of_a_mixture_with_its_interval():
    lines = closing_table(RECORDS, "http://127.0.0.1:5000", "user")
    assert lines[0].split()[:5] == ["entry", "kind", "task", "n", "accuracy"]
    # Mixtures first, then experts, then routers; one row per task, the name and kind on the first only.
    assert [line.split()[:6] for line in lines[1:4]] == [
        ["talk-mixture", "model", "fortune_topic", "128", "0.750", "[0.668,"],
        ["sotu_party", "213", "0.526", "[0.459,", "0.592]"],
        ["spam", "541", "0.957", "[0.937,", "0.972]"]]
    assert lines[4] == "  card: http://127.0.0.1:5000/user/talk-mixture/resolve/main/README.md"
    assert lines[5].split() == ["mini-expert", "expert", "spam", "541", "0.943", "[0.920,", "0.959]"]
    assert lines[7].startswith("moe-router") and "0.854 [0.822, 0.881]" in lines[7]
    assert "0.516 [0.450, 0.583]" in lines[8]
    assert len(lines) == 1 + 6 + 3  # header, every task row, a card line per entry
    column = lines[0].index("accuracy")
    assert all(line[column:column + 5].replace(".", "").isdigit() for line in lines[1:] if "[" in line), "one column"


def test_the_closing_block_says_where_to_click_and_refuses_an_unscored_entry():
    block = closing_lines(RECORDS, "http://127.0.0.1:5000", "user", "user/talklora-zoo", 61.4, 0,
                          "http://127.0.0.1:7860")
    assert block[0] == ("The zoo: 3 entries on the embedded Hub http://127.0.0.1:5000 (index user/talklora-zoo); "
                        "no new commits; 61 s in all.")
    assert block[-1].startswith("Space: http://127.0.0.1:7860 ")
    unserved = closing_lines(RECORDS, "http://h", "user", "user/talklora-zoo", 1, 1, None)
    assert "1 new commit;" in unserved[0] and "--no-serve" in unserved[-1]
    with pytest.raises(ValueError, match=r"records\['empty'\]\['metrics'\].*Fix: .*zoo retrain --only empty"):
        closing_table({"empty": {"kind": "expert", "metrics": {}}}, "http://h", "user")


def test_the_shipped_zoo_fits_the_table():
    """Every shipped record carries what the table reads, and every mixture shows all its tasks."""
    from talklora_hub.zoo.shipped import read_record, shipped_entries

    records = {name: read_record(folder) for name, folder in shipped_entries().items()}
    if not records:
        pytest.skip("no shipped zoo in this checkout")
    lines = closing_table(records, "http://h", "user")
    for name, record in records.items():
        assert sum(line.strip() == f"card: http://h/user/{name}/resolve/main/README.md" for line in lines) == 1
        for task, metrics in record["metrics"].items():
            assert any(task in line and f"{metrics['accuracy']:.3f} [{metrics['low']:.3f}, {metrics['high']:.3f}]"
                       in line for line in lines), (name, task)
    assert len(lines) == 1 + sum(len(r["metrics"]) + 1 for r in records.values())
