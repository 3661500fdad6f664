"""The speed and memory benchmarks (benchmarks/speed/) end to end with --quick on a tiny random Llama: each
script runs as a subprocess, writes its markdown table and JSON, with a row per method and positive ratios.
No timing is asserted (the machine is shared); the whole file takes about a minute on 2 cores."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SPEED = Path(__file__).resolve().parents[2] / "benchmarks" / "speed"
METHODS = ["lora", "moelora", "talklora", "ttlora", "ttlora-moe3"]
ROUTED = ["moelora", "talklora", "ttlora-moe3"]


def run_bench(script, tmp_path, *extra, timeout=240):
    out = tmp_path / (script + ".md")
    cmd = [sys.executable, str(SPEED / f"{script}.py"), *extra, "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    return out, done.stdout


def table_rows(markdown):
    """The markdown table as a list of {column: cell} dicts."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert re.fullmatch(r"\|(---\|)+", lines[1])
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def positive(cell):
    value = float(cell)
    assert value > 0, cell
    return value


def check_header_and_json(out, script):
    text = out.read_text()
    assert f"`python benchmarks/speed/{script}.py --quick" in text  # the exact command
    for field in ("- date: ", "torch threads 1", "torch ", "transformers "):
        assert field in text
    data = json.loads(out.with_suffix(".json").read_text())
    env = data["environment"]
    assert env["torch_threads"] == 1 and env["cpu"] and env["command"].startswith("python benchmarks/speed/")
    assert env["torch"] == torch.__version__ and env["date"]
    return text, data


def test_generate_quick_compiled(tmp_path):
    """--compile: each model also measured compiled (static cache, inductor), its ratio to the compiled base."""
    out, _ = run_bench("bench_generate", tmp_path, "--quick", "--compile", "--batches", "1,2",
                       "--methods", "talklora,ttlora-moe3", "--repeats", "2", timeout=600)
    # (The script itself fails if anything compiled inside the timed rounds: two batch sizes and a token-routed
    # model beside the per-sequence-routed TT-LoRA MoE check that too.)
    text, data = check_header_and_json(out, "bench_generate")
    rows = {(r["method"], r["mode"], r["trace"], r["batch"]): r for r in table_rows(text)}
    per_batch = {("base", "eager", "—"), ("base", "compiled", "—")}
    for method in ("talklora", "ttlora-moe3"):
        per_batch |= {(method, "eager", "off"), (method, "eager", "on"), (method, "compiled", "—")}
    assert set(rows) == {key + (batch,) for key in per_batch for batch in ("1", "2")}
    for batch in ("1", "2"):
        assert positive(rows[("base", "compiled", "—", batch)]["ratio to base"]) == 1.0
        for method in ("talklora", "ttlora-moe3"):
            positive(rows[(method, "compiled", "—", batch)]["ratio to base"])
    compiled = [r for r in data["results"] if r["mode"] == "compiled"]
    assert len(compiled) == 6 and all(r["first_call_s"] > 0 for r in compiled)
    assert all(r["generated"] == data["max_new_tokens"] for r in compiled)


def test_generate_quick(tmp_path):
    out, _ = run_bench("bench_generate", tmp_path, "--quick")
    text, data = check_header_and_json(out, "bench_generate")
    rows = table_rows(text)
    seen = {(r["method"], r["batch"], r["trace"]) for r in rows}
    for batch in ("1", "8"):
        assert ("base", batch, "—") in seen
        for method in METHODS + ["peft-lora"]:  # peft's LoRA, unmerged: the peer row
            traces = ["off", "on"] if method in ROUTED else ["—"]
            for trace in traces:
                assert (method, batch, trace) in seen, (method, batch, trace)
    assert len(rows) == 2 * (1 + len(METHODS) + 1 + len(ROUTED))
    for row in rows:
        positive(row["tokens/s"])
        ratio = positive(row["ratio to base"])
        low, high = (positive(x) for x in row["per-round range"].split("–"))
        assert low <= high and row["mode"] == "eager"
        if row["method"] == "base":
            assert ratio == 1.0 and low == high == 1.0
    # The adapters really compute (logits differ from the base's) and traced calls recorded every step.
    for result in data["results"]:
        if result["method"] != "base":
            assert result["max_abs_logit_diff_vs_base"] > 0
        if result["trace"]:
            assert result["trace_steps"] == data["max_new_tokens"]
        assert result["generated"] == data["max_new_tokens"] and len(result["seconds"]) == data["repeats"]


