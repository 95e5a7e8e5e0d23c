"""Growth under real 2-process DDP (accelerate, gloo on CPU)."""
import json
from pathlib import Path

import pytest
from launch import accelerate_launch

pytestmark = pytest.mark.slow  # a 2-process launch

SCRIPT = Path(__file__).parent / "scripts" / "ddp_growth.py"


def test_growth_keeps_ddp_replicas_identical(tmp_path):
    report_path = tmp_path / "report.json"
    result = accelerate_launch([str(SCRIPT), str(report_path), str(tmp_path / "checkpoint")])
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(report_path.read_text())
    assert report["world_size"] == 2
    growths = report["growths"]
    assert [(g["step"], g["layers"], g["step_size"]) for g in growths] == [(4, [4, 4, 4], 0.5), (8, [8, 8, 8], 0.25)]
    for growth in growths:
        assert growth["wrapped"] == "DistributedDataParallel"
        assert growth["ddp_params"] == growth["num_params"]  # the new parameters are inside the DDP wrapper
        assert growth["mismatch"] is None  # every parameter and buffer equal across ranks right after growth
    assert report["final_mismatch"] is None  # parameters still equal after training on different shards
    assert report["new_blocks_moved"]
    assert report["checkpoint_roundtrip"]
    assert "model_1.safetensors" not in report["checkpoint_files"]
    assert "optimizer_1.bin" not in report["checkpoint_files"]
