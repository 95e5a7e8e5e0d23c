"""Time saved and accuracy of multi-level training, side by side in one run on one machine.

The paper's headline (Tables 3 and 4): the multi-level model trains >40% faster than the last-cycle model
at on-par accuracy. This script measures growres' own numbers on real data:

1. Training, one Table 3 row: the first-cycle (growres_resnet14), last-cycle (growres_resnet50) and
   multi-level (growres_resnet50i) models, same epochs and LR cycles, with three peers: the `identity`
   interpolation strategy (against the paper's `copy`), the paper's own ablation without LR restarts
   (Appendix D, Figure 10), and real-skip stochastic depth (Huang et al., 2016) on the last-cycle model, the
   other way to cut training time that the paper's related work names. Every method runs once per seed, the
   methods interleaved within each seed. Test accuracy (mean ± std over seeds, and the 95% confidence interval
   of each method's difference to the last-cycle model), training time, time saved, time to reach target
   accuracies and the accuracy each method has at equal training time, all from the runs' metrics.jsonl.
2. Timing-sensitive parts, repeated and interleaved (these machines are noisy): the explicit h against
   the same network with h folded into the weights, and the cost of growth events.

    python benchmarks/time_saved.py            # default size (one seed, ~20 min on a 2-core CPU)
    python benchmarks/time_saved.py --quick    # < 2 min, a smoke test
    python benchmarks/time_saved.py --pilot --pilot-train 2500   # how many epochs --long needs (~10 min)
    python benchmarks/time_saved.py --long     # 3 seeds, 30 epochs of 2,000 images (~70 min)
    python benchmarks/time_saved.py --full     # the paper's schedule (160 epochs)

Results go to benchmarks/results/ as JSON + Markdown (+ a PNG of accuracy against training time).
"""
import argparse
import copy
import datetime
import json
import math
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
    # train images, test images, epochs, cycle starts (None: the paper's 60/110 of 160, scaled), seeds,
    # timing repeats and steps
    "quick": dict(train=500, test=300, epochs=3, cycles=(1, 2), seeds=(0,), repeats=2, steps=3),
    "default": dict(train=10000, test=2000, epochs=6, cycles=(2, 4), seeds=(0,), repeats=3, steps=8),
    # the most a ~70-minute budget on 2 cores holds: 60k training images a run. The pilots
    # (results/time_saved_pilot_*.md) show the last-cycle model still gaining there: 2,000 images, 20 -> 40
    # epochs: +8.2 pp; 5,000 images, 8 -> 16 epochs: +6.8 pp. No affordable size has plateaued.
    "long": dict(train=2000, test=2000, epochs=30, cycles=None, seeds=(0, 1, 2), repeats=3, steps=8),
    "full": dict(train=None, test=None, epochs=160, cycles=None, seeds=(0,), repeats=3, steps=20),
}
# The pilot: the last-cycle model on a subset of --pilot-train images, trained on 20k, 40k and 80k images in all
PILOT = dict(images=(20000, 40000, 80000), test=2000, seed=0)
ROW = dict(first="growres_resnet14", last="growres_resnet50", multilevel="growres_resnet50i")
METHODS = {  # name: (model, extra `growres train` flags, what it is)
    "multilevel": (ROW["multilevel"], (), "multi-level (the paper: copy interpolation, LR restarts)"),
    "last": (ROW["last"], (), "last-cycle model (LR restarts at the same points)"),
    "first": (ROW["first"], (), "first-cycle model (LR restarts at the same points)"),
    "identity": (ROW["multilevel"], ("--strategy", "identity"), "multi-level, `identity` interpolation"),
    "no-restart": (ROW["multilevel"], ("--no-lr-restarts",), "multi-level without LR restarts (Appendix D)"),
    "stochastic-depth": (ROW["last"], ("--stochastic-depth", "0.5"),
                         "last-cycle model, real-skip stochastic depth (p_L = 0.5)"),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="size", const="quick", help="< 2 min smoke test")
    size.add_argument("--long", action="store_const", dest="size", const="long", help="3 seeds, ~70 min")
    size.add_argument("--pilot", action="store_const", dest="size", const="pilot", help="epochs for --long")
    size.add_argument("--full", action="store_const", dest="size", const="full", help="the paper's 160 epochs")
    parser.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (offline) or cifar10, ...")
    parser.add_argument("--seeds", type=lambda text: tuple(int(s) for s in text.split(",")), default=None,
                        help="comma-separated seeds (default by size)")
    parser.add_argument("--pilot-train", type=int, default=5000, help="--pilot: the training subset's size")
    parser.add_argument("--output", type=Path, default=None, help="results file stem (default by size)")
    args = parser.parse_args()
    args.size = args.size or "default"
    return args