def test_profile_decode_quick(tmp_path):
    """profile_decode: a row per model, dtype and batch; the adapted models' extra ops over the base are counted
    (positive: every adapter adds ops), and the class shares of the extra time add up to 100%."""
    out, _ = run_bench("profile_decode", tmp_path, "--quick", "--methods", "lora,talklora", "--batches", "1,2",
                       "--clock", "cpu", "--profile-rounds", "2")
    text, data = check_header_and_json(out, "profile_decode")
    assert data["clock"] == "cpu" and "(cpu clock)" in text
    rows = {(r["method"], r["dtype"], r["batch"]): r for r in table_rows(text)}
    assert set(rows) == {(m, d, b) for m in ("base", "lora", "talklora") for d in ("fp32", "bf16") for b in "12"}
    for (method, dtype, batch), row in rows.items():
        positive(row["step ms"])
        positive(row["ratio to base"])
        if method == "base":
            assert row["added ms"] == row["extra ops / step"] == row["paired quartiles"] == "–"
            continue
        low, high = (positive(x) for x in row["paired quartiles"].split("–"))
        assert low <= high
        assert positive(row["extra ops / step"]) >= 1
        shares = [row[f"share: {c}"] for c in ("products", "elementwise", "dispatch")]
        if "–" not in shares:
            assert abs(sum(float(c.rstrip("%")) for c in shares) - 100) <= 2, shares
    talklora = {r["dtype"]: r for r in data["results"] if r["method"] == "talklora" and r["batch"] == 1}
    # TalkLoRA's routed update adds more ops than plain LoRA's two products, in every precision.
    lora = {r["dtype"]: r for r in data["results"] if r["method"] == "lora" and r["batch"] == 1}
    for dtype in ("fp32", "bf16"):
        more = [sum(e["calls"] for e in r["extra_over_base"].values()) for r in (talklora[dtype], lora[dtype])]
        assert more[0] > more[1] > 0, more
    assert data["op_floor_us"] > 0


def test_layer_call_quick(tmp_path):
    """layer_call: a row per method; the parts add up (added = layer call - base linear, checks = fast path -
    update, rest = added - fast path, to the printed rounding), the fast path runs (its update costs something)
    and every adapter adds aten ops to the base linear's."""
    out, _ = run_bench("layer_call", tmp_path, "--quick", "--methods", "lora,talklora,ttlora-moe3")
    text, data = check_header_and_json(out, "layer_call")
    rows = {r["method"]: r for r in table_rows(text)}
    assert set(rows) == {"lora", "talklora", "ttlora-moe3"}
    for method, row in rows.items():
        cell = {key: float(row[key]) for key in ("base linear", "layer call", "added", "fast path", "update",
                                                 "checks", "rest")}
        assert abs(cell["added"] - (cell["layer call"] - cell["base linear"])) <= 0.11
        assert abs(cell["checks"] - (cell["fast path"] - cell["update"])) <= 0.11
        assert abs(cell["rest"] - (cell["added"] - cell["fast path"])) <= 0.11
        positive(row["base linear"]), positive(row["update"])
        assert positive(row["aten ops"]) >= 2, (method, row["aten ops"])
        assert "->" in row["layer"]
    assert {r["method"] for r in data["results"]} == set(rows) and data["calls"] == 200


