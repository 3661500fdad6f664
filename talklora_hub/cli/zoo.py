"""`talklora-hub zoo build | retrain | compare | recipes | list`: the shipped zoo from the shell."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import add_command_group
from .verbosity import add_verbose_flag, third_party_output, wants_verbose


def register(subparsers) -> None:
    actions = add_command_group(subparsers, "zoo",
                                help="the shipped zoo: publish it (the main job), retrain it, list it")

    build = actions.add_parser("build", help="the main job: publish the shipped zoo to the embedded Hub, load a model "
                                             "back by repo id and serve the routing Space")
    build.add_argument("--root", default="artifacts", help="where the Hub's data and caches live (default artifacts/)")
    build.add_argument("--zoo-dir", default=None, help="the shipped entries (default: the repository's zoo/)")
    build.add_argument("--port", type=int, default=0, help="Hub port (default: a free one)")
    build.add_argument("--no-serve", action="store_true", help="stop after loading the model back (no Space)")
    add_verbose_flag(build)
    build.set_defaults(func=cmd_build)

    retrain = actions.add_parser("retrain", help="train, score and ship the zoo's entries from their recipes "
                                                 "(resumable; each entry is saved as it finishes)")
    retrain.add_argument("--only", nargs="+", default=None, metavar="ENTRY", help="entries to retrain (default: all)")
    retrain.add_argument("--zoo-dir", default=None, help="where to ship (default: the repository's zoo/)")
    retrain.add_argument("--runs", default="runs/zoo", help="training runs and checkpoints (default runs/zoo)")
    retrain.add_argument("--force", action="store_true", help="retrain entries that are already shipped")
    retrain.add_argument("--no-progress", action="store_true")
    retrain.set_defaults(func=cmd_retrain)

    peft = actions.add_parser("peft-baseline", help="train PEFT LoRA with a causal zoo recipe's budget and store its "
                                                    "scores in zoo/baselines.json (the cards compare with it)")
    peft.add_argument("--recipe", default="smollm2-lora-mixture", help="whose budget (default smollm2-lora-mixture)")
    peft.add_argument("--zoo-dir", default=None)
    peft.set_defaults(func=cmd_peft_baseline)

    compare = actions.add_parser("compare", help="does a retrained zoo reproduce the shipped one? each entry's retrained "
                                                 "accuracy against the shipped interval (exit 1 if one falls outside)")
    compare.add_argument("--retrained", required=True, help="the folder `zoo retrain --zoo-dir` shipped into")
    compare.add_argument("--zoo-dir", default=None, help="the shipped zoo (default: the repository's zoo/)")
    compare.set_defaults(func=cmd_compare)

    recipes = actions.add_parser("recipes", help="the recipes and which entries are shipped")
    recipes.add_argument("--zoo-dir", default=None)
    recipes.set_defaults(func=cmd_recipes)

    report = actions.add_parser("report", help="write zoo/README.md: every shipped entry against the baselines")
    report.add_argument("--zoo-dir", default=None)
    report.set_defaults(func=cmd_report)

    listing = actions.add_parser("list", help="list every published model, expert and router (the zoo index)")
    listing.add_argument("--zoo-repo", default=None, help="index repo (default: YOUR_NAME/talklora-zoo)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=cmd_list)


def cmd_build(args) -> int:
    from ..jobs.zoo_build import PublishPlan, main_job

    try:
        verbose = wants_verbose(args.verbose)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    plan = PublishPlan(root=Path(args.root).resolve(), zoo_dir=Path(args.zoo_dir) if args.zoo_dir else None,
                       port=args.port, verbose=verbose)
    # The Space and the fresh interpreter inherit the quiet through the environment it sets.
    with third_party_output(verbose):
        main_job(plan, serve=not args.no_serve)
    return 0


def cmd_retrain(args) -> int:
    from ..zoo.retrain import retrain

    shipped = retrain(args.only, Path(args.zoo_dir) if args.zoo_dir else None, Path(args.runs), args.force,
                      progress=not args.no_progress)
    for name, folder in shipped.items():
        print(f"{name}: {folder}")
    return 0


def cmd_peft_baseline(args) -> int:
    from ..zoo.retrain import peft_baseline

    peft_baseline(args.recipe, Path(args.zoo_dir) if args.zoo_dir else None)
    return 0


def cmd_compare(args) -> int:
    from ..zoo.reproduce import compare_zoos, markdown

    try:
        rows = compare_zoos(Path(args.retrained), Path(args.zoo_dir) if args.zoo_dir else None)
    except ValueError as error:
        print(error)
        return 2
    print(markdown(rows), end="")
    outside = [f"{r['entry']} on {r['task']}" for r in rows if not r["within"]]
    if outside:
        print(f"not reproduced (outside the shipped interval): {', '.join(outside)}")
        return 1
    print(f"reproduced: all {len(rows)} figures inside the shipped intervals")
    return 0


def cmd_recipes(args) -> int:
    from ..zoo.recipes import RECIPES, train_command_line
    from ..zoo.shipped import read_record, shipped_entries

    done = shipped_entries(Path(args.zoo_dir) if args.zoo_dir else None)
    for recipe in RECIPES:
        state = "shipped" if recipe.name in done else "not shipped"
        line = f"{recipe.name:32} {recipe.kind:6} {state:11} {recipe.summary}"
        if recipe.name in done:
            metrics = read_record(done[recipe.name])["metrics"]
            line += "  [" + ", ".join(f"{t} {m['accuracy']:.3f}" for t, m in metrics.items()) + "]"
        print(line)
        print(f"{'':32} {train_command_line(recipe)}")
    return 0


def cmd_report(args) -> int:
    from ..zoo.report import write_report

    path = write_report(Path(args.zoo_dir) if args.zoo_dir else None)
    print(path.read_text())
    return 0


def cmd_list(args) -> int:
    from ..publish.zoo_index import list_zoo

    entries = list_zoo(args.zoo_repo)
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    if not entries:
        print("the zoo is empty")
        return 0
    print(f"{'repo':40} {'kind':7} {'method':10} {'base':28} headline")
    for e in entries:
        headline = e.get("headline")
        text = f"{headline['task']} {headline['metric']}={headline['value']:.3f}" if headline else ""
        print(f"{e['repo_id']:40} {e.get('kind', ''):7} {e.get('method', ''):10} {str(e.get('base') or ''):28} {text}")
    return 0
