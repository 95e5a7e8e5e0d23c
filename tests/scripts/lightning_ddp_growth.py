"""Run by tests/test_integrations_lightning.py: GrowthCallback under `lightning.Trainer(strategy="ddp")`, 2 CPUs.

    python tests/scripts/lightning_ddp_growth.py REPORT.json ROOT_DIR

Lightning's DDP launcher starts the second process by running this script again. Each rank builds its model from
its own seed (DDP must broadcast rank 0's) and trains on its own half of the data (Lightning's DistributedSampler),
so only a gradient all-reduce that covers the new parameters keeps the replicas identical through two growths.
Then both ranks resume a fresh, ungrown module from the checkpoint rank 0 saved between the growths, and compare
what they end with to what the uninterrupted run ended with on the same rank.
"""
import json
import os
import sys

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from ddp_growth import first_mismatch  # this directory: the accelerate DDP script's check
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from growres import GrowthPlan, stage_layers
from growres.integrations.lightning import GrowthCallback
from growres.multilevel_resnet import MultilevelResNet

PLAN = GrowthPlan(cycles=(4, 7), total=9, unit="step")  # 3 epochs of 3 steps per rank
RESUME_FROM = "step=6.ckpt"  # the end of epoch 2: grown once (at step 4), the second growth still to come


class Classifier(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = MultilevelResNet(layers=(2, 2, 2), widths=(4, 8, 8), interpolations=2, num_classes=3, in_chans=1)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        return F.cross_entropy(self.net(images), labels)

    def configure_optimizers(self):
        decay = [p for p in self.parameters() if p.ndim > 1]
        no_decay = [p for p in self.parameters() if p.ndim <= 1]
        return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                 lr=1e-2)


class Report(L.Callback):
    """After GrowthCallback: whether the ranks' parameters agree right after each growth and at the end (BN running
    statistics are per rank between DDP's buffer broadcasts, at the start of each forward)."""

    def __init__(self, growth: GrowthCallback):
        self.growth = growth
        self.report = {"growths": []}
        self.at_last_growth = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        records = self.growth.records
        if len(records) > len(self.report["growths"]):
            self.report["growths"].append({"step": records[-1].step, "layers": list(records[-1].layers),
                                           "mismatch": first_mismatch(pl_module, buffers=False)})
            self.at_last_growth = {n: p.detach().clone() for n, p in pl_module.net.named_parameters()}

    def on_train_end(self, trainer, pl_module):
        net = pl_module.net
        self.report["final_mismatch"] = first_mismatch(pl_module, buffers=False)
        new = [n for n, _ in net.named_parameters() if n.startswith("stages.") and int(n.split(".")[2]) % 2 == 1]
        self.report["new_blocks_moved"] = all(
            not torch.equal(dict(net.named_parameters())[n], self.at_last_growth[n]) for n in new)
        self.report.update(world_size=trainer.world_size, wrapped=type(trainer.strategy.model).__name__,
                           layers=list(stage_layers(net)))


def trainer(root_dir: str, callbacks: list[L.Callback]) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=3, logger=False,
                     enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=root_dir,
                     callbacks=callbacks)


def resumed_like(resumed: L.Trainer, uninterrupted: L.Trainer) -> dict:
    """On this rank: the first tensor of the module's state (parameters and buffers) and of the optimizer's state in
    which the resumed run ended otherwise than the uninterrupted one, or None (CPU arithmetic is deterministic)."""
    def first_differing(got: dict, expected: dict) -> str | None:
        if list(got) != list(expected):
            return "the names differ"
        return next((name for name in expected if not torch.equal(got[name], expected[name])), None)

    def tensors(optimizer_state: dict) -> dict:
        return {f"{i}.{k}": v for i, state in optimizer_state["state"].items() for k, v in state.items()}

    modules = resumed.lightning_module.state_dict(), uninterrupted.lightning_module.state_dict()
    got, expected = resumed.optimizers[0].state_dict(), uninterrupted.optimizers[0].state_dict()
    return {"rank": resumed.global_rank, "module": first_differing(*modules),
            "optimizer": first_differing(tensors(got), tensors(expected)),
            "param_groups_equal": got["param_groups"] == expected["param_groups"]}


def main(report_path: str, root_dir: str) -> None:
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(48, 1, 8, 8, generator=generator), torch.randint(0, 3, (48,), generator=generator))
    checkpoints = os.path.join(root_dir, "checkpoints")

    # the uninterrupted run, saving a checkpoint at each epoch's end (on rank 0)
    torch.manual_seed(rank)  # another init per rank
    growth = GrowthCallback(PLAN)
    report = Report(growth)
    uninterrupted = trainer(root_dir, [growth, report, ModelCheckpoint(checkpoints, "{step}", save_top_k=-1)])
    uninterrupted.fit(Classifier(), DataLoader(data, batch_size=8))

    # resumed between the growths: a fresh module at the start depth, with yet another init per rank
    torch.manual_seed(100 + rank)
    resumed_growth = GrowthCallback(PLAN)
    resumed = trainer(root_dir, [resumed_growth])
    resumed.fit(Classifier(), DataLoader(data, batch_size=8), ckpt_path=os.path.join(checkpoints, RESUME_FROM))
    resume = [None] * resumed.world_size
    dist.all_gather_object(resume, resumed_like(resumed, uninterrupted))
    report.report["resume"] = resume
    report.report["resumed_growths"] = [(r.step, list(r.layers)) for r in resumed_growth.records]
    if resumed.is_global_zero:
        with open(report_path, "w") as file:
            json.dump(report.report, file)


if __name__ == "__main__":
    main(*sys.argv[1:])