def test_train_quick(tmp_path):
    out, _ = run_bench("bench_train", tmp_path, "--quick")
    text, data = check_header_and_json(out, "bench_train")
    rows = {r["method"]: r for r in table_rows(text)}
    assert list(rows) == ["peft-lora"] + METHODS
    for row in rows.values():
        positive(row["tokens/s"])
        positive(row["speed ratio"])
        positive(row["memory ratio"])
        assert positive(row["peak memory"].replace(" MiB", "").replace(",", "")) > 100  # a child's own RSS
        assert int(row["trainable params"].replace(",", "")) > 0
    assert float(rows["peft-lora"]["speed ratio"]) == 1.0 and float(rows["peft-lora"]["memory ratio"]) == 1.0
    # Same rank and targets: plain LoRA has exactly PEFT LoRA's parameters; TalkLoRA's shared banks fewer.
    assert rows["lora"]["trainable params"] == rows["peft-lora"]["trainable params"]
    counts = {r["method"]: r["trainable"] for r in data["results"]}
    assert counts["talklora"] < counts["peft-lora"]
    assert "TalkLoRA vs PEFT LoRA" in text and "time ratio" in text  # bench_model.py's comparison kept


def test_load_quick(tmp_path):
    out, _ = run_bench("bench_load", tmp_path, "--quick")
    text, data = check_header_and_json(out, "bench_load")
    rows = table_rows(text)
    seen = {(r["method"], r["cache"]): r for r in rows}
    assert set(seen) == {(m, c) for m in ("base", "talklora") for c in ("cold", "warm")}
    for (method, _), row in seen.items():
        positive(row["from_pretrained s"])
        positive(row["ratio to base"])
        positive(row["process ratio"])
        assert row["class"] == ("LlamaForCausalLM" if method == "base" else "TalkLoRAForCausalLM")
    assert all(result["runs"] for result in data["results"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_device_cuda_without_cuda_says_so_and_skips(tmp_path):
    out, stdout = run_bench("bench_generate", tmp_path, "--quick", "--device", "cuda", timeout=120)
    assert "no CUDA here" in stdout and "no CUDA here" in out.read_text()


def test_ab_decode_quick(tmp_path):
    """ab_decode against HEAD: the bundle as committed, imported as a package of its own beside the working tree's,
    computes the same function (the script checks the logits before timing), and each row has the three step times,
    both ratios and a gain; a revision the clone lacks is refused naming --against."""
    out, _ = run_bench("ab_decode", tmp_path, "--quick", "--against", "HEAD", "--methods", "lora,talklora",
                       "--batches", "1,2", "--clock", "cpu")
    text, data = check_header_and_json(out, "ab_decode")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=SPEED, capture_output=True, text=True).stdout.strip()
    assert data["against_commit"] == head and f"git {head[:12]}" in text
    rows = table_rows(text)
    assert {(r["method"], r["batch"]) for r in rows} == {(m, b) for m in ("lora", "talklora") for b in "12"}
    for row in rows:
        for key in ("base ms", "against ms", "working tree ms", "ratio then", "ratio now", "gain"):
            positive(row[key])
        assert float(row["logits gap"]) <= 1e-3 and float(row["adapter effect"]) > 0
    bad = subprocess.run([sys.executable, str(SPEED / "ab_decode.py"), "--quick", "--against", "no-such-revision",
                          "--out", str(tmp_path / "bad.md")], capture_output=True, text=True, timeout=240)
    assert bad.returncode != 0 and "--against" in bad.stderr and "no-such-revision" in bad.stderr


def test_ab_decode_times_only_the_same_function():
    """Two bundles are timed against each other only where they compute one function: fp32 logits within 1e-3 of
    their scale; bf16 ones (whose per-layer roundings grow through the model) within a quarter of the adapter's own
    effect on the logits, so a dropped or wrong update (a gap about the effect) is refused in either."""
    sys.path.insert(0, str(SPEED))
    try:
        from ab_decode import same_function
    finally:
        sys.path.remove(str(SPEED))
    assert same_function(0.0, 0.2, "fp32") and same_function(4e-4, 0.2, "fp32")
    assert not same_function(1.4e-2, 0.2, "fp32") and not same_function(0.2, 0.2, "fp32")
    assert same_function(1.4e-2, 0.2, "bf16")
    assert not same_function(0.15, 0.2, "bf16") and not same_function(0.2, 0.2, "bf16")
