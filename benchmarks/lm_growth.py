"""Which growth operator for a language model: the paper's, G_stack's, identity, measured on the same runs.

A stock ``LlamaForCausalLM`` built from a config, byte-level (no tokenizer), trained by ``examples/train_lm.py`` on the
English text of the Debian package ``fortunes`` (a held-out split gives the validation loss, in nats per byte, so a
small corpus memorised would show as a gap to the training loss), grown 2 -> 4 -> 8 layers at the paper's
proportions (growth at 60/160 and 110/160 of the steps), against the same 8-layer model trained from scratch with the
same learning-rate restarts on the same tokens (within a seed, every method sees the same batches in the same order):

* ``full``: 8 layers throughout;
* ``copy``: the paper's interpolation (each layer followed by its copy, every branch halved);
* ``identity``: LLaMA-Pro's new layers that start as identities (old branches doubled so that h/2 keeps them);
* ``stack``: G_stack's operator (layers 0..L-1, 0..L-1, no branch scaled);
* ``copy_unscaled``: copy without halving the branches (against copy: the effect of h/2; against stack: the order).

    python benchmarks/lm_growth.py --pilot       # full depth at the size's steps and twice that: flattened?
    python benchmarks/lm_growth.py               # every method x seed, interleaved by seed; resumable
    python benchmarks/lm_growth.py --report      # re-summarise benchmarks/results/lm_growth.json

Each run is a fresh process; results accumulate per (method, seed) in benchmarks/results/lm_growth.json (with .md
and .png beside it), so the whole may be spread over several invocations. A verdict per operator compares its final
validation loss with full depth's, paired by seed: on par when the whole 95% interval lies within +-0.02 nats/byte,
better or worse when it excludes 0, else undecided.
"""
import argparse
import dataclasses
import datetime
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine
from plateau import mean_std, t_interval, verdict

from growres.runs import write_text_atomic

RESULTS = Path(__file__).parent / "results"
TRAIN_LM = Path(__file__).parents[1] / "examples" / "train_lm.py"
METHODS = {  # name in the results: train_lm.py flags
    "full": ["--full-depth"],
    "copy": ["--strategy", "copy"],
    "identity": ["--strategy", "identity"],
    "stack": ["--strategy", "stack"],
    "copy_unscaled": ["--strategy", "copy-unscaled"],
}
MARGIN = 0.02  # on par: the whole 95% interval of the loss difference within +-0.02 nats per byte
PILOT_SEED = 0
HEADLINE = ("val_loss_mean", "val_loss_std", "time_saved", "verdict", "minus_full_ci95")  # per method, at the top


@dataclasses.dataclass(frozen=True)
class Size:
    """One benchmark size: what every run trains (train_lm.py's flags)."""
    steps: int = 1600  # optimizer steps; growth at 600 and 1100
    batch_size: int = 16  # sequences per step
    block_size: int = 64  # bytes per sequence
    hidden_size: int = 64
    heads: int = 4
    lr_max: float = 2e-3
    lr_min: float = 1e-4
    eval_every: int = 100  # steps between validation losses
    eval_batches: int = 16  # held-out batches (16 x 16 x 64 = 16 KiB of text)

    def flags(self, steps: int | None = None) -> list[str]:
        return ["--steps", str(steps or self.steps), "--batch-size", str(self.batch_size), "--block-size",
                str(self.block_size), "--hidden-size", str(self.hidden_size), "--heads", str(self.heads),
                "--lr-max", str(self.lr_max), "--lr-min", str(self.lr_min), "--eval-every", str(self.eval_every),
                "--eval-batches", str(self.eval_batches), "--layers", "2", "--growths", "2"]


SIZES = {"default": Size(), "smoke": Size(steps=16, hidden_size=16, heads=2, block_size=16, batch_size=4,
                                          eval_every=4, eval_batches=2)}


def run_key(method: str, seed: int, steps: int) -> str:
    return f"{method}/{steps}steps/seed{seed}"


def train(method: str, seed: int, size: Size, steps: int | None = None) -> dict:
    """One run of train_lm.py in a fresh process: its validation curve, final losses, seconds and speed per depth."""
    with tempfile.TemporaryDirectory() as workdir:
        command = [sys.executable, str(TRAIN_LM), *size.flags(steps), *METHODS[method], "--seed", str(seed),
                   "--output-dir", workdir]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"{method} seed {seed} failed:\n{result.stderr[-3000:]}")
        rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    tokens_per_step = size.batch_size * size.block_size
    previous, per_depth = {"step": 0, "seconds": 0.0}, {}
    for row in rows:  # tokens/s per depth, from the training seconds between evaluations
        depth = per_depth.setdefault(str(row["layers"]), {"tokens": 0, "seconds": 0.0})
        depth["tokens"] += (row["step"] - previous["step"]) * tokens_per_step
        depth["seconds"] += row["seconds"] - previous["seconds"]
        previous = row
    return {
        "method": method, "seed": seed, "steps": rows[-1]["step"], "tokens": rows[-1]["step"] * tokens_per_step,
        "val_loss": rows[-1]["val_loss"], "train_loss": rows[-1]["train_loss"], "seconds": rows[-1]["seconds"],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "tokens_per_s": {layers: d["tokens"] / d["seconds"] for layers, d in per_depth.items() if d["seconds"] > 0},
        "curve": [[r["step"], r["seconds"], r["val_loss"], r["layers"]] for r in rows],
    }


