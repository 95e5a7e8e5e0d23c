"""examples/train_lightning.py: a growres model grown on Fashion-MNIST by lightning.Trainer with GrowthCallback."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_fashion_mnist

pytest.importorskip("lightning")

EXAMPLE = Path(__file__).parents[1] / "examples" / "train_lightning.py"
# 3 epochs of 4 steps (200 images, batches of 50): the paper's proportions put the growths at steps 4 and 8
TINY = ["--epochs", "3", "--max-train-samples", "200", "--max-eval-samples", "100", "--batch-size", "50"]


def run_example(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLE), *args], env=env, capture_output=True, text=True, timeout=600)


def metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as file:
        return list(csv.DictReader(file))


def per_step(rows: list[dict], column: str) -> dict[int, float]:
    return {int(r["step"]): float(r[column]) for r in rows if r[column]}


@needs_fashion_mnist
def test_example_grows_the_model_and_restarts_the_lr(tmp_path, growres_env):
    run = tmp_path / "run"
    result = run_example(*TINY, "--output-dir", str(run), env=growres_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "grew to 4-4-4 blocks at step 4\ngrew to 8-8-8 blocks at step 8\n" in result.stdout
    assert "growres_resnet50i: test accuracy" in result.stdout and "(8-8-8 blocks)" in result.stdout

    rows = metrics(run)
    blocks = per_step(rows, "blocks")  # logged in training_step: the depth the step trained
    assert blocks == {step: 6.0 if step < 4 else 12.0 if step < 8 else 24.0 for step in range(12)}
    lr = per_step(rows, "lr-SGD/pg1")  # LearningRateMonitor: the LR of the coming step
    assert sorted(lr) == list(range(12))
    assert lr[0] == lr[4] == lr[8] == pytest.approx(0.1) and lr[3] < lr[2] < lr[1] < lr[0]
    assert len([r for r in rows if r["test_acc"]]) == 3 and all(0 <= float(r["test_acc"]) <= 1 for r in rows
                                                                 if r["test_acc"])
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt", "epoch=2-step=12.ckpt", "last.ckpt"]


@pytest.mark.slow  # a second run
@needs_fashion_mnist
def test_example_resumes_a_checkpoint_of_a_grown_model(tmp_path, growres_env):
    first = tmp_path / "first"
    assert run_example(*TINY, "--output-dir", str(first), env=growres_env).returncode == 0
    resumed = tmp_path / "resumed"
    result = run_example(*TINY, "--output-dir", str(resumed), "--resume",
                         str(first / "checkpoints" / "epoch=0-step=4.ckpt"), env=growres_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(8-8-8 blocks)" in result.stdout
    assert per_step(metrics(resumed), "blocks") == {step: 12.0 if step < 8 else 24.0 for step in range(4, 12)}
