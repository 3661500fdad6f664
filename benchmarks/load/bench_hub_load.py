"""Load benchmark of the embedded Hub: concurrent real huggingface_hub clients against one server.

    python benchmarks/load/bench_hub_load.py --clients 4 --seconds 20 --out results/hub-load

Starts the hub (talklora_hub.localhub.LocalHub) on 127.0.0.1 in a temporary root, then runs two
phases, each for --seconds:

1. mixed: every client thread repeatedly either uploads a small saved-model-like folder
   (config.json, adapter_config.json, model.safetensors, README.md) to its own repo with
   `upload_folder`, or downloads a random earlier commit of any client with `snapshot_download` into a
   fresh cache and checks every file is byte-identical (sha256) to what was uploaded;
2. contention: all clients commit a unique small file each to ONE shared repo; half pass
   `parent_commit` (and rebase on 412), half do not. At the end every successful commit's file must
   be in the repo with its content, and the history must hold exactly those commits: no lost update.

Reported: operations/s, p50/p99 latency per operation, the HTTP requests of the Python client
(hf_xet's own transfers are not counted), errors, and the integrity checks, as results.json and
results.md in --out. Exit status 1 if any integrity check fails or the server answered a 5xx."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))


@dataclass
class Recorder:
    """Latencies and errors of all client threads (thread-safe)."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    counters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def time(self, operation: str, seconds: float) -> None:
        with self.lock:
            self.latencies[operation].append(seconds)

    def error(self, operation: str, error: BaseException) -> None:
        with self.lock:
            self.errors[operation].append(f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")

    def count(self, name: str, amount: int = 1) -> None:
        with self.lock:
            self.counters[name] += amount


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def _stats(values: list[float], seconds: float) -> dict:
    if not values:
        return {"count": 0, "per_s": 0.0, "p50_ms": None, "p99_ms": None, "mean_ms": None}
    return {"count": len(values), "per_s": round(len(values) / seconds, 2),
            "p50_ms": round(_percentile(values, 0.50) * 1000, 1), "p99_ms": round(_percentile(values, 0.99) * 1000, 1),
            "mean_ms": round(statistics.fmean(values) * 1000, 1)}


def count_http_requests(recorder: Recorder) -> None:
    """Time every HTTP request the huggingface_hub client sends (one shared client for all threads)."""
    from huggingface_hub.utils import _http

    def factory():
        client = _http.default_client_factory()
        hooks = client.event_hooks

        def started(request):
            request.extensions["bench_start"] = time.perf_counter()

        def finished(response):
            start = response.request.extensions.get("bench_start")
            if start is not None:
                recorder.time("http request", time.perf_counter() - start)
                if response.status_code >= 500:
                    recorder.count("http 5xx")

        hooks["request"] = list(hooks.get("request", [])) + [started]
        hooks["response"] = list(hooks.get("response", [])) + [finished]
        client.event_hooks = hooks
        return client

    _http.set_client_factory(factory)


# ---------------------------------------------------------------------------- phase 1: uploads and downloads


def _safetensors(rng: random.Random, size: int) -> bytes:
    """A valid safetensors file holding one float32 tensor of about `size` bytes."""
    count = max(1, size // 4)
    header = json.dumps({"weight": {"dtype": "F32", "shape": [count], "data_offsets": [0, 4 * count]},
                         "__metadata__": {"format": "pt"}}).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + rng.randbytes(4 * count)


def saved_model_files(rng: random.Random, weights_size: int) -> dict[str, bytes]:
    config = {"model_type": "bench", "hidden_size": rng.choice([64, 128, 256]), "seed": rng.random()}
    adapter = {"peft_type": "LORA", "r": rng.choice([4, 8, 16]), "target_modules": ["q_proj", "v_proj"],
               "nonce": rng.random()}
    return {"config.json": json.dumps(config).encode(), "adapter_config.json": json.dumps(adapter).encode(),
            "model.safetensors": _safetensors(rng, weights_size),
            "README.md": f"---\nlibrary_name: peft\n---\n# bench {rng.random()}\n".encode()}


@dataclass
class Uploaded:
    """What every successful upload put where: (repo_id, commit) -> {path: sha256}."""

    commits: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, repo_id: str, commit: str, files: dict[str, bytes]) -> None:
        with self.lock:
            self.commits[(repo_id, commit)] = {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}

    def pick(self, rng: random.Random):
        with self.lock:
            return rng.choice(list(self.commits.items())) if self.commits else None


def _upload(api, repo_id: str, rng: random.Random, weights_size: int, work: Path, uploaded: Uploaded) -> None:
    files = saved_model_files(rng, weights_size)
    folder = Path(tempfile.mkdtemp(dir=work, prefix="up-"))
    try:
        for name, data in files.items():
            (folder / name).write_bytes(data)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="bench upload")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    uploaded.add(repo_id, info.oid, files)


