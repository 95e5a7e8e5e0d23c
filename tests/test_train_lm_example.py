"""examples/train_lm.py: a stock transformers decoder grown under accelerate on the Debian fortunes text."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")

EXAMPLE = Path(__file__).parents[1] / "examples" / "train_lm.py"
FORTUNES = Path("/usr/share/games/fortunes")
TINY = ["--steps", "8", "--layers", "1", "--growths", "2", "--hidden-size", "16", "--heads", "2", "--block-size", "16",
        "--batch-size", "4", "--eval-every", "2", "--eval-batches", "1"]


def run_example(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    return subprocess.run([sys.executable, str(EXAMPLE), *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # four training processes, about 20 s each on 2 shared cores
@pytest.mark.skipif(not FORTUNES.is_dir(), reason="needs the Debian package fortunes (bash .ci/run installs it)")
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_example_grows_the_model_and_saves_an_ordinary_checkpoint(family, tmp_path):
    grown, full = tmp_path / "grown", tmp_path / "full"
    result = run_example(*TINY, "--family", family, "--output-dir", str(grown))
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_example(*TINY, "--family", family, "--output-dir", str(full), "--full-depth")
    assert result.returncode == 0, result.stderr[-3000:]

    rows = [json.loads(line) for line in (grown / "metrics.jsonl").read_text().splitlines()]
    # the paper's schedule over 8 steps: growth at steps 3 (60/160) and 6 (110/160)
    assert [(r["step"], r["layers"]) for r in rows if r["grew"]] == [(3, 2), (6, 4)]
    assert rows[-1]["step"] == 8 and rows[-1]["layers"] == 4
    seconds = [r["seconds"] for r in rows]
    assert seconds == sorted(seconds) and seconds[0] > 0
    full_rows = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert {r["layers"] for r in full_rows} == {4} and not any(r["grew"] for r in full_rows)
    # a byte model starts near log(256) = 5.5 nats and learns
    assert all(0 < r["val_loss"] < 6 for r in rows + full_rows)

    model = transformers.AutoModelForCausalLM.from_pretrained(grown / "final")
    assert model.config.num_hidden_layers == 4 and model.config.model_type == family
    reference = transformers.AutoModelForCausalLM.from_pretrained(full / "final")
    assert model.state_dict().keys() == reference.state_dict().keys()


def test_example_without_the_text_says_what_to_install(tmp_path):
    result = run_example(*TINY, "--output-dir", str(tmp_path / "run"), "--text-dir", str(tmp_path))
    assert result.returncode == 2
    assert "apt-get install fortunes" in result.stderr and "Traceback" not in result.stderr
