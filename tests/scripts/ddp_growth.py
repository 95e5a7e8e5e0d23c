"""Launched under 2-process DDP by tests/test_ddp.py: grow twice in a live run, report what each rank holds.

Each rank trains on its own shard, so only a correct gradient all-reduce keeps the replicas identical:
a grown model whose new parameters DDP does not reduce would drift apart here.
"""
import json
import os
import sys
from collections.abc import Iterable

import timm
import timm.optim
import torch
import torch.distributed as dist
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, TensorDataset

from growres import GrowthPlan, GrowthScheduler

TOTAL_STEPS = 12


def first_mismatch(model: torch.nn.Module, buffers: bool = True) -> str | None:
    """The first parameter (or buffer) that differs between ranks, or None."""
    return first_differing(model.state_dict().items() if buffers else model.named_parameters())


def first_differing(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first tensor that differs between ranks, or None."""
    for name, tensor in named_tensors:
        gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, tensor.contiguous())
        if not all(torch.equal(g, gathered[0]) for g in gathered):
            return name
    return None


def main(report_path: str, checkpoint_dir: str) -> None:
    accelerator = Accelerator()
    set_seed(accelerator.process_index)  # different init per rank: prepare() must broadcast rank 0's weights
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(96, 3, 32, 32, generator=gen), torch.randint(0, 10, (96,), generator=gen))
    loader = DataLoader(data, batch_size=8, shuffle=True)
    model = timm.create_model("growres_resnet50i", num_classes=10)
    optimizer = timm.optim.create_optimizer_v2(model, "sgd", lr=0.1, momentum=0.9, weight_decay=2e-4)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    scheduler = GrowthScheduler(
        model, optimizer, GrowthPlan(cycles=(4, 8), total=TOTAL_STEPS, unit="step"), accelerator=accelerator,
        lr_max=0.1,
    )

    report = {"world_size": accelerator.num_processes, "growths": []}
    at_last_growth = None
    while scheduler.step_count < TOTAL_STEPS:
        for x, y in loader:
            loss = F.cross_entropy(scheduler.model(x), y)
            scheduler.optimizer.zero_grad()
            accelerator.backward(loss)
            scheduler.optimizer.step()
            record = scheduler.step()
            if record is not None:
                bare = accelerator.unwrap_model(scheduler.model)
                ddp_params = sum(p.numel() for p in scheduler.model.parameters())
                report["growths"].append({
                    "step": record.step, "layers": list(record.layers), "step_size": record.step_size,
                    "num_params": record.num_params, "ddp_params": ddp_params,
                    "wrapped": type(scheduler.model).__name__, "mismatch": first_mismatch(bare),
                })
                at_last_growth = {k: v.clone() for k, v in bare.state_dict().items()}
            if scheduler.step_count == TOTAL_STEPS:
                break

    bare = accelerator.unwrap_model(scheduler.model)
    # BN running statistics are per-rank between DDP's buffer broadcasts (at each forward): compare parameters
    report["final_mismatch"] = first_mismatch(bare, buffers=False)
    # blocks inserted by the last growth sit at odd positions of every stage
    new_weights = [
        f"stages.{s}.{i}.conv1.weight" for s, stage in enumerate(bare.stages) for i in range(1, len(stage), 2)
    ]
    report["new_blocks_moved"] = all(
        not torch.equal(bare.state_dict()[k], at_last_growth[k]) for k in new_weights
    )

    # accelerate's checkpointing still holds one model and one optimizer, and round-trips after growth
    accelerator.save_state(checkpoint_dir)
    accelerator.wait_for_everyone()
    reference = {k: v.clone() for k, v in bare.state_dict().items()}
    with torch.no_grad():
        for p in bare.parameters():
            p.zero_()
    accelerator.load_state(checkpoint_dir)
    report["checkpoint_files"] = sorted(os.listdir(checkpoint_dir))
    report["checkpoint_roundtrip"] = all(torch.equal(v, reference[k]) for k, v in bare.state_dict().items())

    if accelerator.is_main_process:
        with open(report_path, "w") as f:
            json.dump(report, f)
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
