"""Does growing cost accuracy? The paper's question at a plateaued budget, with paired seeds, on the full test set.

The paper's headline (Tables 3 and 4) is >40% less training time *at on-par accuracy*. `time_saved.py --long`
showed the time; its accuracy interval was undecided, at a budget that had not plateaued, on 2,000 test images
and 3 unpaired seeds. This script answers it decisively or says how far it got:

1. The pilot: the last-cycle model (growres_resnet50) at the chosen size and at twice its epochs, on >= 2 seeds.
   The size is a plateau when doubling the epochs gains < 1 pp of mean test accuracy; where it is not, the pilot
   doubles once more, and the comparison moves to the epochs where the plateau is found.
2. The comparison: per seed, the multi-level model (growres_resnet50i), the last-cycle and first-cycle models
   (growres_resnet50, growres_resnet14; LR restarts at the same points) and the paper's no-restart ablation,
   at the plateau (at the chosen size until one is found; a comparison made before stays in the summary).
   Within a seed every method sees the same data order and augmentation (`growres train` draws both from the
   seed alone), so the interval of multi-level − last-cycle is the paired one (Student's t over the per-seed
   differences).
3. Every run evaluates the full 10,000-image test set at each cycle's end, at the end and every few epochs
   between (--eval-every). Each finished run is written to the results JSON at once, with the machine it ran on
   (CPU model and flags, kernels, load) and its own speed; a rerun skips what is done, so the whole may be
   spread over several invocations (--max-minutes stops starting new runs after that long; --workers runs several
   at once).

    python benchmarks/plateau.py --plan                # the queue and what is done
    python benchmarks/plateau.py --max-minutes 120     # run what is missing, for up to ~2 hours
    python benchmarks/plateau.py --workers 2           # two one-thread runs at once on 2 cores (no time saved)
    python benchmarks/plateau.py --report              # re-summarise the JSON, Markdown and figure only
    python benchmarks/plateau.py --size smoke --output /tmp/plateau   # a short end-to-end check of the script

Results: benchmarks/results/time_saved_plateau.{json,md,png}.
"""
import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import machine
import timm
import torch

import growres
from growres import GrowthPlan
from growres.runs import RunFolder, write_text_atomic

RESULTS = Path(__file__).parent / "results"
METHODS = {  # name: (model, extra `growres train` flags, what it is)
    "multilevel": ("growres_resnet50i", (), "multi-level (the paper: copy interpolation, LR restarts)"),
    "last": ("growres_resnet50", (), "last-cycle model (LR restarts at the same points)"),
    "first": ("growres_resnet14", (), "first-cycle model (LR restarts at the same points)"),
    "no-restart": ("growres_resnet50i", ("--no-lr-restarts",), "multi-level without LR restarts (Appendix D)"),
}
MARGIN = 0.01  # on par: the whole 95% interval of the accuracy difference within ±1 pp
PLATEAU_GAIN = 0.01  # a plateau: doubling the epochs gains less than 1 pp
PILOT_RUNGS = 3  # the size's epochs, twice and four times them: a size off the plateau shows where it lies


