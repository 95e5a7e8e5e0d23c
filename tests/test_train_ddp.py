"""examples/train.py under real 2-process DDP (accelerate, gloo on CPU) against the single-process run."""
from pathlib import Path

import pytest
from conftest import TINY_RUN_ARGS, needs_fashion_mnist
from launch import accelerate_launch

from growres.runs import RunFolder

EXAMPLE = Path(__file__).parents[1] / "examples" / "train.py"


@needs_fashion_mnist
def test_ddp_training_grows_like_the_single_process_run(tiny_run, growres_env, tmp_path):
    run_dir = tmp_path / "ddp"
    result = accelerate_launch([str(EXAMPLE), *TINY_RUN_ARGS, "--output-dir", str(run_dir)], env=growres_env)
    assert result.returncode == 0, result.stderr[-4000:]
    ddp, single = RunFolder(run_dir), RunFolder(tiny_run)
    summary = ddp.summary()
    assert summary["world_size"] == 2
    assert summary["replicas_in_sync"]  # every parameter identical on both ranks at the end
    # the same global batch and plan: growth at the same steps, to the same depths and h
    fields = ("step", "epoch", "layers", "step_size", "num_params")
    assert [{k: g[k] for k in fields} for g in ddp.growth_records()] == \
        [{k: g[k] for k in fields} for g in single.growth_records()]
    # BatchNorm sees 25 images per process instead of 50, so the runs are close, not equal
    assert summary["test_acc"] == pytest.approx(single.summary()["test_acc"], abs=0.1)
    assert summary["train_acc"] > 0.2
