"""Run by test_distributed under `python -m torch.distributed.run --nproc_per_node 2`: trains a few steps
on the tiny base and writes each process's adapter tensors (argv: base folder, output folder)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from safetensors.torch import save_file  # noqa: E402

from talklora_hub.train import TrainConfig, train  # noqa: E402
from talklora_hub.train.checkpoint import adapter_tensors  # noqa: E402
from tests.train.helpers import colors_task  # noqa: E402


def main(base: str, out: str) -> None:
    result = train(TrainConfig(base=base, tasks=[colors_task()], method="talklora", r=8, num_experts=4, num_experts_per_tok=2,
                               lora_dropout=0.1, lr=2e-2, max_steps=4, batch_size=4, max_length=40, output=out,
                               max_eval_examples=4, progress=False, log_every=2))
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    save_file(adapter_tensors(result.model), str(Path(out) / f"adapter-rank{rank}.safetensors"))
    (Path(out) / f"world-rank{rank}.txt").write_text(f"{world} {result.timing['num_processes']} {result.headline}\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
