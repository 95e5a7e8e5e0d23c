"""Shard-local growth of models sharded with FSDP2 (fully_shard) under 2 and 4 processes (torchrun, gloo on CPU)."""
import json
from pathlib import Path

import pytest
from launch import rank_tails, torchrun

SCRIPT = Path(__file__).parent / "scripts" / "fsdp_growth.py"
# blocks per stage after each growth; MODEL:STRATEGY grows with STRATEGY (a growres model: transitions, explicit h);
# vit-wide is sized so that the gather path's full model would exceed the memory bound
MODELS = {"vit": [[4], [8]], "growres": [[4, 4, 4], [8, 8, 8]], "growres:stack": [[4, 4, 4], [8, 8, 8]],
          "vit-wide": [[4]]}
GROWTH_STEPS = {"vit-wide": [1]}  # the others grow at steps 3 and 6
CHECKS = (  # right after each growth, on every rank (see the script), and the step after it
    "no_collectives", "memory_within_bound", "equals_unsharded_growth", "same_on_all_ranks", "all_sharded",
    "same_policy", "old_params_kept", "root_sees_new_blocks", "optimizer_holds_model", "groups_kept",
    "momentum_transplanted", "loss_equals_unsharded", "new_params_got_gradients", "new_params_moved", "no_new_roots",
)
REFUSED = {"unmanaged": True, "strategy": True, "root_only": True, "root_only_scheduler": True}


def grow_sharded_models(tmp_path, num_processes: int, models: list[str]) -> dict:
    report_path = tmp_path / "report.json"
    result = torchrun([str(SCRIPT), str(report_path), str(tmp_path / "checkpoints"), *models],
                      num_processes=num_processes)
    assert result.returncode == 0, rank_tails(result)
    report = json.loads(report_path.read_text())
    assert report["world_size"] == num_processes
    assert report["refused"] == REFUSED
    for name in models:
        run, layers = report[name], MODELS[name]
        assert run["policy_read_back"], name  # the blocks' own fully_shard settings are what new blocks get
        steps = GROWTH_STEPS.get(name, [3, 6])
        assert [(g["step"], g["layers"]) for g in run["growths"]] == list(zip(steps, layers)), name
        for growth in run["growths"]:
            assert [check for check in CHECKS if growth[check] is not True] == [], (name, growth["layers"])
            assert growth["new_params"]
            assert growth["comms"] == [{}] * num_processes  # no collective at all, on any rank
            for rank in growth["memory"]:
                assert rank["extra"] <= rank["bound"], (name, rank)
        assert run["resume"] == {"layers": layers[-1], "next_loss_equal": True, "next_params_equal": True}, name
    return report


@pytest.mark.slow
def test_shard_local_growth_on_2_ranks(tmp_path):
    report = grow_sharded_models(tmp_path, 2, list(MODELS))
    # the bound is far below what gathering takes: the full grown model on every rank
    for growth in report["vit-wide"]["growths"]:
        assert all(rank["bound"] < growth["full_model_bytes"] / 1.5 for rank in growth["memory"])


@pytest.mark.slow
def test_shard_local_growth_on_4_ranks(tmp_path):
    report = grow_sharded_models(tmp_path, 4, ["vit", "vit-wide"])
    for growth in report["vit-wide"]["growths"]:
        assert all(rank["bound"] < growth["full_model_bytes"] / 3 for rank in growth["memory"])