@dataclass(frozen=True)
class Size:
    """The budget of one comparison; every field is part of each run's key, so results of other sizes never mix."""
    # 2,000 optimizer steps: the earlier pilots (results/time_saved_pilot_*.md) still gained 7-8 pp from 400 to 800
    # steps; 10,000 images (not more) because a training set the model fits plateaus in fewer steps, and the whole
    # queue at this size is about 20 last-cycle runs, ~3 hours at 2 cores' bf16 speed
    train_images: int | None = 10000
    epochs: int = 20
    test_images: int | None = None  # None: the whole test set (10,000 for Fashion-MNIST)
    eval_every: int = 4  # the full test set costs ~8% of a training epoch: a sparser curve between cycle ends
    # "auto": the fastest on the CPU that starts a seed (`fastest_precision`); every method of a seed runs at the
    # precision of its first run, so its pairs stay alike even when later runs come from another machine, except
    # on a CPU without bf16 instructions, which continues a bf16 seed in fp32 (`queue`): such runs count in their
    # method's mean, but pair only with runs of their own precision
    mixed_precision: str = "auto"
    compile: bool = False  # on a 2-core CPU its 20-30 s of compiling per depth and run outweigh its gain
    methods: tuple[str, ...] = tuple(METHODS)
    pilot: bool = True  # the doubled-epoch runs that show the size is a plateau, and bf16's fp32 check at the size
    dataset: str = "fashion-mnist"
    # the time saved where no pair of runs had the machine to itself (runs side by side never do): that of a
    # committed result in results/ whose runs were quiet; None: only these runs' own
    time_saved_from: str | None = None

    @property
    def cycles(self) -> tuple[int, ...]:
        return GrowthPlan.paper(total=self.epochs).cycles  # the paper's 60/110 of 160, scaled

    @property
    def precision(self) -> str:
        """The precision a new seed starts with on this machine."""
        return fastest_precision() if self.mixed_precision == "auto" else self.mixed_precision


def fastest_precision() -> str:
    """bf16 where the hardware has bf16 instructions (on a CPU with AVX512-BF16 1.7-1.9x fp32's speed), else fp32:
    under AVX2 kernels bf16 runs at 0.05-0.26x of fp32 (results/speed_options_avx2.md; one training step of
    growres_resnet50 at 0.08x on an AVX2-only AMD EPYC), which would put the queue out of any budget."""
    _, flags = machine.cpu_model_and_flags()
    return "bf16" if torch.cuda.is_available() or {"avx512_bf16", "amx_bf16"} & set(flags) else "no"


SMOKE = Size(train_images=300, epochs=3, test_images=200, eval_every=2)
# benchmarks/gpu_check.sh: the Table 3 row on the full training set, with bf16, channels-last and torch.compile, in
# ~8 minutes on one H200 (16 of the paper's 160 epochs; compiling is about half of it); --cpu-smoke: its code path
GPU = Size(train_images=None, epochs=16, eval_every=4, mixed_precision="bf16", compile=True,
           methods=("first", "last", "multilevel"), pilot=False)
GPU_SMOKE = Size(train_images=200, epochs=3, test_images=100, eval_every=2, mixed_precision="bf16", compile=True,
                 methods=("first", "last", "multilevel"), pilot=False)
SIZES = {"plateau": Size(time_saved_from="time_saved_long.json"), "smoke": SMOKE, "gpu": GPU, "gpu-smoke": GPU_SMOKE}
PILOT_SEEDS = (0, 1)  # the pilot's doubled runs; their runs at the size count for the rest


@dataclass(frozen=True)
class Job:
    method: str
    seed: int
    epochs: int
    mixed_precision: str

    @property
    def key(self) -> str:
        return f"{self.method}/{self.epochs}ep/{self.mixed_precision}/seed{self.seed}"


def seed_precisions(runs: dict, epochs: int) -> dict[int, str]:
    """Each started seed's precision: that of its first run at ``epochs`` (bf16's fp32 check, a later run in the
    other precision, does not change it)."""
    started = sorted((r["date"], r["seed"], r["mixed_precision"]) for r in runs.values() if r["epochs"] == epochs)
    precisions = {}
    for _, seed, precision in started:
        precisions.setdefault(seed, precision)
    return precisions


