"""The README's growth examples run as printed (on a shorter plan and a tiny loader), and its benchmark numbers are
the committed results'."""
import json
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).parents[1] / "README.md"
LONG_BENCHMARK = Path(__file__).parents[1] / "benchmarks" / "results" / "time_saved_long.md"


def test_readme_growth_example_runs(capsys):
    example = re.search(r"```python\n(import growres, timm, timm.optim, torch.*?)```", README.read_text(), re.S)
    code = example.group(1)
    assert len(code.strip().splitlines()) <= 15
    short = code.replace("GrowthPlan(cycles=(60, 110), total=160)", "GrowthPlan(cycles=(1, 2), total=3)")
    assert short != code
    loader = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(2)]
    exec(short, {"loader": loader})
    assert capsys.readouterr().out.splitlines() == [
        "grew to (4, 4, 4) blocks, h=0.5", "grew to (8, 8, 8) blocks, h=0.25"]


def test_readme_transformers_example_runs(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    example = re.search(r"```python\n(import growres, torch, transformers\n.*?)```", README.read_text(), re.S)
    code = example.group(1)
    assert len(code.strip().splitlines()) <= 15
    short = code.replace("GrowthPlan(cycles=(600, 1100), total=1600", "GrowthPlan(cycles=(1, 2), total=3")
    assert short != code
    loader = [torch.randint(0, 256, (2, 8)) for _ in range(3)]
    monkeypatch.chdir(tmp_path)
    exec(short, {"loader": loader})
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "grown-llama")
    assert reloaded.config.num_hidden_layers == 8 and len(reloaded.model.layers) == 8


def test_readme_quotes_the_long_benchmark_as_committed():
    """Every table row and every headline line of the long benchmark's results appears in the README verbatim."""
    results = LONG_BENCHMARK.read_text().splitlines()
    quoted = [line for line in results if line.startswith("| ") or line.startswith("- **")]
    assert len(quoted) >= 10
    readme = README.read_text()
    missing = [line for line in quoted if line not in readme]
    assert not missing, missing



QUICKSTART = Path(__file__).parents[1] / "benchmarks" / "results" / "quickstart.json"


def test_readme_quick_start_promises_the_committed_range():
    """The accuracy range the quick start promises, overall and per kernel, is that of the committed runs."""
    runs = json.loads(QUICKSTART.read_text())["runs"]
    readme = README.read_text()

    def span(accuracies):
        return f"{100 * min(accuracies):.2f}–{100 * max(accuracies):.2f}%"

    assert f"**test accuracy {span([r['test_acc'] for r in runs])}**" in readme
    for kernels in {r["kernels"] for r in runs}:
        assert f"({span([r['test_acc'] for r in runs if r['kernels'] == kernels])}" in readme, kernels
    assert {r["seed"] for r in runs} == {0, 1, 2} and "seeds 0–2" in readme


PLATEAU = Path(__file__).parents[1] / "benchmarks" / "results" / "time_saved_plateau.json"
LM_GROWTH = Path(__file__).parents[1] / "benchmarks" / "results" / "lm_growth.md"


def signed(value: float) -> str:
    return f"{value:+.2f}".replace("-", "−")


def test_readme_opens_with_the_plateau_evidence_as_committed():
    """The first paragraph's pilot and paired figures are those of the committed plateau benchmark: each measured
    doubling of the pilot, the comparison's verdict, and a comparison made at other epochs before the plateau."""
    result = json.loads(PLATEAU.read_text())
    opening = README.read_text().split("\n\n")[1]
    for shorter, longer in zip(result["pilot"], result["pilot"][1:]):
        if longer["gain_pp"] is not None:
            assert f"{longer['gain_pp']:.2f} pp" in opening, longer
            assert f"{shorter['accuracy_mean']:.2f}% → {longer['accuracy_mean']:.2f}%" in opening, longer
    for compared in (result["summary"], *result["summary"]["other_epochs"].values()):
        paired = compared["multilevel_minus_last_pp"]
        if paired["mean"] is not None:
            assert f"multi-level − last-cycle is {signed(paired['mean'])} pp" in opening, compared["epochs"]
        if paired["ci95"]:
            low, high = paired["ci95"]
            assert f"[{signed(low)}, {signed(high)}]" in opening, compared["epochs"]
        assert f"{paired['n']} paired seed" in opening and f"**{compared['verdict']}" in opening, compared["epochs"]
    # at the plateau, the other methods against the last-cycle model, multi-level against the first-cycle model,
    # and bf16's fp32 check
    summary = result["summary"]
    others = [summary["methods"][method]["minus_last_pp"] for method in ("first", "no-restart")]
    for paired in (*others, summary["multilevel_minus_first_pp"], summary["bf16_minus_fp32_pp"]):
        low, high = paired["ci95"]
        assert f"{signed(paired['mean'])} pp [{signed(low)}, {signed(high)}]" in opening, paired


def test_readme_quotes_the_lm_growth_table_as_committed():
    rows = [line for line in LM_GROWTH.read_text().splitlines() if line.startswith("| ")]
    assert len(rows) >= 6  # the header and a row per method
    readme = README.read_text()
    assert [row for row in rows if row not in readme] == []