# -- 1. training runs -------------------------------------------------------------------------------------


def cycle_starts(size: dict) -> tuple[int, ...]:
    return size["cycles"] or GrowthPlan.paper(total=size["epochs"]).cycles


def train(method: str, seed: int, dataset: str, size: dict, workdir: Path) -> dict:
    """One `growres train` run of a method in its own process; its summary, per-epoch rows and wall time."""
    model, extra, _ = METHODS[method]
    out = workdir / f"{method}-seed{seed}-{size['epochs']}ep"
    command = [sys.executable, "-m", "growres", "train", "--model", model, "--dataset", dataset,
               "--epochs", str(size["epochs"]), "--cycles", ",".join(map(str, cycle_starts(size))),
               "--seed", str(seed), "--output-dir", str(out), *extra]
    if size["train"]:
        command += ["--max-train-samples", str(size["train"]), "--max-eval-samples", str(size["test"])]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, TQDM_DISABLE="1"))
    wall = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"training {method} (seed {seed}) failed:\n{result.stderr[-3000:]}")
    run = RunFolder(out)
    rows, pace = run.metrics(), run.pace_per_cycle()
    summary = run.summary()
    print(f"  {method} seed {seed}: {100 * summary['test_acc']:.2f}% in {summary['train_seconds']:.0f} s",
          flush=True)
    return {
        "method": method, "model": model, "extra": list(extra), "seed": seed, "test_acc": summary["test_acc"],
        "train_seconds": summary["train_seconds"], "wall_seconds": wall, "growth": summary["growth"],
        "images_per_second_per_cycle": {c: v["images_per_second"] for c, v in pace.items()},
        "layers_per_cycle": {c: v["layers"] for c, v in pace.items()},
        "curve": [(r["cumulative_seconds"], r["test_acc"]) for r in rows],
        "last_epoch_seconds": rows[-1]["epoch_seconds"],
    }


# -- statistics over seeds ----------------------------------------------------------------------------------


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": values}