# -- the summary --------------------------------------------------------------------------------------------


def loss_at(curve: list, seconds: float) -> float | None:
    """The validation loss a run had reached after ``seconds`` of training (its last evaluation by then)."""
    reached = [loss for _, s, loss, _ in curve if s <= seconds]
    return reached[-1] if reached else None


def first_reaching(curve: list, target: float) -> tuple[float, int] | None:
    """(seconds, step) of a run's first evaluation at or below ``target``, or None."""
    return next(((s, step) for step, s, loss, _ in curve if loss <= target), None)


def summarize(result: dict, size: Size) -> dict:
    runs = result["runs"]
    seeds = sorted({r["seed"] for r in runs.values() if r["steps"] == size.steps})
    tokens_per_step = size.batch_size * size.block_size
    methods = {}
    for method in METHODS:
        mine = {s: runs[k] for s in seeds if (k := run_key(method, s, size.steps)) in runs}
        if not mine:
            continue
        losses = [r["val_loss"] for r in mine.values()]
        row = {"seeds": sorted(mine), "val_loss_mean": statistics.mean(losses),
               "val_loss_std": statistics.stdev(losses) if len(losses) > 1 else None,
               "train_loss_mean": statistics.mean(r["train_loss"] for r in mine.values()),
               "seconds": mean_std([r["seconds"] for r in mine.values()]),
               "tokens_per_s": {layers: statistics.mean(r["tokens_per_s"][layers] for r in mine.values())
                                for layers in next(iter(mine.values()))["tokens_per_s"]}}
        full = {s: runs[k] for s in mine if (k := run_key("full", s, size.steps)) in runs}
        if method != "full" and full:
            diffs = [mine[s]["val_loss"] - full[s]["val_loss"] for s in full]
            row["minus_full"] = diffs
            row["minus_full_ci95"] = t_interval(diffs)
            row["verdict"] = verdict(row["minus_full_ci95"], MARGIN, higher_is_better=False)
            row["time_saved"] = mean_std([1 - mine[s]["seconds"] / full[s]["seconds"] for s in full])
            reached = [first_reaching(mine[s]["curve"], full[s]["val_loss"]) for s in full]
            row["to_full_loss"] = [None if r is None else {"seconds": r[0], "tokens": r[1] * tokens_per_step}
                                   for r in reached]
            # full depth's loss when this operator's run had ended: the loss at equal training time
            row["full_loss_at_equal_time"] = statistics.mean(
                loss_at(full[s]["curve"], mine[s]["seconds"]) or math.nan for s in full)
        elif method == "full":
            row["verdict"], row["time_saved"] = "reference", {"mean": 0.0, "std": 0.0}
        methods[method] = row
    pilot = [{"steps": steps, "val_loss": runs[k]["val_loss"], "train_loss": runs[k]["train_loss"]}
             for steps in (size.steps, 2 * size.steps) if (k := run_key("full", PILOT_SEED, steps)) in runs]
    if len(pilot) == 2:
        pilot[1]["gain"] = pilot[0]["val_loss"] - pilot[1]["val_loss"]
    return {"seeds": seeds, "methods": methods, "pilot": pilot,
            "flattened": len(pilot) == 2 and pilot[1]["gain"] < MARGIN}