def queue(size: Size, seeds: tuple[int, ...], runs: dict | None = None) -> list[Job]:
    """Every run the result needs, in the order to run them: the pilot first (if the size has not plateaued,
    nothing else is worth running at it; its runs at the size are the comparison's last-cycle runs too), then the
    verdict's pair (multilevel, last-cycle) of every seed, side by side (a drift of the machine's speed falls on
    both alike; if the budget ends first, the verdict is what it should have bought), then the other methods per
    seed, then bf16's fp32 check. A seed runs at the precision it started with, a new one at the machine's; what
    is left of a bf16 seed runs in fp32 where bf16 would take 4-20x as long (`fastest_precision`)."""
    new_seed = size.precision  # once: it reads /proc/cpuinfo
    runs = runs or {}

    def precision(epochs: int) -> dict[int, str]:
        return {seed: new_seed for seed in (*PILOT_SEEDS, *seeds)} | seed_precisions(runs, epochs)

    start, compared = precision(size.epochs), comparison_epochs(size, runs)
    at = precision(compared)
    pilot = [Job("last", seed, epochs, start[seed]) for seed in PILOT_SEEDS for epochs in pilot_epochs(size, runs)] \
        if size.pilot else []
    methods = sorted(size.methods, key=lambda method: method not in ("multilevel", "last"))  # stable: the pair first
    jobs = pilot + [Job(method, seed, compared, at[seed]) for method_group in (methods[:2], methods[2:])
                    for seed in seeds for method in method_group]
    jobs = list(dict.fromkeys(jobs))  # the pilot's runs at the size once
    if size.pilot:  # bf16's fp32 check: every seed's last-cycle model at the size in the other precision too
        jobs += [Job("last", seed, size.epochs, "no" if start[seed] == "bf16" else "bf16")
                 for seed in dict.fromkeys((*PILOT_SEEDS, *seeds))]
    if new_seed != "bf16":
        jobs = [job if job.key in runs else replace(job, mixed_precision="no") for job in jobs]
    return list(dict.fromkeys(jobs))  # a run turned to fp32 may be one already queued (a bf16 seed's fp32 check)


def pilot_epochs(size: Size, runs: dict) -> list[int]:
    """The pilot's rungs: the size's epochs and twice them, then, while the last doubling has been measured on every
    pilot seed and still gained >= 1 pp, twice again (up to PILOT_RUNGS)."""
    epochs = [size.epochs, 2 * size.epochs]
    while len(epochs) < PILOT_RUNGS and (gain := pilot_gain(runs, size, epochs[-1])) is not None \
            and gain >= 100 * PLATEAU_GAIN:
        epochs.append(2 * epochs[-1])
    return epochs


def pilot_runs(runs: dict, size: Size, epochs: int) -> list[dict]:
    """The pilot seeds' last-cycle runs at ``epochs`` that are done, each at its seed's precision at the size."""
    precision = seed_precisions(runs, size.epochs)
    keys = [as_run(runs, Job("last", seed, epochs, precision.get(seed))).key for seed in PILOT_SEEDS]
    return [runs[k] for k in keys if k in runs]


def pilot_accuracy(runs: dict, size: Size, epochs: int) -> float | None:
    """The last-cycle model's mean test accuracy (%) at ``epochs`` over the pilot seeds; None until every pilot seed
    has it."""
    done = pilot_runs(runs, size, epochs)
    return 100 * statistics.mean(r["test_acc"] for r in done) if len(done) == len(PILOT_SEEDS) else None


def as_run(runs: dict, job: Job) -> Job:
    """``job``, or its fp32 twin where that ran instead (a bf16 seed continued on a CPU without bf16, `queue`)."""
    fp32 = replace(job, mixed_precision="no")
    return fp32 if job.key not in runs and fp32.key in runs else job


