"""`talklora-hub push` and `talklora-hub pull`: publishing from the shell (the zoo's commands live in
talklora_hub.cli.zoo).

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
    push.add_argument("--full", action="store_true",
                      help="models: upload the whole model (default: adapter only when the base is pinned by repo id "
                           "and commit, which loading fetches)")
    push.add_argument("--zoo-repo", default=None, help="index repo (default: NAMESPACE/talklora-zoo)")
    push.set_defaults(func=cmd_push)

    pull = subparsers.add_parser("pull", help="assemble a model, expert or router repo and describe it")
    pull.add_argument("repo_id")
    pull.add_argument("--revision", default=None)
    pull.set_defaults(func=cmd_pull)


def cmd_push(args) -> int:
    from ..publish.artifacts import load_artifact
    from ..publish.publisher import RESULT_FILE, publish_expert, publish_model

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

            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
        pushed = publish_model(model, tokenizer, args.repo_id, result=result, private=args.private,
                               zoo_repo=args.zoo_repo, task=args.task, adapter_only=False if args.full else None)
    state = "new commit" if pushed.changed else "unchanged, no commit"
    print(f"{pushed.repo_id}@{pushed.commit} ({state})")
    return 0


def cmd_pull(args) -> int:
    from ..publish.artifacts import load_artifact

    model = load_artifact(args.repo_id, revision=args.revision)
    counts = model.parameter_counts()
    settings = model.adapter_settings
    print(f"{args.repo_id}: {type(model).__name__}, method={settings.method}, experts={settings.num_experts}, "
          f"base={model.config.base_model_name_or_path}@{model.config.base_model_revision}, "
          f"adapter {counts['adapter']:,} / {counts['total']:,} parameters")
    return 0
