"""Time saved and accuracy of multi-level training, side by side in one run on one machine.

The paper's headline (Tables 3 and 4): the multi-level model trains >40% faster than the last-cycle model
at on-par accuracy. This script measures growres' own numbers on real data:

1. Training, one Table 3 row: the first-cycle (growres_resnet14), last-cycle (growres_resnet50) and
   multi-level (growres_resnet50i) models, same epochs and LR cycles, plus the `identity` interpolation
   strategy as a peer of the paper's `copy`. Wall time, training time, images/s per cycle, test accuracy;
   for the multi-level model the time saved against the last-cycle model next to the FLOPs prediction.
2. Timing-sensitive parts, repeated and interleaved (these machines are noisy): the explicit h against
   the same network with h folded into the weights, and the cost of growth events.

    python benchmarks/time_saved.py            # default size (< 15 min on a 2-core CPU)
    python benchmarks/time_saved.py --quick    # < 2 min, a smoke test
    python benchmarks/time_saved.py --full     # the paper's schedule (160 epochs)

Results go to benchmarks/results/ as JSON + Markdown (+ a PNG of accuracy against training time).
"""
import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import timm
import timm.optim
import torch
import torch.nn.functional as F

import growres
from growres import GrowthPlan, GrowthScheduler, theoretical_time_saved
from growres.runs import RunFolder

RESULTS = Path(__file__).parent / "results"

SIZES = {
    # train images, test images, epochs, cycle starts, timing repeats
    "quick": dict(train=2000, test=1000, epochs=3, cycles=(1, 2), repeats=2, steps=3),
    "default": dict(train=10000, test=2000, epochs=6, cycles=(2, 4), repeats=3, steps=8),
    "full": dict(train=None, test=None, epochs=160, cycles=(60, 110), repeats=3, steps=20),
}
ROW = dict(first="growres_resnet14", last="growres_resnet50", multilevel="growres_resnet50i")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="size", const="quick", help="< 2 min smoke test")
    size.add_argument("--full", action="store_const", dest="size", const="full", help="the paper's 160 epochs")
    parser.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (offline) or cifar10, ...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="results file stem (default by size)")
    args = parser.parse_args()
    args.size = args.size or "default"
    return args


# -- 1. training runs -------------------------------------------------------------------------------------


def train(model: str, args, size: dict, workdir: Path, *extra: str) -> dict:
    """One `growres train` run in its own process; its summary, per-epoch rows and wall time."""
    out = workdir / f"{model}{'-'.join(('',) + extra).replace('--', '')}"
    command = [sys.executable, "-m", "growres", "train", "--model", model, "--dataset", args.dataset,
               "--epochs", str(size["epochs"]), "--cycles", ",".join(map(str, size["cycles"])),
               "--seed", str(args.seed), "--output-dir", str(out), *extra]
    if size["train"]:
        command += ["--max-train-samples", str(size["train"]), "--max-eval-samples", str(size["test"])]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, TQDM_DISABLE="1"))
    wall = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"training {model} failed:\n{result.stderr[-3000:]}")
    run = RunFolder(out)
    rows = run.metrics()
    per_cycle = {}
    for row in rows:
        cycle = per_cycle.setdefault(row["cycle"], {"layers": row["layers"], "images": 0.0, "seconds": 0.0})
        cycle["images"] += row["images_per_second"] * row["epoch_seconds"]
        cycle["seconds"] += row["epoch_seconds"]
    summary = run.summary()
    return {
        "model": model, "extra": list(extra), "test_acc": summary["test_acc"],
        "train_seconds": summary["train_seconds"], "wall_seconds": wall, "growth": summary["growth"],
        "images_per_second_per_cycle": {c: v["images"] / v["seconds"] for c, v in per_cycle.items()},
        "layers_per_cycle": {c: v["layers"] for c, v in per_cycle.items()},
        "curve": [(r["cumulative_seconds"], r["test_acc"]) for r in rows],
        "last_epoch_seconds": rows[-1]["epoch_seconds"],
    }


# -- 2. timing-sensitive parts ------------------------------------------------------------------------------


def step_seconds(model, batch: int, steps: int) -> float:
    """Median seconds of one SGD training step (forward, backward, update) on a fixed batch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    times = []
    for i in range(steps + 1):
        started = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i:  # the first step warms up allocators and caches
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def fold_h(model):
    """The same network with h multiplied into each block's last conv, and no multiply in forward."""
    folded = copy.deepcopy(model)
    for block in folded.step_blocks():
        with torch.no_grad():
            block.conv2.weight.mul_(block.h)
        block.forward = types.MethodType(lambda self, x: self.shortcut(x) + self.drop_path(self.residual(x)), block)
    return folded