def pilot_gain(runs: dict, size: Size, epochs: int) -> float | None:
    """What doubling to ``epochs`` gained (pp), or None until both rungs are measured."""
    shorter, longer = pilot_accuracy(runs, size, epochs // 2), pilot_accuracy(runs, size, epochs)
    return None if shorter is None or longer is None else longer - shorter


def plateau_epochs(size: Size, runs: dict) -> int | None:
    """The pilot's first rung whose doubling gains < 1 pp (the size's own epochs where the size is a plateau)."""
    rungs = pilot_epochs(size, runs)
    return next((epochs for epochs in rungs[:-1]
                 if (gain := pilot_gain(runs, size, 2 * epochs)) is not None and gain < 100 * PLATEAU_GAIN), None)


def comparison_epochs(size: Size, runs: dict) -> int:
    """Where the methods are compared: at the plateau once the pilot has found it, else at the size's epochs."""
    return (plateau_epochs(size, runs) if size.pilot else None) or size.epochs


# -- running ------------------------------------------------------------------------------------------------


def train(job: Job, size: Size, workdir: Path, threads: int | None = None) -> dict:
    """One `growres train` run in its own process, on ``threads`` threads (default: this process's): its result
    record, with the machine and its own speed."""
    threads = threads or torch.get_num_threads()
    model, extra, _ = METHODS[job.method]
    out = workdir / job.key.replace("/", "-")
    plan = GrowthPlan.paper(total=job.epochs)
    command = [sys.executable, "-m", "growres", "train", "--model", model, "--dataset", size.dataset,
               "--epochs", str(job.epochs), "--cycles", ",".join(map(str, plan.cycles)), "--seed", str(job.seed),
               "--eval-every", str(size.eval_every), "--mixed-precision", job.mixed_precision,
               "--output-dir", str(out), *extra]
    if size.compile:
        command.append("--compile")
    if size.train_images:
        command += ["--max-train-samples", str(size.train_images)]
    if size.test_images:
        command += ["--max-eval-samples", str(size.test_images)]
    load_before, started = os.getloadavg()[0], time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True,
                            env=dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS=str(threads)))
    if result.returncode:
        sys.exit(f"training {job.key} failed:\n{result.stderr[-3000:]}")
    run = RunFolder(out)
    rows, summary = run.metrics(), run.summary()
    return {
        **asdict(job), "model": model, "extra": list(extra), "command": command[2:], "test_acc": summary["test_acc"],
        "test_loss": summary["test_loss"], "train_seconds": summary["train_seconds"],
        "wall_seconds": time.perf_counter() - started,
        "cycle_test_acc": [c["test_acc"] for c in summary["cycles"]],
        "images_per_second_per_cycle": [c["images_per_second"] for c in run.pace_per_cycle().values()],
        "curve": [(r["epoch"], r["cumulative_seconds"], r["test_acc"]) for r in rows if r["test_acc"] is not None],
        "machine": machine.describe() | {"threads": threads}, "load_average": [load_before, os.getloadavg()[0]],
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


RUN_FIELDS = ("train_images", "epochs", "test_images", "compile", "dataset")  # a run's precision is in its key


def load(path: Path, size: Size) -> dict:
    """The results so far; a file of runs of another size is refused (they are not comparable)."""
    if not path.exists():
        return {"size": asdict(size), "runs": {}}
    result = json.loads(path.read_text())
    defaults = asdict(Size())  # fields added since the file was written have their defaults in it
    if any(result["size"].get(key, defaults[key]) != getattr(size, key) for key in RUN_FIELDS):
        sys.exit(f"{path} holds runs of another size ({result['size']}); give --output for a new file.")
    result["size"] = asdict(size)
    return result


# -- statistics ---------------------------------------------------------------------------------------------


def t_interval(values: list[float], level: float = 0.95) -> list[float] | None:
    """The Student's t confidence interval of the mean of ``values`` (paired differences); None below 2."""
    if len(values) < 2:
        return None
    from scipy import stats

    mean, sem = statistics.mean(values), statistics.stdev(values) / math.sqrt(len(values))
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * sem
    return [mean - half, mean + half]


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.mean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None}


