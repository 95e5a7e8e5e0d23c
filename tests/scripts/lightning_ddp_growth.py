"""Run by tests/test_integrations_lightning.py: GrowthCallback under `lightning.Trainer(strategy="ddp")`, 2 CPUs.

    python tests/scripts/lightning_ddp_growth.py REPORT.json ROOT_DIR

Lightning's DDP launcher starts the second process by running this script again. Each rank builds its model from
its own seed (DDP must broadcast rank 0's) and trains on its own half of the data (Lightning's DistributedSampler),
so only a gradient all-reduce that covers the new parameters keeps the replicas identical through two growths.
"""
import json
import os
import sys

import lightning as L
import torch
import torch.nn.functional as F
from ddp_growth import first_mismatch  # this directory: the accelerate DDP script's check
from torch.utils.data import DataLoader, TensorDataset

from growres import GrowthPlan, stage_layers
from growres.integrations.lightning import GrowthCallback
from growres.multilevel_resnet import MultilevelResNet

PLAN = GrowthPlan(cycles=(4, 7), total=9, unit="step")  # 3 epochs of 3 steps per rank


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

    def __init__(self, growth: GrowthCallback, path: str):
        self.growth, self.path = growth, path
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
        if trainer.is_global_zero:
            with open(self.path, "w") as file:
                json.dump(self.report, file)


def main(report_path: str, root_dir: str) -> None:
    torch.manual_seed(int(os.environ.get("LOCAL_RANK", "0")))  # another init per rank
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(48, 1, 8, 8, generator=generator), torch.randint(0, 3, (48,), generator=generator))
    growth = GrowthCallback(PLAN)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=root_dir, callbacks=[growth, Report(growth, report_path)])
    trainer.fit(Classifier(), DataLoader(data, batch_size=8))


if __name__ == "__main__":
    main(*sys.argv[1:])
