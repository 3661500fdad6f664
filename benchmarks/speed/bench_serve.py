"""Serving speed: a TalkLoRA mixture vs its bare base, both behind transformers' own OpenAI-compatible server
(`talklora-hub serve FOLDER`: continuous batching, paged attention), at 1, 4 and 16 concurrent clients.

  python benchmarks/speed/bench_serve.py [--model PATH|smollm2-135m-instruct] [--mixture FOLDER] [--quick]
      [--clients 1,4,16] [--requests 4] [--max-new-tokens 64] [--repeats 3] [--threads 1]
      [--cb-num-blocks N] [--cb-block-size N] [--cb-max-batch-tokens N] [--device cpu|cuda] [--out FILE.md]

Servers: the base folder (--model) and the mixture (--mixture: a saved talklora_hub model on that base; by default
a TalkLoRA mixture, E = 4, r = 32 (8 with --quick), B banks non-zero, built on --model and saved to a temporary
folder), each started by the one documented command, `talklora-hub serve FOLDER`, in its own process
(OMP_NUM_THREADS = --threads), both up for the whole run. Clients: N threads, each sending --requests streaming
/v1/completions requests one after the other (a closed loop), greedy, exactly --max-new-tokens new tokens (the end
of sequence token is disabled per request), prompts cycling through the speed benchmarks' eight.
Rounds (one variant at one concurrency) are interleaved: every repeat runs each concurrency for both variants, the
order rotated each repeat; one untimed warm-up round at the largest concurrency first.

tokens/s = all new tokens of a round / the round's wall time (median over repeats); ratio to base = that / the
base's at the same concurrency; TTFT = request sent to first text received; ms/token = the gap between two
successive streamed text pieces as a client receives them (one piece per token, except where a piece waits for the
rest of a multi-byte character), pooled over the repeats: p50 and p99.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed_common as sc  # noqa: E402

TITLE = "Serving speed (talklora-hub serve, continuous batching): TalkLoRA mixture vs the bare base"
VARIANTS = ("base", "mixture")


def parse_args(argv=None) -> argparse.Namespace:
    parser = sc.new_parser(__doc__, repeats=3, quick_repeats=1)
    parser.add_argument("--mixture", default=None,
                        help="a saved talklora_hub model built on --model (default: a TalkLoRA mixture made here)")
    parser.add_argument("--clients", default="1,4,16", help="concurrent clients per round (comma-separated)")
    parser.add_argument("--requests", type=int, default=None,
                        help="requests each client sends, one after the other (default 4; 2 with --quick)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="new tokens per request (default 64; "
                                                                         "8 with --quick)")
    # Not serve's own default: it sizes each server's KV cache from the free memory, and the two servers of a run,
    # started together, each took ~12 GB of a 23 GB machine until the kernel killed one (measured on CPU).
    parser.add_argument("--cb-num-blocks", type=int, default=None,
                        help="KV cache blocks of each server (default 256, x --cb-block-size 32 = 8,192 tokens in "
                             "flight; 64 with --quick)")
    parser.add_argument("--cb-block-size", type=int, default=None, help="tokens per KV cache block (default 32; 16 "
                                                                        "with --quick)")
    parser.add_argument("--cb-max-batch-tokens", type=int, default=None, help="most tokens in one batch")
    parser.add_argument("--startup-timeout", type=float, default=600, help="seconds a server may take to start")
    args = sc.finish_args(parser, parser.parse_args(argv))
    args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    if not args.clients or min(args.clients) < 1:
        parser.error(f"--clients must be positive integers, e.g. 1,4,16; got {args.clients}")
    if args.requests is None:
        args.requests = 2 if args.quick else 4
    if args.max_new_tokens is None:
        args.max_new_tokens = 8 if args.quick else 64
    if args.quick and args.cb_num_blocks is None:
        args.cb_num_blocks, args.cb_block_size, args.cb_max_batch_tokens = 64, 16, 256
    elif args.cb_num_blocks is None:
        args.cb_num_blocks, args.cb_block_size = 256, args.cb_block_size or 32
    if args.mixture is not None and not Path(args.mixture).is_dir():
        parser.error(f"--mixture must be a folder written by save_pretrained, got {args.mixture!r}")
    return args


# ----------------------------------------------------------------------------------------- models
def save_mixture(base_folder: Path, out: Path, quick: bool) -> Path:
    """A TalkLoRA mixture (speed_common's settings, B non-zero) on the base, saved with the base's tokenizer."""
    from transformers import AutoTokenizer

    model = sc.build_method(base_folder, "talklora", quick)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(base_folder)).save_pretrained(out)
    return out


# ----------------------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`talklora-hub serve FOLDER` in a subprocess on 127.0.0.1 (its output in LOG)."""

    def __init__(self, folder: Path, args: argparse.Namespace, device: str, dtype_name: str, log: Path):
        self.folder, self.log, self.port = str(folder), log, free_port()
        cmd = [sys.executable, "-m", "talklora_hub.cli", "serve", self.folder, "--port", str(self.port),
               "--device", device, "--dtype", {"fp32": "float32", "bf16": "bfloat16"}[dtype_name],
               "--continuous-batching", "on", "--log-level", "warning"]
        for flag in ("cb_num_blocks", "cb_block_size", "cb_max_batch_tokens"):
            if getattr(args, flag) is not None:
                cmd += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}
        with open(log, "wb") as out:
            self.process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=sc.REPO)

    def wait_until_healthy(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server of {self.folder} exited ({self.process.returncode}):\n{self.tail()}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the server of {self.folder} was not healthy within {seconds} s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# ----------------------------------------------------------------------------------------- clients
def stream_one(server: Server, prompt: str, new_tokens: int) -> Dict[str, object]:
    """One streaming /v1/completions request: {"tokens", "ttft_s", "gaps_s" (between text pieces), "seconds"}."""
    body = {"model": server.folder, "prompt": prompt, "max_tokens": new_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True},
            "generation_config": json.dumps({"eos_token_id": -1})}  # exactly max_tokens: no early end of sequence
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    start = time.perf_counter()
    connection.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    if response.status != 200:
        raise RuntimeError(f"{server.folder}: HTTP {response.status}: {response.read()[:2000]!r}")
    arrivals, tokens = [], None
    for raw in response:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data:") or line == "data: [DONE]":
            continue
        event = json.loads(line[5:])
        if event.get("error"):
            raise RuntimeError(f"{server.folder}: {event['error']}")
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
        if any(choice.get("text") for choice in event.get("choices") or []):
            arrivals.append(time.perf_counter())
    end = time.perf_counter()
    connection.close()
    if tokens is None or not arrivals:
        raise RuntimeError(f"{server.folder}: a streamed reply without usage or text")
    return {"tokens": tokens, "ttft_s": arrivals[0] - start, "seconds": end - start,
            "gaps_s": [b - a for a, b in zip(arrivals, arrivals[1:])], "start": start, "end": end}