def _download_and_check(api, rng: random.Random, work: Path, uploaded: Uploaded, recorder: Recorder) -> bool:
    picked = uploaded.pick(rng)
    if picked is None:
        return False
    (repo_id, commit), expected = picked
    cache = Path(tempfile.mkdtemp(dir=work, prefix="cache-"))  # a fresh cache: every byte comes over HTTP
    try:
        snapshot = Path(api.snapshot_download(repo_id, revision=commit, cache_dir=str(cache)))
        for name, sha256 in expected.items():
            recorder.count("files checked")
            if hashlib.sha256((snapshot / name).read_bytes()).hexdigest() != sha256:
                recorder.count("files corrupted")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return True


def mixed_client(index: int, hub, args, deadline: float, work: Path, uploaded: Uploaded, recorder: Recorder) -> None:
    rng = random.Random(args.seed * 1000 + index)
    api = hub.api()
    repo_id = f"{hub.user}/bench-client-{index}"
    api.create_repo(repo_id, exist_ok=True)
    while time.monotonic() < deadline:
        operation = "upload folder" if rng.random() < args.upload_share else "download + verify"
        start = time.perf_counter()
        try:
            if operation == "upload folder":
                _upload(api, repo_id, rng, args.weights_kb * 1024, work, uploaded)
            elif not _download_and_check(api, rng, work, uploaded, recorder):
                continue  # nothing uploaded yet
            recorder.time(operation, time.perf_counter() - start)
        except Exception as error:  # counted and reported, the client goes on
            recorder.error(operation, error)


# ---------------------------------------------------------------------------- phase 2: one repo, many writers


MAX_REBASES = 20


def _contention_file(client: int | str, serial: int | str) -> tuple[str, bytes]:
    """(path, content) of the file a contention client commits as its `serial`-th commit."""
    return f"writers/c{client}-{serial}.txt", f"client {client} commit {serial}\n".encode()


def contention_client(index: int, hub, repo_id: str, deadline: float, recorder: Recorder,
                      committed: dict[str, str], lock: threading.Lock) -> None:
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    api = hub.api()
    rng = random.Random(index)
    with_parent = index % 2 == 0
    operation = "commit (parent_commit)" if with_parent else "commit (no parent)"
    serial = 0
    while time.monotonic() < deadline:
        path, content = _contention_file(index, serial)
        serial += 1
        start = time.perf_counter()
        try:
            parent = api.model_info(repo_id).sha if with_parent else None
            for attempt in range(MAX_REBASES):
                try:
                    info = api.create_commit(repo_id, [CommitOperationAdd(path, content)], commit_message=path,
                                             parent_commit=parent)
                    break
                except HfHubHTTPError as error:
                    if error.response is None or error.response.status_code != 412:
                        raise
                    recorder.count("412 conflicts (rebased)")
                    time.sleep(rng.uniform(0, 0.01 * (attempt + 1)))  # jittered backoff, as a client should
                    parent = api.model_info(repo_id).sha
            else:
                # Not a server error: unconditional writers keep moving the head (optimistic writers
                # can starve under a stream of them). Reported on its own.
                recorder.count("gave up after conflicts")
                continue
            recorder.time(operation, time.perf_counter() - start)
            with lock:
                committed[path] = info.oid
        except Exception as error:
            recorder.error(operation, error)


def verify_no_lost_update(hub, repo_id: str, committed: dict[str, str]) -> dict:
    """Every acknowledged commit's file is in the final tree with its content, and in the history."""
    from talklora_hub.localhub.objects import git_blob_oid

    api = hub.api()
    tree = {f.path: f.blob_id for f in api.list_repo_tree(repo_id, recursive=True) if hasattr(f, "blob_id")}
    history = {c.commit_id for c in api.list_repo_commits(repo_id)}
    missing = [p for p in committed if p not in tree]
    wrong = [p for p in committed if p in tree and tree[p] != git_blob_oid(_content_of(p))]
    lost = [p for p, oid in committed.items() if oid not in history]
    return {"acknowledged_commits": len(committed), "files_missing": missing, "files_wrong": wrong,
            "commits_missing_from_history": lost, "history_length": len(history)}


def _content_of(path: str) -> bytes:
    return _contention_file(*Path(path).stem[1:].split("-"))[1]


# ---------------------------------------------------------------------------- driver


