"""Grow a growres ResNet on Fashion-MNIST with lightning.Trainer and growres' GrowthCallback.

    python examples/train_lightning.py --output-dir runs/lightning                  # 2-2-2 -> 4-4-4 -> 8-8-8 blocks
    python examples/train_lightning.py --output-dir runs/lightning --devices 2      # DDP, 2 processes (CPU or GPU)
    python examples/train_lightning.py --output-dir runs/lightning --resume runs/lightning/checkpoints/last.ckpt

The data is Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``;
online, growres falls back to the Hub copy), as 3x32x32 images. ``growres_resnet50i`` starts at 2-2-2 blocks and
carries its plan: ``GrowthCallback()`` interpolates it at 60/160 and 110/160 of the run (each block followed by its
copy, h halved), carries SGD's momentum over to the new blocks and sets the cyclic cosine LR of Eq. 9 from the lr
``configure_optimizers`` gives. ``metrics.csv`` in the output folder has, per step, the LR (``lr-SGD/...``, from
``LearningRateMonitor``), the loss and the blocks, and per epoch the test accuracy; ``checkpoints/`` the checkpoint of
every epoch, which ``--resume`` continues from (a fresh model grows to the checkpoint's depth first).
"""
import argparse
import sys
from pathlib import Path

import lightning as L
import timm
import timm.optim
import torch.nn.functional as F
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

import growres
from growres.data import ImageData, load_image_data
from growres.integrations.lightning import GrowthCallback


class Classifier(L.LightningModule):
    def __init__(self, data: ImageData, model: str, lr: float, weight_decay: float):
        super().__init__()
        self.data = data  # standardisation and augmentation (Appendix A), run per batch on the batch's device
        self.model = timm.create_model(model, num_classes=data.num_classes, in_chans=data.input_size[0])
        self.lr, self.weight_decay = lr, weight_decay

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = F.cross_entropy(self.model(self.data.augment(images)), labels)  # random crops and flips
        self.log("train_loss", loss)
        self.log("blocks", float(sum(growres.stage_layers(self.model))))  # the depth, to see it grow
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        logits = self.model(self.data.normalize(images))
        self.log("test_acc", (logits.argmax(1) == labels).float().mean(), sync_dist=True)

    def configure_optimizers(self):
        # The paper's SGD with classical momentum; no weight decay on norms and biases (timm puts them in a group of
        # their own, in the model's order). The lr is Eq. 9's η_max: GrowthCallback sets the LR, so no scheduler.
        return timm.optim.create_optimizer_v2(self.model, "momentum", lr=self.lr, momentum=0.9,
                                              weight_decay=self.weight_decay)


def main() -> int:
    parser = argparse.ArgumentParser(description="Multi-level ResNet training with lightning.Trainer.")
    parser.add_argument("--model", default="growres_resnet50i", help="a growres -i model, or any model growth knows")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=100, help="per process")
    parser.add_argument("--lr", type=float, default=0.1, help="η_max of Eq. 9 (η_min: 0.002 of it, the paper's ratio)")
    parser.add_argument("--weight-decay", type=float, default=2e-4)
    parser.add_argument("--max-train-samples", type=int, default=10000)
    parser.add_argument("--max-eval-samples", type=int, default=2000)
    parser.add_argument("--devices", type=int, default=1, help="more than 1: DDP, one process each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="runs/lightning")
    parser.add_argument("--resume", help="a checkpoint of this run to continue from")
    args = parser.parse_args()
    L.seed_everything(args.seed, verbose=False)

    # 1. Data: uint8 tensors, decoded once (growres.data); augmented per batch in training_step
    try:
        data = load_image_data("fashion-mnist", max_train_samples=args.max_train_samples,
                               max_eval_samples=args.max_eval_samples)
    except growres.GrowresError as err:  # no Debian package and no Hub: say what to install
        print(f"train_lightning.py: error: {err}", file=sys.stderr)
        return 2
    train = DataLoader(TensorDataset(data.train_images, data.train_labels), args.batch_size, shuffle=True)
    test = DataLoader(TensorDataset(data.test_images, data.test_labels), 500)

    # 2. The growth: GrowthCallback() follows the model's own plan over the run's length
    growth = GrowthCallback()
    trainer = L.Trainer(
        max_epochs=args.epochs, accelerator="auto",
        devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
        callbacks=[growth, LearningRateMonitor(logging_interval="step"),
                   ModelCheckpoint(f"{args.output_dir}/checkpoints", save_top_k=-1, save_last=True)],
        logger=CSVLogger(args.output_dir, name="", version=""), log_every_n_steps=1, enable_progress_bar=False,
    )

    # 3. Train (or continue a checkpoint), then report the grown model
    model = Classifier(data, args.model, args.lr, args.weight_decay)
    trainer.fit(model, train, test, ckpt_path=args.resume)
    if trainer.is_global_zero:
        for record in growth.records:
            print(f"grew to {'-'.join(map(str, record.layers))} blocks at step {record.step}")
        layers = "-".join(map(str, growres.stage_layers(model.model)))
        print(f"{args.model}: test accuracy {trainer.callback_metrics['test_acc']:.2%} after {args.epochs} epochs "
              f"({layers} blocks); metrics in {Path(trainer.logger.log_dir) / 'metrics.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