def verdict(interval: list[float] | None, margin: float = MARGIN, higher_is_better: bool = True) -> str:
    """What the interval of a difference (a method minus its reference) says: on par (all of it within ±margin),
    better or worse (it excludes 0; for a loss, below 0 is better), else undecided."""
    if interval is None:
        return "undecided"
    low, high = interval
    if -margin <= low and high <= margin:
        return "on par"
    if high < 0 or low > 0:
        return "better" if (low > 0) == higher_is_better else "worse"
    return "undecided"


def paired(runs: dict, pairs: list[tuple[Job, Job]]) -> dict:
    """a − b (pp) over the pairs of runs (a, b) of which both are done, with the paired 95% interval."""
    diffs = [runs[a.key]["test_acc"] - runs[b.key]["test_acc"] for a, b in pairs if a.key in runs and b.key in runs]
    interval = t_interval(diffs)
    return {"mean": 100 * statistics.mean(diffs) if diffs else None,
            "ci95": [100 * v for v in interval] if interval else None, "paired": True, "n": len(diffs),
            "per_seed": [100 * d for d in diffs], "verdict": verdict(interval)}


def quiet(run: dict) -> bool:
    """Whether a run had the machine to itself: the load average stayed within its own threads (+ 0.5)."""
    return max(run["load_average"]) <= run["machine"]["threads"] + 0.5


def comparison(runs: dict, size: Size, epochs: int) -> dict:
    """Every method at ``epochs``: its runs, accuracy over seeds, and its paired difference to the last-cycle model."""
    precision = seed_precisions(runs, epochs)
    seeds = sorted(precision)

    def job(method: str, seed: int) -> Job:
        return as_run(runs, Job(method, seed, epochs, precision[seed]))

    def done(method: str) -> list[dict]:
        return [runs[k] for k in (job(method, s).key for s in seeds) if k in runs]

    methods = {}
    for method in size.methods:
        accuracies = [100 * r["test_acc"] for r in done(method)]
        # time saved only from pairs of runs that both had the machine to themselves: the accuracies do not depend
        # on what else runs, their seconds do
        last_seconds = {(r["seed"], r["mixed_precision"]): r["train_seconds"] for r in done("last") if quiet(r)}
        saved = [1 - r["train_seconds"] / last_seconds[r["seed"], r["mixed_precision"]] for r in done(method)
                 if (r["seed"], r["mixed_precision"]) in last_seconds and quiet(r)]
        # each run against the last-cycle run of its seed and precision: a pair never mixes precisions
        pairs = [(run, replace(run, method="last")) for run in (job(method, s) for s in seeds)]
        methods[method] = {
            "seeds": [r["seed"] for r in done(method)], "test_acc": accuracies,
            "runs": [j.key for j, _ in pairs if j.key in runs],
            "continued_in_fp32": [j.seed for j, _ in pairs if j.key in runs and j.mixed_precision != precision[j.seed]],
            "test_acc_mean": statistics.mean(accuracies) if accuracies else None,
            "test_acc_std": statistics.stdev(accuracies) if len(accuracies) > 1 else None,
            "train_seconds_mean": statistics.mean(r["train_seconds"] for r in done(method)) if accuracies else None,
            "time_saved_vs_last": mean_std(saved),
            "minus_last_pp": paired(runs, pairs),
        }
    multilevel = methods["multilevel"]
    # what growing kept of depth's worth: the last-cycle model's lead over the first-cycle one bounds it
    above_first = [(run, replace(run, method="first")) for run in (job("multilevel", s) for s in seeds)] \
        if "first" in methods else []
    return {
        "epochs": epochs, "cycles": list(GrowthPlan.paper(total=epochs).cycles),
        "seeds": sorted(set(multilevel["seeds"]) & set(methods["last"]["seeds"])), "methods": methods,
        "seed_precision": precision, "multilevel_minus_last_pp": multilevel["minus_last_pp"],
        "multilevel_minus_first_pp": paired(runs, above_first),
        "time_saved": multilevel["time_saved_vs_last"], "verdict": multilevel["minus_last_pp"]["verdict"],
    }