def explicit_h_cost(size: dict) -> dict:
    """Throughput of growres_resnet50 at h=0.25 against the same weights with h folded away, interleaved."""
    torch.manual_seed(0)
    model = timm.create_model("growres_resnet50", step_size=0.25).eval()
    folded = fold_h(model)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), folded(x), atol=1e-5), "folding h must not change the function"
    model.train()
    folded.train()
    with_h, without_h = [], []
    for _ in range(size["repeats"]):  # ABAB: both see the same machine state
        with_h.append(100 / step_seconds(model, 100, size["steps"]))
        without_h.append(100 / step_seconds(folded, 100, size["steps"]))
    return {"images_per_second_with_h": with_h, "images_per_second_h_folded": without_h,
            "overhead": 1 - statistics.median(with_h) / statistics.median(without_h)}


def last_growth_seconds(name: str) -> float:
    """The last growth event of a two-interpolation model as a training run has it: surgery, optimizer
    rebuild (momentum carried) and accelerate re-prepare."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader, TensorDataset

    accelerator = Accelerator(cpu=True)
    model = growres.interpolate(timm.create_model(name))  # the first interpolation, untimed
    optimizer = timm.optim.create_optimizer_v2(model, "momentum", lr=0.1, momentum=0.9, weight_decay=2e-4)
    loader = DataLoader(TensorDataset(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)), batch_size=2)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    plan = GrowthPlan(cycles=(1,), total=2, unit="step")  # one step, then the last interpolation
    scheduler = GrowthScheduler(model, optimizer, plan, accelerator=accelerator)
    for x, y in loader:
        F.cross_entropy(scheduler.model(x), y).backward()  # populate the momentum the rebuild carries over
        scheduler.optimizer.step()
    record = scheduler.step()
    accelerator.free_memory()
    return record.seconds


def growth_cost(size: dict, epoch_seconds_resnet50i: float) -> dict:
    """The last growth event of growres_wrn122i (10-10-10 -> 20-20-20) against one CIFAR-10 epoch of wrn122,
    and the last one of growres_resnet50i against its measured last-cycle epoch."""
    wrn = [last_growth_seconds("growres_wrn122i") for _ in range(size["repeats"])]
    torch.manual_seed(0)
    wrn122 = timm.create_model("growres_wrn122", step_size=0.25)
    cifar_epoch = 500 * step_seconds(wrn122, 100, 2)  # 50,000 images at batch 100
    resnet = [last_growth_seconds("growres_resnet50i") for _ in range(size["repeats"])]
    return {
        "wrn122i_last_growth_seconds": wrn, "wrn122_cifar10_epoch_seconds_estimate": cifar_epoch,
        "wrn122i_growth_fraction_of_epoch": statistics.median(wrn) / cifar_epoch,
        "resnet50i_last_growth_seconds": resnet,
        "resnet50i_growth_fraction_of_epoch": statistics.median(resnet) / epoch_seconds_resnet50i,
    }


# -- report ---------------------------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.4g} (min {min(values):.4g}, max {max(values):.4g}, n={len(values)})"


def markdown(result: dict) -> str:
    runs, m = result["runs"], result["multilevel"]
    lines = [
        f"# growres benchmark: time saved ({result['size']} size)",
        "",
        f"{result['date']} · {result['machine']} · torch {result['torch']} · timm {result['timm']} · "
        f"dataset {result['dataset']} ({result['train_images'] or 'all'} train / {result['test_images'] or 'all'} "
        f"test images) · {result['epochs']} epochs, cycles start at {result['cycles']}",
        "",
        "| model | blocks | test acc | training s | wall s | images/s per cycle |",
        "|---|---|---|---|---|---|",
    ]
    for key, run in runs.items():
        blocks = " → ".join("-".join(map(str, v)) for v in run["layers_per_cycle"].values())
        speeds = ", ".join(f"{v:.0f}" for v in run["images_per_second_per_cycle"].values())
        lines.append(f"| {key}: `{run['model']}`{' ' + ' '.join(run['extra']) if run['extra'] else ''} | {blocks} | "
                     f"{100 * run['test_acc']:.2f}% | {run['train_seconds']:.1f} | {run['wall_seconds']:.1f} | "
                     f"{speeds} |")
    lines += [
        "",
        f"- Time saved by the multi-level model against the last-cycle model: **{100 * m['measured']:.1f}%** "
        f"measured, {100 * m['predicted_flops']:.1f}% predicted from FLOPs "
        f"(`theoretical_time_saved`; {100 * m['predicted_table_2']:.1f}% for equal cycles, Table 2); "
        f"measured/predicted = **{m['ratio']:.2f}**.",
        f"- Accuracy: multi-level {100 * runs['multilevel']['test_acc']:.2f}% vs last-cycle "
        f"{100 * runs['last']['test_acc']:.2f}% ({100 * m['accuracy_gap']:+.2f} pp).",
        f"- Explicit h: {spread(result['explicit_h']['images_per_second_with_h'])} images/s with h against "
        f"{spread(result['explicit_h']['images_per_second_h_folded'])} with h folded away: "
        f"overhead {100 * result['explicit_h']['overhead']:+.2f}%.",
        f"- Growth event (interpolate + optimizer rebuild + accelerate re-prepare): growres_wrn122i's last, "
        f"{spread(result['growth']['wrn122i_last_growth_seconds'])} s = "
        f"{100 * result['growth']['wrn122i_growth_fraction_of_epoch']:.4f}% of one CIFAR-10 epoch of wrn122 "
        f"(estimated {result['growth']['wrn122_cifar10_epoch_seconds_estimate']:.0f} s); growres_resnet50i's last, "
        f"{spread(result['growth']['resnet50i_last_growth_seconds'])} s = "
        f"{100 * result['growth']['resnet50i_growth_fraction_of_epoch']:.3f}% of its measured last-cycle epoch.",
        f"- Peer: the `identity` interpolation strategy reaches {100 * runs['identity']['test_acc']:.2f}% in "
        f"{runs['identity']['train_seconds']:.1f} s against the paper's `copy` at "
        f"{100 * runs['multilevel']['test_acc']:.2f}% in {runs['multilevel']['train_seconds']:.1f} s.",
        "",
        "Targets: time saved ≥ 40% of the last-cycle model's, accuracy within 0.5 pp of it, and ≥ 95% of the "
        f"FLOPs-predicted saving: {result['targets']}.",
    ]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("first", "last", "multilevel"):
        run = result["runs"][key]
        seconds, accuracy = zip(*run["curve"])
        ax.plot(seconds, [100 * a for a in accuracy], marker="o", label=f"{run['model']} ({key} cycle)"
                if key != "multilevel" else f"{run['model']} (multi-level)")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"accuracy against training time, {result['dataset']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    size = SIZES[args.size]
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        # the multi-level model first and the last-cycle model right after: side by side in time
        runs = {"multilevel": train(ROW["multilevel"], args, size, workdir)}
        runs["last"] = train(ROW["last"], args, size, workdir)
        runs["first"] = train(ROW["first"], args, size, workdir)
        runs["identity"] = train(ROW["multilevel"], args, size, workdir, "--strategy", "identity")

    plan = GrowthPlan(cycles=size["cycles"], total=size["epochs"])
    predicted = theoretical_time_saved(plan, timm.create_model(ROW["multilevel"]))
    measured = 1 - runs["multilevel"]["train_seconds"] / runs["last"]["train_seconds"]
    multilevel = {
        "measured": measured, "predicted_flops": predicted, "ratio": measured / predicted,
        "predicted_table_2": theoretical_time_saved(len(size["cycles"])),
        "accuracy_gap": runs["multilevel"]["test_acc"] - runs["last"]["test_acc"],
    }
    result = {
        "size": args.size, "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.processor() or platform.system()}",
        "torch": torch.__version__, "timm": timm.__version__, "growres": growres.__version__,
        "dataset": args.dataset, "train_images": size["train"], "test_images": size["test"],
        "epochs": size["epochs"], "cycles": list(size["cycles"]), "runs": runs, "multilevel": multilevel,
        "explicit_h": explicit_h_cost(size), "growth": growth_cost(size, runs["multilevel"]["last_epoch_seconds"]),
    }
    result["targets"] = {
        "time_saved_at_least_40pct": measured >= 0.40,
        "accuracy_within_0.5pp": abs(multilevel["accuracy_gap"]) <= 0.005,
        "at_least_95pct_of_predicted": multilevel["ratio"] >= 0.95,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = args.output or RESULTS / f"time_saved_{args.size}"
    Path(f"{stem}.json").write_text(json.dumps(result, indent=2))
    Path(f"{stem}.md").write_text(markdown(result))
    plot(result, Path(f"{stem}.png"))
    print(markdown(result))
    print(f"results: {stem}.json, {stem}.md, {stem}.png")


if __name__ == "__main__":
    main()
