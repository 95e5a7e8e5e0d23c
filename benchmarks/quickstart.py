"""What the README's quick start prints on other seeds and other kernels: the range a user should expect.

The quick start (growres_resnet50i, 10,000 Fashion-MNIST images, 6 epochs, cycles at 2 and 4) prints one test
accuracy and one training time, from one CPU. Float32 training is chaotic: a kernel that sums in another order
(AVX2 instead of AVX-512, as on another machine) changes the last bits of the first step and, through 600 steps,
the final accuracy by as much as another seed does. This runs the exact command for several seeds under the
machine's own kernels and under narrower ones (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA), and records each run's
accuracy and its pace per depth (images/s of each cycle), with the machine.

    python benchmarks/quickstart.py                  # 3 seeds x (native, AVX2); resumable
    python benchmarks/quickstart.py --report         # re-render the committed results only

Results: benchmarks/results/quickstart.{json,md}; the README's quick start quotes them.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import machine

from growres.runs import RunFolder, write_text_atomic

RESULTS = Path(__file__).parent / "results"
QUICKSTART = ["--model", "growres_resnet50i", "--epochs", "6", "--cycles", "2,4", "--max-train-samples", "10000",
              "--max-eval-samples", "2000"]  # the README's command, without its --output-dir
KERNELS = {  # name: the environment that selects them (native: the machine's own, the widest it has)
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
RUNS = [(kernels, seed) for seed in (0, 1, 2) for kernels in ("native", "avx2")]  # interleaved: drift falls on both


def run(kernels: str, seed: int, workdir: Path) -> dict:
    out = workdir / f"{kernels}-{seed}"
    env = dict(os.environ, TQDM_DISABLE="1", **KERNELS[kernels])
    probe = subprocess.run([sys.executable, "-c", "import json, machine; print(json.dumps(machine.describe()))"],
                           capture_output=True, text=True, env=env, cwd=Path(__file__).parent, check=True)
    result = subprocess.run([sys.executable, "-m", "growres", "train", *QUICKSTART, "--seed", str(seed),
                             "--output-dir", str(out)], capture_output=True, text=True, env=env)
    if result.returncode:
        sys.exit(f"quick start ({kernels}, seed {seed}) failed:\n{result.stderr[-3000:]}")
    folder = RunFolder(out)
    summary = folder.summary()
    return {"kernels": kernels, "seed": seed, "test_acc": summary["test_acc"],
            "train_seconds": summary["train_seconds"], "last_line": result.stdout.strip().splitlines()[-1],
            "images_per_second": {"-".join(map(str, c["layers"])): c["images_per_second"]  # per depth
                                  for c in folder.pace_per_cycle().values()},
            "machine": json.loads(probe.stdout), "load_average": os.getloadavg()[0]}


def markdown(result: dict) -> str:
    runs = result["runs"]
    accuracies = [100 * r["test_acc"] for r in runs]
    lines = [
        "# The quick start on other seeds and kernels",
        "",
        f"`growres train {' '.join(QUICKSTART)} --seed S` · {machine.line(runs[0]['machine'])}",
        "",
        "| kernels | seed | test acc (%) | training s | images/s at 2-2-2 / 4-4-4 / 8-8-8 | load |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        pace = " / ".join(f"{v:.0f}" for v in r["images_per_second"].values())
        lines.append(f"| {r['machine']['aten_cpu_capability']}, oneDNN {r['machine']['onednn_max_cpu_isa']} | "
                     f"{r['seed']} | {100 * r['test_acc']:.2f} | {r['train_seconds']:.0f} | {pace} | "
                     f"{r['load_average']:.1f} |")
    lines += ["", f"Test accuracy over these {len(runs)} runs: **{min(accuracies):.2f}–{max(accuracies):.2f}%**."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="re-render the committed results only")
    args = parser.parse_args()
    path = RESULTS / "quickstart.json"
    result = json.loads(path.read_text()) if path.exists() else {"runs": []}
    done = {(r["kernels"], r["seed"]) for r in result["runs"]}
    with tempfile.TemporaryDirectory() as tmp:
        for kernels, seed in [] if args.report else [k for k in RUNS if k not in done]:
            result["runs"].append(run(kernels, seed, Path(tmp)))
            write_text_atomic(path, json.dumps(result, indent=2))  # resumable: a rerun skips what is done
            print(result["runs"][-1]["last_line"], flush=True)
    write_text_atomic(path, json.dumps(result, indent=2))
    write_text_atomic(path.with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