def welch_interval(a: list[float], b: list[float], level: float = 0.95) -> dict | None:
    """The confidence interval of mean(a) - mean(b) (Welch's t: unequal variances); None below 2 seeds each."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.mean(a) - statistics.mean(b)
    if va + vb == 0:
        return {"diff": diff, "low": diff, "high": diff, "df": None}
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + level / 2, df) * math.sqrt(va + vb)
    return {"diff": diff, "low": diff - half, "high": diff + half, "df": df}


def on_par(interval: dict | None, margin: float = 0.01) -> bool:
    """Whether a 95% interval of an accuracy difference lies wholly within ±margin."""
    return interval is not None and -margin <= interval["low"] and interval["high"] <= margin


def verdict(interval: dict | None, margin: float = 0.01) -> str:
    """What a 95% interval of an accuracy difference says, in words (margin: what counts as on par)."""
    if interval is None:
        return "one seed: no interval"
    low, high = 100 * interval["low"], 100 * interval["high"]
    if on_par(interval, margin):
        return f"on par: the whole interval lies within ±{100 * margin:g} pp"
    if interval["high"] < 0:
        return "worse: the whole interval lies below 0"
    if interval["low"] > 0:
        return "better: the whole interval lies above 0"
    return f"undecided: the interval ({low:+.2f}, {high:+.2f}) pp holds 0 but is wider than ±{100 * margin:g} pp"


def accuracy_at(curve: list, seconds: float) -> float | None:
    """Test accuracy of the last evaluation at or before ``seconds`` of training."""
    reached = [acc for t, acc in curve if t <= seconds]
    return reached[-1] if reached else None


def time_to(curve: list, target: float) -> float | None:
    """Training seconds at which test accuracy first reaches ``target``; None if it never does."""
    return next((t for t, acc in curve if acc >= target), None)


def summarize(runs: dict[str, list[dict]], plan: GrowthPlan) -> dict:
    """Per-method statistics over seeds, time saved, intervals, time-to-accuracy and accuracy at equal time."""
    methods = {}
    last_seconds = {r["seed"]: r["train_seconds"] for r in runs["last"]}
    for method, seeds in runs.items():
        methods[method] = {
            "test_acc": mean_std([r["test_acc"] for r in seeds]),
            "train_seconds": mean_std([r["train_seconds"] for r in seeds]),
            "time_saved_vs_last": mean_std([1 - r["train_seconds"] / last_seconds[r["seed"]] for r in seeds]),
            "vs_last": welch_interval([r["test_acc"] for r in seeds], [r["test_acc"] for r in runs["last"]]),
        }
        methods[method]["verdict_vs_last"] = verdict(methods[method]["vs_last"])
    targets = {
        "first-cycle final accuracy": methods["first"]["test_acc"]["mean"],
        "last-cycle final accuracy - 1 pp": methods["last"]["test_acc"]["mean"] - 0.01,
    }
    time_to_accuracy = {
        name: {method: [time_to(r["curve"], target) for r in seeds] for method, seeds in runs.items()}
        for name, target in targets.items()
    }
    budget = methods["multilevel"]["train_seconds"]["mean"]  # the multi-level model's whole run
    at_equal_time = {}
    for method, seeds in runs.items():
        evaluated = [a for a in (accuracy_at(r["curve"], budget) for r in seeds) if a is not None]
        at_equal_time[method] = mean_std(evaluated) if evaluated else None
    predicted = theoretical_time_saved(plan, timm.create_model(ROW["multilevel"]))
    measured = methods["multilevel"]["time_saved_vs_last"]["mean"]
    return {
        "methods": methods, "targets": targets, "time_to_accuracy": time_to_accuracy,
        "equal_time_budget_seconds": budget, "accuracy_at_equal_time": at_equal_time,
        "restart_vs_no_restart": welch_interval([r["test_acc"] for r in runs["multilevel"]],
                                                [r["test_acc"] for r in runs["no-restart"]]),
        "multilevel": {"measured": measured, "predicted_flops": predicted, "ratio": measured / predicted,
                       "predicted_table_2": theoretical_time_saved(len(plan.cycles))},
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


def pm(stat: dict, scale: float = 100, digits: int = 2) -> str:
    """mean ± std (n), or the one value of a single seed."""
    if stat["std"] is None:
        return f"{scale * stat['mean']:.{digits}f}"
    return f"{scale * stat['mean']:.{digits}f} ± {scale * stat['std']:.{digits}f}"


def interval_text(interval: dict | None) -> str:
    if interval is None:
        return "n/a (one seed)"
    return f"{100 * interval['diff']:+.2f} pp [{100 * interval['low']:+.2f}, {100 * interval['high']:+.2f}]"


def seconds_list(values: list[float | None]) -> str:
    reached = [v for v in values if v is not None]
    if not reached:
        return f"never (0/{len(values)})"
    mean = f"{statistics.mean(reached):.0f} s"
    return mean if len(reached) == len(values) else f"{mean} ({len(reached)}/{len(values)} reached)"


def header(result: dict) -> str:
    return (f"{result['date']} · {result['machine']} · torch {result['torch']} · timm {result['timm']} · "
            f"dataset {result['dataset']} ({result['train_images'] or 'all'} train / "
            f"{result['test_images'] or 'all'} test images)")


def markdown(result: dict) -> str:
    runs, stats, m = result["runs"], result["summary"], result["summary"]["multilevel"]
    seeds = result["seeds"]
    lines = [
        f"# growres benchmark: time saved ({result['size']} size)",
        "",
        f"{header(result)} · {result['epochs']} epochs, cycles start at {result['cycles']} · "
        f"seeds {', '.join(map(str, seeds))} (mean ± std over seeds)",
        "",
        "| method | model | blocks | test acc (%) | vs last-cycle, 95% CI | training s | time saved vs last-cycle "
        "(%) | images/s per cycle |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, seeded in runs.items():
        stat, first = stats["methods"][method], seeded[0]
        blocks = " → ".join("-".join(map(str, v)) for v in first["layers_per_cycle"].values())
        speeds = ", ".join(f"{statistics.mean(r['images_per_second_per_cycle'][c] for r in seeded):.0f}"
                           for c in first["images_per_second_per_cycle"])
        vs_last = "—" if method == "last" else interval_text(stat["vs_last"])
        saved = "—" if method == "last" else pm(stat["time_saved_vs_last"], digits=1)
        command = " ".join((f"`{first['model']}`", *first["extra"]))
        lines.append(f"| {METHODS[method][2]} | {command} | {blocks} | {pm(stat['test_acc'])} | {vs_last} | "
                     f"{pm(stat['train_seconds'], scale=1, digits=0)} | {saved} | {speeds} |")
    multilevel_vs_last = stats["methods"]["multilevel"]["vs_last"]
    lines += [
        "",
        f"- **Time saved** by the multi-level model against the last-cycle model: "
        f"**{pm(stats['methods']['multilevel']['time_saved_vs_last'], digits=1)}%** measured, "
        f"{100 * m['predicted_flops']:.1f}% predicted from FLOPs (`theoretical_time_saved`; "
        f"{100 * m['predicted_table_2']:.1f}% for equal cycles, Table 2); measured/predicted = **{m['ratio']:.2f}**.",
        f"- **Accuracy, multi-level − last-cycle**: {interval_text(multilevel_vs_last)} "
        f"(95% CI, Welch's t): **{stats['methods']['multilevel']['verdict_vs_last']}**.",
        f"- Paper's ablation, multi-level with − without LR restarts: {interval_text(stats['restart_vs_no_restart'])}"
        f" ({verdict(stats['restart_vs_no_restart'])}).",
        "",
        "Time to accuracy (training seconds until test accuracy first reaches the target, mean over the seeds that "
        "reach it) and accuracy at equal training time (the last evaluation within the multi-level model's mean "
        f"training time, {stats['equal_time_budget_seconds']:.0f} s):",
        "",
        "| method | " + " | ".join(f"time to {name} ({100 * t:.2f}%)" for name, t in stats["targets"].items())
        + " | test acc (%) at equal time |",
        "|---|" + "---|" * (len(stats["targets"]) + 1),
    ]
    for method in runs:
        times = " | ".join(seconds_list(stats["time_to_accuracy"][name][method]) for name in stats["targets"])
        at_time = stats["accuracy_at_equal_time"][method]
        lines.append(f"| {method} | {times} | {pm(at_time) if at_time else 'no evaluation yet'} |")
    lines += [
        "",
        f"- Explicit h: {spread(result['explicit_h']['images_per_second_with_h'])} images/s with h against "
        f"{spread(result['explicit_h']['images_per_second_h_folded'])} with h folded away: "
        f"overhead {100 * result['explicit_h']['overhead']:+.2f}%.",
        f"- Growth event (interpolate + optimizer rebuild + accelerate re-prepare): growres_wrn122i's last, "
        f"{spread(result['growth']['wrn122i_last_growth_seconds'])} s = "
        f"{100 * result['growth']['wrn122i_growth_fraction_of_epoch']:.4f}% of one CIFAR-10 epoch of wrn122 "
        f"(estimated {result['growth']['wrn122_cifar10_epoch_seconds_estimate']:.0f} s); growres_resnet50i's last, "
        f"{spread(result['growth']['resnet50i_last_growth_seconds'])} s = "
        f"{100 * result['growth']['resnet50i_growth_fraction_of_epoch']:.3f}% of its measured last-cycle epoch.",
        "",
        "Targets: time saved ≥ 40% of the last-cycle model's, accuracy on par with it, and ≥ 95% of the "
        f"FLOPs-predicted saving: {result['targets']}.",
    ]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Test accuracy against training time, per epoch: the mean over seeds, and a band from their min to max."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, seeded in result["runs"].items():
        epochs = list(zip(*(r["curve"] for r in seeded)))  # per epoch: (seconds, accuracy) of every seed
        seconds = [statistics.mean(t for t, _ in epoch) for epoch in epochs]
        accuracy = [[100 * a for _, a in epoch] for epoch in epochs]
        line, = ax.plot(seconds, [statistics.mean(a) for a in accuracy], marker=".", label=f"{method}")
        if len(seeded) > 1:
            ax.fill_between(seconds, [min(a) for a in accuracy], [max(a) for a in accuracy], color=line.get_color(),
                            alpha=0.2, linewidth=0)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("test accuracy (%)")
    seeds = len(result["seeds"])
    ax.set_title(f"{result['dataset']}, {seeds} seed{'s' if seeds > 1 else ''}" +
                 (": mean, band from min to max" if seeds > 1 else ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_pilot(args) -> None:
    """How long the long size must train: the last-cycle model's final accuracy as its run doubles."""
    size = dict(train=args.pilot_train, test=PILOT["test"], cycles=None)
    all_epochs = [images // args.pilot_train for images in PILOT["images"]]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for epochs in all_epochs:
            runs.append(train("last", PILOT["seed"], args.dataset, dict(size, epochs=epochs), Path(tmp)))
    result = {"size": "pilot", "date": datetime.date.today().isoformat(), "machine": machine(),
              "torch": torch.__version__, "timm": timm.__version__, "dataset": args.dataset,
              "train_images": args.pilot_train, "test_images": PILOT["test"], "epochs": all_epochs, "runs": runs}
    lines = [
        "# growres benchmark: pilot for the long size",
        "",
        f"{header(result)} · `{ROW['last']}` (the last-cycle model), seed {PILOT['seed']}, LR restarts at the "
        "paper's 60/110 of 160 scaled",
        "",
        "| epochs | cycles start at | test acc (%) | gain over half the epochs (pp) | training s |",
        "|---|---|---|---|---|",
    ]
    for i, run in enumerate(runs):
        gain = f"{100 * (run['test_acc'] - runs[i - 1]['test_acc']):+.2f}" if i else "—"
        epochs = all_epochs[i]
        lines.append(f"| {epochs} | {list(GrowthPlan.paper(total=epochs).cycles)} | {100 * run['test_acc']:.2f} | "
                     f"{gain} | {run['train_seconds']:.0f} |")
    text = "\n".join(lines) + "\n"
    stem = args.output or RESULTS / f"time_saved_pilot_{args.pilot_train}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.json").write_text(json.dumps(result, indent=2))
    Path(f"{stem}.md").write_text(text)
    print(text)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.processor() or platform.system()}"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    if args.size == "pilot":
        return run_pilot(args)
    size = SIZES[args.size]
    seeds = args.seeds or size["seeds"]
    runs: dict[str, list[dict]] = {method: [] for method in METHODS}
    with tempfile.TemporaryDirectory() as tmp:
        # per seed, every method in turn (the multi-level model first, the last-cycle model right after), so
        # a drift of the machine's speed falls on all methods alike
        for seed in seeds:
            for method in METHODS:
                runs[method].append(train(method, seed, args.dataset, size, Path(tmp)))

    plan = GrowthPlan(cycles=cycle_starts(size), total=size["epochs"])
    summary = summarize(runs, plan)
    result = {
        "size": args.size, "date": datetime.date.today().isoformat(), "machine": machine(),
        "torch": torch.__version__, "timm": timm.__version__, "growres": growres.__version__,
        "dataset": args.dataset, "train_images": size["train"], "test_images": size["test"],
        "epochs": size["epochs"], "cycles": list(plan.cycles), "seeds": list(seeds), "runs": runs,
        "summary": summary, "explicit_h": explicit_h_cost(size),
        "growth": growth_cost(size, statistics.mean(r["last_epoch_seconds"] for r in runs["multilevel"])),
    }
    result["targets"] = {
        "time_saved_at_least_40pct": summary["multilevel"]["measured"] >= 0.40,
        "accuracy_on_par": on_par(summary["methods"]["multilevel"]["vs_last"]),
        "at_least_95pct_of_predicted": summary["multilevel"]["ratio"] >= 0.95,
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
