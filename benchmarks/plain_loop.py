"""The reference `growres train` is measured against: a minimal PyTorch training loop over the same data.

Same model (timm), same uint8 tensors and batched augmentation (``ImageData.augment``), same optimizer
(timm's ``momentum`` SGD without weight decay on norms and biases), same batch and the same CPU allocator
setting (:func:`growres.keep_freed_cpu_memory`), so that what differs is the loop alone: no accelerate, no
per-batch seeding, no metrics. With ``--cycles`` the model grows at those epochs under a bare
:class:`growres.GrowthScheduler` (no accelerate). Prints one JSON line: images/s of each epoch (steps only).

    python benchmarks/plain_loop.py --model growres_resnet50 --model-kwargs "layers=(4,4,4)" --epochs 2
    python benchmarks/plain_loop.py --model growres_resnet50i --epochs 6 --cycles 2,4
"""
import argparse
import json
import time

import timm
import timm.optim
import torch
import torch.nn.functional as F
from timm.utils import ParseKwargs

import growres
from growres.data import load_image_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="growres_resnet50")
    parser.add_argument("--model-kwargs", nargs="*", default={}, action=ParseKwargs, help="KEY=VALUE, as timm's")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--max-train-samples", type=int, default=2000)
    parser.add_argument("--cycles", default=None, help="grow at these epochs, e.g. 2,4 (GrowthScheduler)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    growres.keep_freed_cpu_memory()
    torch.manual_seed(args.seed)
    data = load_image_data("fashion-mnist", max_train_samples=args.max_train_samples, max_eval_samples=1)
    model = timm.create_model(args.model, num_classes=data.num_classes, in_chans=data.train_images.shape[1],
                              **args.model_kwargs)
    optimizer = timm.optim.create_optimizer_v2(model, "momentum", lr=0.1, momentum=0.9, weight_decay=2e-4)
    images, labels = data.train_images, data.train_labels
    scheduler = None
    if args.cycles:
        plan = growres.GrowthPlan(cycles=tuple(int(c) for c in args.cycles.split(",")), total=args.epochs)
        steps_per_epoch = -(-len(labels) // args.batch_size)
        scheduler = growres.GrowthScheduler(model, optimizer, plan, steps_per_epoch=steps_per_epoch, lr_max=0.1)
    model.train()
    images_per_second, layers = [], []
    for _ in range(args.epochs):
        if scheduler is not None:
            model, optimizer = scheduler.model, scheduler.optimizer
        layers.append(growres.stage_layers(model))
        started = time.perf_counter()
        order = torch.randperm(len(labels))
        for batch in order.split(args.batch_size):
            loss = F.cross_entropy(model(data.augment(images[batch])), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None and scheduler.step() is not None:  # grown: the next batch uses the new model
                model, optimizer = scheduler.model, scheduler.optimizer
        images_per_second.append(len(labels) / (time.perf_counter() - started))
    print(json.dumps({"model": args.model, "layers": layers, "images_per_second": images_per_second}))


if __name__ == "__main__":
    main()
