"""Validation loss against training time for runs of examples/train_lm.py, growth events marked.

    python examples/plot_lm_runs.py runs/lm-grown runs/lm-full --output docs/train-lm-loss.png
"""
import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def label(rows: list[dict]) -> str:
    depths = list(dict.fromkeys(row["layers"] for row in rows))
    return " → ".join(map(str, depths)) + " layers"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="Run folders (their metrics.jsonl).")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for run in args.runs:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        line, = ax.plot([r["seconds"] for r in rows], [r["val_loss"] for r in rows], marker=".", label=label(rows))
        for row in rows:
            if row["grew"]:
                ax.axvline(row["seconds"], color=line.get_color(), linestyle=":", linewidth=1)
        print(f"{run}: {label(rows)}, final validation loss {rows[-1]['val_loss']:.3f} "
              f"after {rows[-1]['seconds']:.0f}s of training ({rows[-1]['step']} steps)")
    ax.set_xlabel("training seconds (evaluation excluded)")
    ax.set_ylabel("validation loss (nats per byte)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=120)


if __name__ == "__main__":
    main()
