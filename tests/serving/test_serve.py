"""`talklora-hub serve MODEL`: a saved tiny TalkLoRA model behind transformers' own server (continuous batching),
queried with the openai client on 127.0.0.1, answers /v1/completions and /v1/chat/completions, streaming or not,
with exactly the greedy tokens generate() gives; a TT-LoRA MoE is served without packing (each request keeps its
own expert), and `--continuous-batching on` for it is refused with the reason and the fix."""

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from talklora_hub.modeling import AdapterSettings, TalkLoRAForCausalLM
from tests.modeling.conftest import tiny_base

openai = pytest.importorskip("openai", reason="transformers' server needs openai (pip install 'transformers[serving]')")

SPECIALS = ["[PAD]", "[BOS]", "[EOS]"]  # ids 0, 1, 2: the tiny llama's pad, bos and eos
NEW = 6
# Four prompts of 3 to 7 words; the TT-LoRA MoE's router sends them to more than one expert (checked below).
PROMPTS = ["w5 w17 w40 w8", "w60 w61 w9 w33 w70 w12 w3", "w90 w4 w44", "w21 w22 w23 w24 w25"]


def word_tokenizer() -> PreTrainedTokenizerFast:
    """One word per token ("w3".."w95" are ids 3..95), so a reply's text gives back its exact token ids; its chat
    template is the messages' text, so a chat prompt tokenizes as the completion prompt does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {**{name: i for i, name in enumerate(SPECIALS)}, **{f"w{i}": i for i in range(3, 96)}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[PAD]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##")  # joins the words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", bos_token="[BOS]",
                                        eos_token="[EOS]", model_max_length=64)
    tokenizer.chat_template = "{% for message in messages %}{{ message['content'] }} {% endfor %}"
    return tokenizer


def token_ids(text: str) -> list:
    """The ids of a reply (special tokens are left out of served text)."""
    return [int(word[1:]) for word in text.split()]


def save_model(folder: Path, settings: AdapterSettings) -> Path:
    base = tiny_base("llama", initializer_range=0.5)  # confident logits: large greedy margins
    torch.manual_seed(0)
    model = TalkLoRAForCausalLM.from_base(base, settings).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "bank" in name or "lora_B" in name:
                param.normal_(0, 0.5)  # a zero-init B would make the adapter invisible
        if model.sequence_router is not None:
            for param in model.sequence_router.parameters():
                param.mul_(30)  # prompts go to different experts
    model.generation_config.eos_token_id = None  # always NEW tokens
    model.save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


def expected_tokens(folder: Path) -> dict:
    """{prompt: the greedy new token ids of generate() on it alone} (specials left out, as served text drops
    them), from the saved folder loaded as any transformers user would."""
    model = AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=True).eval()
    tokenizer = word_tokenizer()
    out = {}
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        new = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW, do_sample=False)
        out[prompt] = [t for t in new[0, ids.shape[1]:].tolist() if t >= len(SPECIALS)]
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(folder: Path, *options: str) -> list:
    # a small paged KV cache: the default sizes it from free memory, seconds of setup on a CPU
    return [sys.executable, "-m", "talklora_hub.cli", "serve", str(folder), "--cb-num-blocks", "16",
            "--cb-block-size", "16", "--cb-max-batch-tokens", "64", "--log-level", "warning", *options]


def server_env() -> dict:
    env = dict(os.environ)  # HF_HOME / HF_MODULES_CACHE: the tests' temporary ones (tests/conftest.py)
    env.update({"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false",
                "OMP_NUM_THREADS": "1"})
    return env


class Server:
    def __init__(self, folder: Path, log: Path):
        self.folder, self.log, self.port = folder, log, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log, "wb") as out:
            self.process = subprocess.Popen(serve_command(folder, "--port", str(self.port)), env=server_env(),
                                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_until_healthy(self, seconds: float = 180) -> None:
        deadline = time.monotonic() + seconds
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server was not healthy within {seconds} s:\n{self.log_tail()}")
            time.sleep(0.3)

    def client(self):
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=120)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def started(tmp_path_factory, name: str, settings: AdapterSettings):
    root = tmp_path_factory.mktemp(name)
    folder = save_model(root / "model", settings)
    server = Server(folder, root / "server.log")  # starts loading while the reference tokens are computed
    try:
        expected = expected_tokens(folder)
        server.wait_until_healthy()
    except BaseException:
        server.stop()
        raise
    return server, expected


@pytest.fixture(scope="module")
def talklora_server(tmp_path_factory):
    server, expected = started(tmp_path_factory, "talklora", AdapterSettings(method="talklora", r=8, num_experts=4))
    yield server, expected
    server.stop()


@pytest.fixture(scope="module")
def moe_server(tmp_path_factory):
    server, expected = started(tmp_path_factory, "ttlora-moe", AdapterSettings(method="ttlora", tt_rank=3,
                                                                                num_experts=3))
    yield server, expected
    server.stop()


def complete(client, model: str, prompt: str, stream: bool) -> str:
    args = {"model": model, "prompt": prompt, "max_tokens": NEW, "temperature": 0}
    if not stream:
        reply = client.completions.create(**args)
        assert reply.usage.completion_tokens == NEW and reply.choices[0].finish_reason == "length"
        return reply.choices[0].text
    return "".join(chunk.choices[0].text for chunk in client.completions.create(**args, stream=True)
                   if chunk.choices)


def chat(client, model: str, prompt: str, stream: bool) -> str:
    args = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": NEW, "temperature": 0}
    if not stream:
        return client.chat.completions.create(**args).choices[0].message.content
    return "".join(chunk.choices[0].delta.content or "" for chunk in
                   client.chat.completions.create(**args, stream=True) if chunk.choices)


@pytest.mark.parametrize("endpoint", [complete, chat], ids=["completions", "chat"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_concurrent_requests_get_the_generate_tokens(talklora_server, endpoint, stream):
    server, expected = talklora_server
    client = server.client()
    with ThreadPoolExecutor(len(PROMPTS)) as pool:  # at once: continuous batching packs them together
        texts = list(pool.map(lambda p: endpoint(client, str(server.folder), p, stream), PROMPTS))
    assert [token_ids(text) for text in texts] == [expected[p] for p in PROMPTS]


def test_the_server_lists_the_model_and_uses_continuous_batching(talklora_server):
    server, _ = talklora_server
    assert [m.id for m in server.client().models.list().data] == [str(server.folder)]
    assert "continuous batching on" in server.log_tail(200)


def test_a_ttlora_moe_is_served_per_sequence_with_each_prompts_own_expert(moe_server):
    server, expected = moe_server
    model = AutoModelForCausalLM.from_pretrained(str(server.folder), trust_remote_code=True).eval()
    tokenizer = word_tokenizer()
    experts = {int(model.route_sequences(tokenizer(p, return_tensors="pt").input_ids).argmax(-1)) for p in PROMPTS}
    assert len(experts) > 1  # the prompts really need different experts
    client = server.client()
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        texts = list(pool.map(lambda p: complete(client, str(server.folder), p, False), PROMPTS))
    assert [token_ids(text) for text in texts] == [expected[p] for p in PROMPTS]
    assert "continuous batching off" in server.log_tail(200)


def test_continuous_batching_on_for_a_ttlora_moe_is_refused_with_the_fix(moe_server):
    from talklora_hub.cli import main

    server, _ = moe_server
    with pytest.raises(SystemExit) as refused:  # before any model loads or port opens
        main(["serve", str(server.folder), "--continuous-batching", "on", "--port", str(free_port())])
    message = str(refused.value)
    assert "`--continuous-batching on`" in message and "SEQUENCE" in message and "num_experts=3" in message
    assert "leave --continuous-batching at auto" in message


def test_a_hub_repo_runs_its_saved_code_only_with_trust_remote_code(monkeypatch):
    from talklora_hub.cli import main, serve

    monkeypatch.setattr(serve, "read_model_config", lambda model: {"model_type": serve.TALKLORA_MODEL_TYPE,
                                                                   "architectures": ["TalkLoRAForCausalLM"]})
    with pytest.raises(SystemExit, match=r"me/talklora-spam is a Hub repo.*Fix: add --trust-remote-code"):
        main(["serve", "me/talklora-spam"])
