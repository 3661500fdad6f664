"""`talklora-hub push`, `talklora-hub pull` and `talklora-hub zoo list`: publishing from the shell.

The Hub is the one huggingface_hub is pointed at (HF_ENDPOINT, HF_TOKEN); `hub serve` starts a local one.
"""

from __future__ import annotations

import json
from pathlib import Path


def register(subparsers) -> None:
    push = subparsers.add_parser("push", help="publish a saved model folder as a full model, expert or router repo")
    push.add_argument("folder", help="a folder written by save_pretrained (train_result.json beside it is used)")
    push.add_argument("repo_id")
    push.add_argument("--kind", choices=("model", "expert"), default="model")
    push.add_argument("--task", default=None, help="the task the model was trained on (cards, zoo index)")
    push.add_argument("--base-repo-id", default=None, help="experts: the base model's repo (default: recorded)")
    push.add_argument("--base-revision", default=None, help="experts: the base model's commit (default: recorded)")
    push.add_argument("--private", action="store_true")
    push.add_argument("--zoo-repo", default=None, help="index repo (default: NAMESPACE/talklora-zoo)")
    push.set_defaults(func=cmd_push)

    pull = subparsers.add_parser("pull", help="assemble a model, expert or router repo and describe it")
    pull.add_argument("repo_id")
    pull.add_argument("--revision", default=None)
    pull.set_defaults(func=cmd_pull)

    zoo = subparsers.add_parser("zoo", help="the zoo index")
    actions = zoo.add_subparsers(dest="zoo_command", metavar="ACTION")
    zoo.set_defaults(func=lambda args: zoo.print_help() or 2)
    listing = actions.add_parser("list", help="list every published model, expert and router")
    listing.add_argument("--zoo-repo", default=None, help="index repo (default: YOUR_NAME/talklora-zoo)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=cmd_zoo_list)
    build = actions.add_parser("build", help="the main job: build (or reuse) a small zoo on the embedded Hub, load a "
                                             "model back by repo id and serve the routing Space")
    build.add_argument("--root", default="artifacts", help="where the Hub's data and the runs live (default artifacts/)")
    build.add_argument("--steps", type=int, default=12, help="training steps of each mixture model (default 12)")
    build.add_argument("--eval-examples", type=int, default=12, help="evaluation examples per task (default 12)")
    build.add_argument("--port", type=int, default=0, help="Hub port (default: a free one)")
    build.add_argument("--rebuild", action="store_true", help="train and publish again even what the zoo has")
    build.add_argument("--no-serve", action="store_true", help="stop after loading the model back (no Space)")
    build.set_defaults(func=cmd_zoo_build)


def cmd_push(args) -> int:
    from .artifacts import load_artifact
    from .publish import RESULT_FILE, publish_expert, publish_model

    folder = Path(args.folder)
    model = load_artifact(folder)
    result_file = folder / RESULT_FILE
    result = json.loads(result_file.read_text()) if result_file.exists() else None
    if args.kind == "expert":
        pushed = publish_expert(model, args.repo_id, task=args.task, result=result, base_repo_id=args.base_repo_id,
                                base_revision=args.base_revision, private=args.private, zoo_repo=args.zoo_repo)
    else:
        tokenizer = None
        if (folder / "tokenizer_config.json").exists():
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(folder)
        pushed = publish_model(model, tokenizer, args.repo_id, result=result, private=args.private,
                               zoo_repo=args.zoo_repo, task=args.task)
    state = "new commit" if pushed.changed else "unchanged, no commit"
    print(f"{pushed.repo_id}@{pushed.commit} ({state})")
    return 0


def cmd_pull(args) -> int:
    from .artifacts import load_artifact

    model = load_artifact(args.repo_id, revision=args.revision)
    counts = model.parameter_counts()
    settings = model.adapter_settings
    print(f"{args.repo_id}: {type(model).__name__}, method={settings.method}, experts={settings.num_experts}, "
          f"base={model.config.base_model_name_or_path}@{model.config.base_model_revision}, "
          f"trainable {counts['trainable']:,} / {counts['total']:,}")
    return 0


def cmd_zoo_list(args) -> int:
    from .zoo import list_zoo

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


def cmd_zoo_build(args) -> int:
    from ..zoo_build import ZooPlan, main_job

    plan = ZooPlan(root=Path(args.root).resolve(), steps=args.steps, eval_examples=args.eval_examples,
                   rebuild=args.rebuild, port=args.port)
    main_job(plan, serve=not args.no_serve)
    return 0