def time_saved(summary: dict, size: Size) -> dict:
    """The multi-level model's time saved against the last-cycle model, and where it comes from: these runs' quiet
    pairs, else the committed result the size names (its quiet `--long` runs), else none."""
    own = summary["time_saved"]
    if own["mean"] is not None:
        return {**own, "from": "these runs (pairs that had the machine to themselves)"}
    if size.time_saved_from is None:
        return {**own, "from": None}
    committed = json.loads((RESULTS / size.time_saved_from).read_text())
    saved = committed["summary"]["methods"]["multilevel"]["time_saved_vs_last"]
    return {"mean": saved["mean"], "std": saved["std"],
            "from": f"results/{size.time_saved_from} ({saved['n']} seeds, quiet runs): no pair of these runs had the "
                    "machine to itself"}


def summarize(result: dict, size: Size) -> dict:
    """The comparison where the pilot found the plateau (else at the size), the pilot, any comparison made at other
    epochs (before the plateau was found), and bf16's fp32 check."""
    runs = result["runs"]
    rungs = pilot_epochs(size, runs) if size.pilot else [size.epochs]
    pilot = [{"train_images": size.train_images, "epochs": epochs, "seeds": len(pilot_runs(runs, size, epochs)),
              "accuracy_mean": pilot_accuracy(runs, size, epochs),
              "gain_pp": pilot_gain(runs, size, epochs) if epochs > size.epochs else None}
             for epochs in rungs]
    compared, found = comparison_epochs(size, runs), plateau_epochs(size, runs)
    elsewhere = [epochs for epochs in rungs if epochs != compared
                 and any(r["epochs"] == epochs and r["method"] != "last" for r in runs.values())]
    return {
        **comparison(runs, size, compared), "pilot": pilot,
        "plateau": found == compared, "plateau_epochs": found,
        "other_epochs": {str(epochs): comparison(runs, size, epochs) for epochs in elsewhere},
        "bf16_minus_fp32_pp": paired(runs, [(Job("last", s, size.epochs, "bf16"), Job("last", s, size.epochs, "no"))
                                            for s in sorted(seed_precisions(runs, size.epochs))])
        if size.pilot else None,
    }


# -- report -------------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def interval(diff: dict) -> str:
    if diff["mean"] is None:
        return "—"
    ci = f"[{diff['ci95'][0]:+.2f}, {diff['ci95'][1]:+.2f}]" if diff["ci95"] else "(one seed)"
    return f"{diff['mean']:+.2f} pp {ci}, n={diff['n']}: {diff['verdict']}"


def precisions(seed_precision: dict[int, str]) -> str:
    """"bf16 (seeds 0, 1), fp32 (seed 2)": which precision each seed ran at (all its methods alike)."""
    seeds = {}
    for seed, precision in sorted(seed_precision.items()):
        seeds.setdefault("fp32" if precision == "no" else precision, []).append(str(seed))
    return "precision " + (", ".join(f"{p} (seed{'s' * (len(v) > 1)} {', '.join(v)})" for p, v in seeds.items())
                           or "—")


