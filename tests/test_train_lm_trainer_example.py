"""examples/train_lm_trainer.py: a byte-level Llama grown inside the Hugging Face Trainer, and resumed mid-growth."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

EXAMPLE = Path(__file__).parents[1] / "examples" / "train_lm_trainer.py"
FORTUNES = Path("/usr/share/games/fortunes")
TINY = ["--steps", "16", "--layers", "1", "--hidden-size", "16", "--heads", "2", "--block-size", "16",
        "--batch-size", "4", "--eval-every", "8", "--save-every", "8", "--eval-windows", "8"]


def run_example(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    return subprocess.run([sys.executable, str(EXAMPLE), *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # three training processes
@pytest.mark.skipif(not FORTUNES.is_dir(), reason="needs the Debian package fortunes (bash .ci/run installs it)")
def test_example_grows_inside_the_trainer_and_resumes_mid_growth(tmp_path):
    run = tmp_path / "run"
    result = run_example(*TINY, "--output-dir", str(run))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 layers" in result.stdout  # 1 -> 2 -> 4 at steps 6 and 11
    final = transformers.AutoModelForCausalLM.from_pretrained(run / "final")
    assert final.config.num_hidden_layers == 4

    resumed = tmp_path / "resumed"  # the same run, stopped after its step-8 checkpoint (2 layers then)
    shutil.copytree(run / "checkpoint-8", resumed / "checkpoint-8")
    result = run_example(*TINY, "--output-dir", str(resumed), "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    again = transformers.AutoModelForCausalLM.from_pretrained(resumed / "final")
    expected = final.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in again.state_dict().items())


def test_example_resuming_without_a_checkpoint_says_so(tmp_path):
    result = run_example(*TINY, "--output-dir", str(tmp_path / "empty"), "--resume", "--text-dir", str(FORTUNES))
    assert result.returncode == 2
    assert "no model weights" in result.stderr and "Traceback" not in result.stderr
