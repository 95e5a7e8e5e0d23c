"""Speed: a grown model steps as fast as the same model built directly, and `growres train` as fast as a plain loop.

All on Fashion-MNIST (28x28, batch 100), each measurement repeated and interleaved (these machines drift by 2x
within an hour), reported as min/median/max:

1. Grown against built, per cycle. `growres train growres_resnet50i` grows 2-2-2 -> 4-4-4 -> 8-8-8 at the cycle
   starts; `growres train` of the same architectures built directly (growres_resnet50 with `layers`) gives
   each cycle's reference. The same pair again in a bare loop under `GrowthScheduler` without accelerate
   (`plain_loop.py --cycles`). Speeds are each cycle's last epoch (after the growth epoch's warm-up).
2. Loop overhead, per depth: `growres train` against `plain_loop.py`, the same model, data and augmentation.
3. Growth events: each event's seconds (surgery, optimizer rebuild, accelerate re-prepare) against an epoch of
   the full Fashion-MNIST training set (60,000 images) at the grown model's measured last-cycle speed.
4. CPU options, per depth, in one process: one training step with channels-last, bf16 autocast, both,
   torch.compile (compiled once; its compile time reported) and one thread instead of all cores.

    python benchmarks/speed.py            # default: ~20 min on a 2-core CPU
    python benchmarks/speed.py --quick    # smoke test, ~4 min

Results go to benchmarks/results/speed_{size}.json and .md.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine
import timm
import timm.optim
import torch
import torch.nn.functional as F

import growres
from growres.data import load_image_data
from growres.runs import RunFolder

RESULTS = Path(__file__).parent / "results"
FULL_EPOCH_IMAGES = 60_000  # Fashion-MNIST's training set
PLAIN_LOOP = Path(__file__).parent / "plain_loop.py"
DEPTHS = ((2, 2, 2), (4, 4, 4), (8, 8, 8))  # the cycles of growres_resnet50i, each built directly as growres_resnet50
GROWN, BUILT = "growres_resnet50i", "growres_resnet50"
SIZES = {
    # train images, epochs per cycle, repeats; option steps measured (after warm-up steps)
    "quick": dict(images=600, epochs_per_cycle=2, repeats=1, steps=3, warmup=2),
    "default": dict(images=2000, epochs_per_cycle=2, repeats=3, steps=10, warmup=3),
}
OPTIONS = ("fp32", "channels_last", "bf16", "channels_last+bf16", "compile", "channels_last+bf16+compile",
           "1 thread")


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def run_json(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, TQDM_DISABLE="1"))
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


# -- 1-3: whole training runs, each in its own process ------------------------------------------------------------


def model_args(layers: tuple[int, ...] | None) -> list[str]:
    """The model to run: grown (``layers`` None) or built directly at ``layers``."""
    return ["--model", GROWN] if layers is None else ["--model", BUILT, "--model-kwargs", f"layers={layers}"]


def growres_train(layers: tuple[int, ...] | None, epochs: int, cycles: tuple[int, ...] | None, size: dict,
                  workdir: Path) -> dict:
    """images/s of each epoch and the growth events of one `growres train` run."""
    out = workdir / f"run-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "growres", "train", *model_args(layers), "--epochs", str(epochs),
               "--max-train-samples", str(size["images"]), "--max-eval-samples", "500", "--output-dir", str(out),
               "--no-channels-last"]  # the plain loop's layout: the comparison is of loops alone
    command += ["--cycles", ",".join(map(str, cycles))] if cycles else ["--no-grow"]
    run_json(command)
    rows = RunFolder(out).metrics()
    return {"layers": [tuple(r["layers"]) for r in rows], "images_per_second": [r["images_per_second"] for r in rows],
            "growth_seconds": [g["seconds"] for g in RunFolder(out).growth_records()]}


def plain_loop(layers: tuple[int, ...] | None, epochs: int, cycles: tuple[int, ...] | None, size: dict) -> dict:
    command = [sys.executable, str(PLAIN_LOOP), *model_args(layers), "--epochs", str(epochs),
               "--max-train-samples", str(size["images"])]
    if cycles:
        command += ["--cycles", ",".join(map(str, cycles))]
    out = json.loads(run_json(command).strip().splitlines()[-1])
    return {"layers": [tuple(layers) for layers in out["layers"]], "images_per_second": out["images_per_second"]}


def last_epoch_per_depth(run: dict) -> dict[tuple[int, ...], float]:
    """Each depth's speed in its last epoch (a cycle's first epoch holds the growth and the warm-up after it)."""
    return {layers: speed for layers, speed in zip(run["layers"], run["images_per_second"])}


def training_runs(size: dict, workdir: Path) -> dict:
    per_cycle = size["epochs_per_cycle"]
    cycles = (per_cycle, 2 * per_cycle)
    samples = {key: {layers: [] for layers in DEPTHS} for key in ("grown", "built", "plain_grown", "plain_built")}
    growth_fraction = []
    for repeat in range(size["repeats"]):
        # grown and built alternate, and which goes first alternates with the repeat
        order = ["growres", "plain"] if repeat % 2 == 0 else ["plain", "growres"]
        for loop in order:
            if loop == "growres":
                grown = growres_train(None, 3 * per_cycle, cycles, size, workdir)
                for layers, speed in last_epoch_per_depth(grown).items():
                    samples["grown"][layers].append(speed)
                full_epoch = FULL_EPOCH_IMAGES / grown["images_per_second"][-1]
                growth_fraction += [seconds / full_epoch for seconds in grown["growth_seconds"]]
                for layers in DEPTHS:
                    built = growres_train(layers, per_cycle, None, size, workdir)
                    samples["built"][layers].append(built["images_per_second"][-1])
            else:
                grown = plain_loop(None, 3 * per_cycle, cycles, size)
                for layers, speed in last_epoch_per_depth(grown).items():
                    samples["plain_grown"][layers].append(speed)
                for layers in DEPTHS:
                    built = plain_loop(layers, per_cycle, None, size)
                    samples["plain_built"][layers].append(built["images_per_second"][-1])
            print(f"repeat {repeat + 1}, {loop}: done", flush=True)
    rows = []
    for layers in DEPTHS:
        s = {key: samples[key][layers] for key in samples}
        rows.append({
            "layers": list(layers), **{key: spread(v) for key, v in s.items()},
            "grown_over_built": statistics.median(s["grown"]) / statistics.median(s["built"]),
            "plain_grown_over_plain_built": statistics.median(s["plain_grown"]) / statistics.median(s["plain_built"]),
            "growres_train_over_plain_loop": statistics.median(s["built"]) / statistics.median(s["plain_built"]),
        })
    return {"per_depth": rows, "growth_event_fraction_of_full_epoch": spread(growth_fraction)}


# -- 4: CPU options, in this process --------------------------------------------------------------------------------


def option_model(layers: tuple[int, ...], option: str, in_chans: int) -> torch.nn.Module:
    """The model set up for ``option`` (torch.compile compiles in its first steps, timed by step_seconds)."""
    torch.manual_seed(0)
    model = timm.create_model(BUILT, layers=layers, num_classes=10, in_chans=in_chans).train()
    if "channels_last" in option:
        model = model.to(memory_format=torch.channels_last)
    if "compile" in option:
        model = torch.compile(model)
    return model


def step_seconds(model, optimizer, images, labels, data, option: str, steps: int, warmup: int) -> tuple[float, float]:
    """(median seconds of a training step, seconds of the warm-up steps)."""
    threads = torch.get_num_threads()
    if option == "1 thread":
        torch.set_num_threads(1)
    times = []
    started = time.perf_counter()
    for i in range(warmup + steps):
        begin = time.perf_counter()
        x = data.augment(images)
        if "channels_last" in option:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in option):
            loss = F.cross_entropy(model(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i == warmup - 1:
            warmup_seconds = time.perf_counter() - started
        if i >= warmup:
            times.append(time.perf_counter() - begin)
    torch.set_num_threads(threads)
    return statistics.median(times), warmup_seconds


def cpu_options(size: dict, options: tuple[str, ...] = OPTIONS) -> dict:
    data = load_image_data("fashion-mnist", max_train_samples=100, max_eval_samples=1)
    images, labels = data.train_images, data.train_labels
    setups = {}
    for layers in DEPTHS:
        for option in options:
            model = option_model(layers, option, images.shape[1])
            optimizer = timm.optim.create_optimizer_v2(model, "momentum", lr=0.01, momentum=0.9, weight_decay=2e-4)
            setups[layers, option] = (model, optimizer)
    samples = {key: [] for key in setups}
    warmups = {key: [] for key in setups}
    for repeat in range(size["repeats"]):
        for layers in DEPTHS:
            for option in options if repeat % 2 == 0 else options[::-1]:
                model, optimizer = setups[layers, option]
                seconds, warm = step_seconds(model, optimizer, images, labels, data, option, size["steps"],
                                             size["warmup"])
                samples[layers, option].append(len(labels) / seconds)
                warmups[layers, option].append(warm)
        print(f"options, repeat {repeat + 1}: done", flush=True)
    rows = []
    for layers in DEPTHS:
        base = statistics.median(samples[layers, "fp32"])
        for option in options:
            speeds = samples[layers, option]
            rows.append({"layers": list(layers), "option": option, "images_per_second": spread(speeds),
                         "speedup": statistics.median(speeds) / base,
                         "first_warmup_seconds": warmups[layers, option][0]})
    return {"rows": rows}


# -- report -------------------------------------------------------------------------------------------------------


def machine_line(described: dict | str) -> str:
    return described if isinstance(described, str) else machine.line(described)  # older results: a string


def fmt(s: dict) -> str:
    return f"{s['median']:.0f} ({s['min']:.0f}–{s['max']:.0f})"


def markdown(result: dict) -> str:
    runs, options = result["training"], result["options"]
    lines = [
        f"# growres benchmark: speed ({result['size']} size)",
        "",
        f"{result['date']} · {machine_line(result['machine'])} · torch {result['torch']} · timm {result['timm']} · "
        f"Fashion-MNIST {result['images']} training images, batch 100 · {result['repeats']} interleaved repeats · "
        "images/s as median (min–max) of each depth's last epoch",
        "",
        "## Grown against built directly, and `growres train` against a plain loop",
        "",
        "| blocks | `growres train` grown | `growres train` built | grown / built | plain loop grown "
        "| plain loop built | grown / built | `growres train` / plain loop (built) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in runs["per_depth"]:
        lines.append(
            f"| {'-'.join(map(str, row['layers']))} | {fmt(row['grown'])} | {fmt(row['built'])} | "
            f"**{row['grown_over_built']:.3f}** | {fmt(row['plain_grown'])} | {fmt(row['plain_built'])} | "
            f"{row['plain_grown_over_plain_built']:.3f} | **{row['growres_train_over_plain_loop']:.3f}** |")
    fraction = runs["growth_event_fraction_of_full_epoch"]
    lines += [
        "",
        f"Growth events (surgery, optimizer rebuild, accelerate re-prepare) took {100 * fraction['median']:.2f}% "
        f"(min {100 * fraction['min']:.2f}%, max {100 * fraction['max']:.2f}%, n={fraction['n']}) of a last-cycle "
        "epoch over the full training set (60,000 images, at the grown model's measured speed).",
    ]
    lines += options_table(options) + ["", f"Targets: {result['targets']}."]
    return "\n".join(lines) + "\n"


def options_table(options: dict) -> list[str]:
    lines = [
        "",
        "## CPU options per depth (one training step, in one process)",
        "",
        "| blocks | option | images/s | vs fp32 | first steps (s) |",
        "|---|---|---|---|---|",
    ]
    for row in options["rows"]:
        lines.append(f"| {'-'.join(map(str, row['layers']))} | {row['option']} | {fmt(row['images_per_second'])} | "
                     f"{row['speedup']:.2f}x | {row['first_warmup_seconds']:.1f} |")
    return lines


def options_markdown(result: dict) -> str:
    head = [f"# growres benchmark: CPU options ({result['size']} size)", "",
            f"{result['date']} · {machine.line(result['machine'])} · torch {result['torch']} · Fashion-MNIST, "
            f"batch 100 · {result['repeats']} interleaved repeats · images/s as median (min–max)"]
    return "\n".join(head + options_table(result["options"])) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_const", dest="size", const="quick", default="default")
    parts = parser.add_mutually_exclusive_group()
    parts.add_argument("--skip-options", action="store_true", help="only the training runs (1-3)")
    parts.add_argument("--options-only", action="store_true",
                       help="only the CPU options (4), e.g. under ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2")
    parser.add_argument("--options", type=lambda text: tuple(text.split(",")), default=OPTIONS,
                        help="with --options-only: which, comma-separated, fp32 among them (default: all)")
    parser.add_argument("--output", type=Path, default=None, help="results file stem (default by size)")
    args = parser.parse_args()
    size = SIZES[args.size]
    growres.keep_freed_cpu_memory()
    stem = args.output or RESULTS / f"speed_{args.size}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.options_only:
        result = {"size": args.size, "date": datetime.date.today().isoformat(), "machine": machine.describe(),
                  "torch": torch.__version__, "repeats": size["repeats"], "options": cpu_options(size, args.options)}
        Path(f"{stem}.json").write_text(json.dumps(result, indent=2))
        Path(f"{stem}.md").write_text(options_markdown(result))
        return print(options_markdown(result))
    with tempfile.TemporaryDirectory() as tmp:
        training = training_runs(size, Path(tmp))
    options = {"rows": []} if args.skip_options else cpu_options(size)
    rows = training["per_depth"]
    result = {
        "size": args.size, "date": datetime.date.today().isoformat(),
        "machine": machine.describe(),
        "torch": torch.__version__, "timm": timm.__version__, "growres": growres.__version__,
        "images": size["images"], "repeats": size["repeats"], "training": training, "options": options,
        "targets": {
            "grown_over_built_at_least_0.97": all(r["grown_over_built"] >= 0.97 for r in rows),
            "growres_train_over_plain_loop_at_least_0.95":
                all(r["growres_train_over_plain_loop"] >= 0.95 for r in rows),
            "growth_event_under_1pct_of_epoch": training["growth_event_fraction_of_full_epoch"]["max"] < 0.01,
        },
    }
    Path(f"{stem}.json").write_text(json.dumps(result, indent=2))
    Path(f"{stem}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