def run_phase(target, count: int, *extra) -> float:
    threads = [threading.Thread(target=target, args=(i, *extra), daemon=True) for i in range(count)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started


def markdown(results: dict) -> str:
    rows = ["| phase | operation | count | ops/s | p50 ms | p99 ms | errors |", "|---|---|---:|---:|---:|---:|---:|"]
    for phase in ("mixed", "contention"):
        for operation, stats in results[phase]["operations"].items():
            errors = len(results[phase]["errors"].get(operation, []))
            rows.append(f"| {phase} | {operation} | {stats['count']} | {stats['per_s']} | {stats['p50_ms']} | "
                        f"{stats['p99_ms']} | {errors} |")
    checks = results["integrity"]
    rows += ["", f"- files downloaded and checked: {checks['files_checked']}, corrupted: {checks['files_corrupted']}",
             f"- shared repo: {checks['contention']['acknowledged_commits']} acknowledged commits, "
             f"{len(checks['contention']['files_missing'])} files missing, "
             f"{len(checks['contention']['files_wrong'])} with wrong content, "
             f"{len(checks['contention']['commits_missing_from_history'])} commits missing from history; "
             f"{results['contention']['conflicts']} 412 conflicts rebased, "
             f"{results['contention']['gave_up']} parent_commit writes given up after {MAX_REBASES} conflicts",
             f"- HTTP 5xx answers: {results['http_5xx']}",
             f"- integrity: {'OK' if checks['ok'] else 'FAILED'}"]
    return "\n".join(rows) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each of the two phases")
    parser.add_argument("--weights-kb", type=int, default=64, help="size of each model.safetensors")
    parser.add_argument("--upload-share", type=float, default=0.4, help="share of uploads in the mixed phase")
    parser.add_argument("--no-xet", action="store_true", help="upload LFS files with git-lfs instead of Xet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json and results.md")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    if args.no_xet:
        os.environ["HF_HUB_DISABLE_XET"] = "1"
    from huggingface_hub.utils import disable_progress_bars

    from talklora_hub.localhub import LocalHub

    from huggingface_hub.utils import _http

    disable_progress_bars()
    recorder = Recorder()
    count_http_requests(recorder)
    try:
        return _run(args, recorder, LocalHub)
    finally:
        _http.set_client_factory(_http.default_client_factory)


def _run(args: argparse.Namespace, recorder: Recorder, LocalHub) -> int:
    work = Path(tempfile.mkdtemp(prefix="hub-load-"))
    os.environ.setdefault("HF_XET_CACHE", str(work / "xet-cache"))  # a fresh endpoint: keep its cache here
    try:
        with LocalHub(work / "hub") as hub:
            uploaded = Uploaded()
            mixed_seconds = run_phase(mixed_client, args.clients, hub, args, time.monotonic() + args.seconds, work,
                                      uploaded, recorder)
            mixed = {name: recorder.latencies.pop(name, []) for name in ("upload folder", "download + verify")}
            http_mixed = recorder.latencies.pop("http request", [])

            shared = f"{hub.user}/bench-shared"
            hub.api().create_repo(shared)
            committed: dict[str, str] = {}
            contention_seconds = run_phase(contention_client, args.clients, hub, shared,
                                           time.monotonic() + args.seconds, recorder, committed, threading.Lock())
            contention = {name: recorder.latencies.pop(name, [])
                          for name in ("commit (parent_commit)", "commit (no parent)")}
            http_contention = recorder.latencies.pop("http request", [])
            check = verify_no_lost_update(hub, shared, committed)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ok = (recorder.counters["files corrupted"] == 0 and not check["files_missing"] and not check["files_wrong"]
          and not check["commits_missing_from_history"] and recorder.counters["files checked"] > 0
          and recorder.counters["http 5xx"] == 0)
    results = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "mixed": {"seconds": round(mixed_seconds, 2),
                  "operations": {**{k: _stats(v, mixed_seconds) for k, v in mixed.items()},
                                 "http request": _stats(http_mixed, mixed_seconds)},
                  "errors": {k: v for k, v in recorder.errors.items() if k in mixed}},
        "contention": {"seconds": round(contention_seconds, 2),
                       "operations": {**{k: _stats(v, contention_seconds) for k, v in contention.items()},
                                      "http request": _stats(http_contention, contention_seconds)},
                       "errors": {k: v for k, v in recorder.errors.items() if k in contention},
                       "conflicts": recorder.counters["412 conflicts (rebased)"],
                       "gave_up": recorder.counters["gave up after conflicts"]},
        "http_5xx": recorder.counters["http 5xx"],
        "integrity": {"files_checked": recorder.counters["files checked"],
                      "files_corrupted": recorder.counters["files corrupted"], "contention": check, "ok": ok},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    table = markdown(results)
    (args.out / "results.md").write_text(table)
    print(table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
