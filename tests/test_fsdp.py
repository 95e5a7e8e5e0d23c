"""Growth of models sharded with FSDP2 (fully_shard) under 2 real processes (torchrun, gloo on CPU)."""
import json
from pathlib import Path

import pytest
from launch import torchrun

SCRIPT = Path(__file__).parent / "scripts" / "fsdp_growth.py"
# blocks per stage after each growth; MODEL:STRATEGY grows with STRATEGY (a growres model: transitions, explicit h)
MODELS = {"vit": [[4], [8]], "growres": [[4, 4, 4], [8, 8, 8]], "growres:stack": [[4, 4, 4], [8, 8, 8]]}
CHECKS = (  # right after each growth, on every rank (see the script), and the step after it
    "equals_unsharded_growth", "same_on_all_ranks", "all_sharded", "same_policy", "optimizer_holds_model",
    "groups_kept", "momentum_transplanted", "loss_equals_unsharded", "old_shards_freed",
    "new_params_got_gradients", "new_params_moved",
)


@pytest.mark.slow
def test_sharded_growth_reshards_transplants_state_and_resumes(tmp_path):
    report_path = tmp_path / "report.json"
    result = torchrun([str(SCRIPT), str(report_path), str(tmp_path / "checkpoints"), *MODELS])
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(report_path.read_text())
    assert report["world_size"] == 2
    assert report["refused"] == {"unmanaged": True, "strategy": True}
    for name, layers in MODELS.items():
        run = report[name]
        assert run["policy_read_back"], name  # the blocks' own fully_shard settings are what gets applied again
        assert [(g["step"], g["layers"]) for g in run["growths"]] == [(3, layers[0]), (6, layers[1])], name
        for growth in run["growths"]:
            assert [check for check in CHECKS if growth[check] is not True] == [], (name, growth["layers"])
            assert growth["new_params"]
        assert run["resume"] == {"layers": layers[1], "next_loss_equal": True, "next_params_equal": True}, name