def methods_table(compared: dict) -> list[str]:
    """The comparison at one number of epochs: a row per method, its verdict, and the runs continued in fp32."""
    lines = ["| method | model | seeds | test acc (%) | − last-cycle (paired 95% CI) | training s "
             "| time saved (%, quiet runs only) |",
             "|---|---|---|---|---|---|---|"]
    for method, stat in compared["methods"].items():
        model, extra, what = METHODS[method]
        saved = stat["time_saved_vs_last"]
        acc = f"{fmt(stat['test_acc_mean'])} ± {fmt(stat['test_acc_std'])}"
        lines.append(f"| {what} | `{' '.join((model, *extra))}` | {len(stat['seeds'])} | {acc} | "
                     f"{'—' if method == 'last' else interval(stat['minus_last_pp'])} | "
                     f"{fmt(stat['train_seconds_mean'], 0)} | "
                     f"{'—' if method == 'last' else fmt(saved['mean'] and 100 * saved['mean'], 1)} |")
    lines += ["", f"**Verdict, multi-level − last-cycle: {compared['verdict']}** "
                  f"({interval(compared['multilevel_minus_last_pp'])}; on par means the whole interval within "
                  f"±{100 * MARGIN:g} pp)."]
    if compared["multilevel_minus_first_pp"]["n"]:
        lines.append(f"\nMulti-level − first-cycle (what growing kept of the depth's worth, paired): "
                     f"{interval(compared['multilevel_minus_first_pp'])}.")
    continued = {METHODS[m][2].split(" (")[0]: stat["continued_in_fp32"] for m, stat in compared["methods"].items()
                 if stat["continued_in_fp32"]}
    if continued:
        lines.append("\nBegun in bf16, continued in fp32 on a CPU without bf16 instructions: "
                     + "; ".join(f"{what}, seed{'s' * (len(v) > 1)} {', '.join(map(str, v))}"
                                 for what, v in continued.items())
                     + ". They count in their method's mean, and pair only with a last-cycle run in fp32.")
    return lines


def markdown(result: dict, size: Size) -> str:
    s = result["summary"]
    machines = sorted({machine.line(r["machine"]) for r in result["runs"].values()})
    lines = [
        "# growres benchmark: accuracy at a plateau (paired seeds, full test set)",
        "",
        f"Fashion-MNIST, {size.train_images or 'all'} training images, {size.test_images or 'all 10,000'} test "
        f"images · compared at {s['epochs']} epochs, cycles start at {s['cycles']} (the paper's 60/110 of 160) · "
        f"{precisions(s['seed_precision'])}, channels-last{', torch.compile' if size.compile else ''} · "
        f"batch 100, η_max 0.5 · "
        f"{len(result['runs'])} runs, on: {'; '.join(machines) or '—'}",
        "",
        "## Pilot: the last-cycle model as its epochs double",
        "",
        "| training images | epochs | seeds | test acc (%) | gain over half the epochs (pp) |",
        "|---|---|---|---|---|",
    ]
    for row in s["pilot"]:
        lines.append(f"| {row['train_images'] or 'all'} | {row['epochs']} | {row['seeds']} | "
                     f"{fmt(row['accuracy_mean'])} | {fmt(row['gain_pp'])} |")
    where = f"at {s['plateau_epochs']} epochs" if s["plateau_epochs"] else "not shown"
    lines += ["", f"Plateau (doubling gains < {100 * PLATEAU_GAIN:g} pp): **{where}**.", ""]
    if not size.pilot:  # a check of the code path on other hardware: no pilot was run
        lines = lines[:4]
    lines += [f"## Methods at {s['epochs']} epochs{' (the plateau)' if s['plateau'] else ''}", "", *methods_table(s)]
    saved = time_saved(s, size)
    if saved["mean"] is not None:
        spread = f" ± {100 * saved['std']:.1f}" if saved["std"] is not None else ""
        lines.append(f"\nTime saved by the multi-level model: {100 * saved['mean']:.1f}{spread}% "
                     f"(from {saved['from']}).")
    for epochs, compared in s["other_epochs"].items():
        lines += ["", f"## Methods at {epochs} epochs (before the plateau was found; not a plateau)", "",
                  *methods_table(compared)]
    if s["bf16_minus_fp32_pp"] is not None:
        lines.append(f"\nbf16 − fp32, last-cycle model at {size.epochs} epochs: {interval(s['bf16_minus_fp32_pp'])}.")
    return "\n".join(lines) + "\n"