def fmt(value, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown(result: dict, size: Size) -> str:
    summary = result["summary"]
    described = result["machine"]
    lines = [
        "# Growth operators for a language model (byte-level Llama on the fortunes text)",
        "",
        f"{size.steps} steps of {size.batch_size} x {size.block_size} bytes, hidden {size.hidden_size}, "
        f"{size.heads} heads, AdamW with Eq. 9 from {size.lr_max:g} to {size.lr_min:g} restarting at the growths "
        f"(60/160 and 110/160 of the steps); 2 -> 4 -> 8 layers. Seeds: {summary['seeds']}. Machine: "
        f"{described['cpu']} ({', '.join(described['cpu_flags'])}), {described['threads']} thread(s); "
        f"{result.get('conditions', '')}",
        "",
    ]
    if summary["pilot"]:
        lines += ["Pilot (full depth, seed 0): " + ", ".join(
            f"{p['steps']} steps: val {p['val_loss']:.3f} (train {p['train_loss']:.3f})" for p in summary["pilot"])
            + (f"; doubling gained {summary['pilot'][1]['gain']:.3f} nats/byte: "
               f"{'flattened' if summary['flattened'] else 'not flattened'} (< {MARGIN})."
               if len(summary["pilot"]) == 2 else "."), ""]
    lines += ["| method | val loss (nats/byte) | − full (paired 95% CI) | verdict | time saved | full's loss at equal "
              "time | time / tokens to full's final loss | tokens/s per depth |",
              "|---|---|---|---|---|---|---|---|"]
    for method, row in summary["methods"].items():
        ci = row.get("minus_full_ci95")
        saved = "—" if row.get("time_saved") is None else f"{100 * row['time_saved']['mean']:.1f}%"
        reach = row.get("to_full_loss")
        reach_text = "—" if reach is None else ", ".join(
            "never" if r is None else f"{r['seconds']:.0f} s / {r['tokens'] / 1e6:.2f}M" for r in reach)
        speeds = ", ".join(f"{layers}: {speed:,.0f}" for layers, speed in row["tokens_per_s"].items())
        lines.append(
            f"| {method} | {fmt(row['val_loss_mean'])} ± {fmt(row['val_loss_std'])} | "
            f"{'—' if ci is None else f'[{ci[0]:+.3f}, {ci[1]:+.3f}]'} | {row['verdict']} | "
            f"{saved} | {fmt(row.get('full_loss_at_equal_time'))} | "
            f"{reach_text} | {speeds} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, size: Size, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(7, 4.2))
    for method in METHODS:
        curves = [r["curve"] for r in result["runs"].values() if r["method"] == method and r["steps"] == size.steps]
        if not curves:
            continue
        points = min(len(c) for c in curves)
        seconds = [statistics.mean(c[i][1] for c in curves) for i in range(points)]
        losses = [[c[i][2] for c in curves] for i in range(points)]
        mean = [statistics.mean(v) for v in losses]
        line, = ax.plot(seconds, mean, label=method)
        ax.fill_between(seconds, [min(v) for v in losses], [max(v) for v in losses], alpha=0.2,
                        color=line.get_color())
    ax.set_xlabel("training seconds (mean over seeds)")
    ax.set_ylabel("validation loss (nats/byte)")
    ax.set_title("byte-level Llama, 2 -> 4 -> 8 layers: band = min-max over seeds")
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write(result: dict, size: Size, stem: Path) -> None:
    result["summary"] = summarize(result, size)
    result["seeds"] = result["summary"]["seeds"]
    result["methods"] = {method: {key: row[key] for key in HEADLINE if key in row}
                         for method, row in result["summary"]["methods"].items()}
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(stem.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    write_text_atomic(stem.with_suffix(".md"), markdown(result, size))
    plot(result, size, stem.with_suffix(".png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=tuple(SIZES), default="default")
    parser.add_argument("--seeds", type=int, default=3, help="Seeds 0..N-1 (default 3).")
    parser.add_argument("--pilot", action="store_true", help="Run only the pilot (full depth, S and 2S steps).")
    parser.add_argument("--report", action="store_true", help="Re-summarise the results without training.")
    parser.add_argument("--max-minutes", type=float, default=None, help="Start no run after this many minutes.")
    parser.add_argument("--conditions", default="", help="What else ran on the machine, for the report.")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    size = SIZES[args.size]
    stem = args.output or RESULTS / ("lm_growth" if args.size == "default" else f"lm_growth_{args.size}")
    path = stem.with_suffix(".json")
    result = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    if result.get("size", dataclasses.asdict(size)) != dataclasses.asdict(size):
        raise SystemExit(f"{path} holds runs of another size: move it away or pick --output.")
    result["size"] = dataclasses.asdict(size)
    if not args.report:  # a re-summary keeps the machine and conditions the runs were measured under
        result.update(machine=machine.describe(), conditions=args.conditions, date=datetime.date.today().isoformat())

    jobs = [("full", PILOT_SEED, size.steps), ("full", PILOT_SEED, 2 * size.steps)]
    if not args.pilot:
        jobs += [(m, s, size.steps) for s in range(args.seeds) for m in METHODS]  # interleaved: all methods per seed
    started = time.monotonic()
    for method, seed, steps in ([] if args.report else jobs):
        key = run_key(method, seed, steps)
        if key in result["runs"]:
            continue
        if args.max_minutes is not None and time.monotonic() - started > 60 * args.max_minutes:
            print("time budget spent; rerun to continue", flush=True)
            break
        result["runs"][key] = train(method, seed, size, steps)
        write(result, size, stem)  # after every run: an interrupted benchmark keeps what it measured
        run = result["runs"][key]
        print(f"{key}: val {run['val_loss']:.3f} in {run['seconds']:.0f} s", flush=True)
    write(result, size, stem)
    print(markdown(result, size))


if __name__ == "__main__":
    main()