def run_round(server: Server, clients: int, requests: int, new_tokens: int, round_index: int) -> Dict[str, object]:
    """`clients` threads, each sending `requests` requests one after the other."""
    def client(index: int) -> List[Dict[str, object]]:
        return [stream_one(server, sc.PROMPTS[(round_index + index * requests + k) % len(sc.PROMPTS)], new_tokens)
                for k in range(requests)]

    with ThreadPoolExecutor(clients) as pool:
        records = [r for per_client in pool.map(client, range(clients)) for r in per_client]
    wall = max(r["end"] for r in records) - min(r["start"] for r in records)
    return {"wall_s": wall, "tokens": sum(r["tokens"] for r in records),
            "ttft_s": [r["ttft_s"] for r in records], "gaps_s": [g for r in records for g in r["gaps_s"]]}


def percentile(values: List[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# ----------------------------------------------------------------------------------------- the run
def measure(args, folders: Dict[str, Path], device: str, dtype_name: str, logs: Path) -> List[Dict[str, object]]:
    servers = {name: Server(folders[name], args, device, dtype_name, logs / f"{name}-{dtype_name}.log")
               for name in VARIANTS}
    try:
        for server in servers.values():
            server.wait_until_healthy(args.startup_timeout)
        for name, server in servers.items():  # warm-up: the largest concurrency once, untimed
            run_round(server, max(args.clients), 1, args.max_new_tokens, 0)
        rounds: Dict[tuple, List[Dict[str, object]]] = {}
        for repeat in range(args.repeats):
            for clients in args.clients:
                for name in sc.rotated(VARIANTS, repeat + clients):
                    result = run_round(servers[name], clients, args.requests, args.max_new_tokens, repeat)
                    rounds.setdefault((name, clients), []).append(result)
    finally:
        for server in servers.values():
            server.stop()
    results = []
    for (name, clients), runs in rounds.items():
        gaps = [g for run in runs for g in run["gaps_s"]]
        results.append({"variant": name, "device": device, "dtype": dtype_name, "clients": clients,
                        "requests": clients * args.requests,
                        "tokens_per_s": sc.median([run["tokens"] / run["wall_s"] for run in runs]),
                        "ttft_p50_ms": 1000 * percentile([t for run in runs for t in run["ttft_s"]], 50),
                        "ms_per_token_p50": 1000 * percentile(gaps, 50),
                        "ms_per_token_p99": 1000 * percentile(gaps, 99),
                        "rounds": runs})
    return results


def table(results: List[Dict[str, object]]) -> str:
    base = {(r["dtype"], r["clients"]): r["tokens_per_s"] for r in results if r["variant"] == "base"}
    rows = []
    for r in sorted(results, key=lambda r: (r["dtype"], r["clients"], VARIANTS.index(r["variant"]))):
        r["ratio_to_base"] = r["tokens_per_s"] / base[(r["dtype"], r["clients"])]
        rows.append([r["variant"], r["device"], r["dtype"], r["clients"], r["requests"], f"{r['tokens_per_s']:.1f}",
                     f"{r['ratio_to_base']:.2f}", f"{r['ttft_p50_ms']:.1f}", f"{r['ms_per_token_p50']:.1f}",
                     f"{r['ms_per_token_p99']:.1f}"])
    return sc.table_md(["variant", "device", "dtype", "clients", "requests", "tokens/s", "ratio to base",
                        "TTFT p50 ms", "ms/token p50", "ms/token p99"], rows)


def main(argv=None) -> int:
    return sc.run_script(parse_args(argv), TITLE, "bench-serve-", serve_and_measure)


def serve_and_measure(args, plan, base_folder: Path, description: str, tmp: Path) -> int:
    if args.mixture is not None:
        mixture, mixture_note = Path(args.mixture).resolve(), f"the saved model {Path(args.mixture).name}"
    else:
        mixture = save_mixture(base_folder, tmp / "talklora-mixture", args.quick)
        rank = sc.QUICK_RANK if args.quick else sc.FULL_RANK
        mixture_note = f"TalkLoRA, E = 4, r = {rank}, B banks non-zero, built on the base"
    env = sc.environment(args)
    results = []
    for device, dtype_name in plan:
        results += measure(args, {"base": base_folder, "mixture": mixture}, device, dtype_name, tmp)
    notes = [f"base: {description}; mixture: {mixture_note}",
             "each served by `talklora-hub serve FOLDER --continuous-batching on` (transformers' server, paged "
             f"attention) in its own process, OMP_NUM_THREADS={args.threads}",
             f"{args.requests} streaming /v1/completions requests per client, one after the other; exactly "
             f"{args.max_new_tokens} new tokens each (greedy); medians of {args.repeats} interleaved repeats",
             "tokens/s = a round's new tokens / its wall time; TTFT = time to the first text; ms/token = gap between "
             "successive streamed text pieces (pooled over repeats)"]
    payload = {"base": description, "mixture": mixture_note, "clients": args.clients, "requests": args.requests,
               "max_new_tokens": args.max_new_tokens, "repeats": args.repeats, "results": results}
    sc.emit(args, TITLE, env, notes, table(results), payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