def plot(result: dict, size: Size, path: Path) -> None:
    """Test accuracy against training time at each evaluation: the mean over seeds, a band from min to max."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in size.methods:
        curves = [result["runs"][k]["curve"] for k in result["summary"]["methods"][method]["runs"]]
        if not curves:
            continue
        points = list(zip(*curves))  # per evaluation: (epoch, seconds, accuracy) of every seed
        seconds = [statistics.mean(p[1] for p in point) for point in points]
        accuracy = [[100 * p[2] for p in point] for point in points]
        line, = ax.plot(seconds, [statistics.mean(a) for a in accuracy], marker=".", label=method)
        ax.fill_between(seconds, [min(a) for a in accuracy], [max(a) for a in accuracy], color=line.get_color(),
                        alpha=0.2, linewidth=0)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Fashion-MNIST, {size.train_images or 'all'} images, {result['summary']['epochs']} epochs: "
                 "mean over seeds, min–max band")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(result: dict, size: Size, stem: Path) -> None:
    result["summary"] = summarize(result, size)
    result.update({k: result["summary"][k] for k in ("seeds", "pilot", "multilevel_minus_last_pp", "verdict")})
    result["time_saved"] = time_saved(result["summary"], size)
    result["test_images"] = size.test_images or 10000
    result["torch"], result["timm"], result["growres"] = torch.__version__, timm.__version__, growres.__version__
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(f"{stem}.json"), json.dumps(result, indent=2))
    write_text_atomic(Path(f"{stem}.md"), markdown(result, size))
    if result["runs"]:
        plot(result, size, Path(f"{stem}.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--plan", action="store_true", help="list the queue, what is done, and stop")
    what.add_argument("--report", action="store_true", help="re-summarise the results file only")
    parser.add_argument("--size", choices=SIZES, default="plateau",
                        help="plateau (the evidence), smoke (a minute, to check the script), gpu (benchmarks/"
                             "gpu_check.sh: the Table 3 row on one GPU), gpu-smoke (its code path on a CPU)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 of every method (more: a narrower interval)")
    parser.add_argument("--max-minutes", type=float, default=math.inf, help="start no run after this long")
    parser.add_argument("--output", type=Path, default=RESULTS / "time_saved_plateau", help="results file stem")
    parser.add_argument("--workers", type=int, default=1,
                        help="runs at once, the cores shared among them (on 2 cores, 2 one-thread runs finish the "
                             "queue sooner than 1 two-thread run; their seconds are not quiet and give no time saved)")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    size = SIZES[args.size]
    stem = args.output
    result = load(Path(f"{stem}.json"), size)
    jobs = queue(size, tuple(range(args.seeds)), result["runs"])
    todo = [job for job in jobs if job.key not in result["runs"]]
    if args.plan:
        for job in jobs:
            print(f"{'done' if job.key in result['runs'] else 'todo'}  {job.key}")
        return print(f"{len(todo)} of {len(jobs)} runs to go")
    threads = max(1, torch.get_num_threads() // args.workers)  # this process's (OMP_NUM_THREADS), shared
    started, pending = time.perf_counter(), [] if args.report else todo
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.workers) as pool:
        running = {}

        def start_next() -> None:
            if pending and (time.perf_counter() - started) / 60 > args.max_minutes:
                print(f"--max-minutes {args.max_minutes:g} reached; rerun to continue", flush=True)
                pending.clear()
            if pending:
                job = pending.pop(0)
                running[pool.submit(train, job, size, Path(tmp), threads)] = job

        for _ in range(args.workers):
            start_next()
        while running:
            finished = next(as_completed(running))
            job, record = running.pop(finished), finished.result()
            result["runs"][job.key] = record
            write(result, size, stem)  # at once: an interrupted invocation loses at most the runs in progress
            print(f"{job.key}: {100 * record['test_acc']:.2f}% in {record['train_seconds']:.0f} s "
                  f"({record['wall_seconds']:.0f} s wall)", flush=True)
            start_next()
    write(result, size, stem)
    print(markdown(result, size))


if __name__ == "__main__":
    main()
