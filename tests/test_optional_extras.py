"""growres without its optional extras: ``import growres`` and growth work when transformers is not installed."""
import subprocess
import sys

WITHOUT_TRANSFORMERS = """
import sys
sys.modules["transformers"] = None  # what an environment without the package gives: import transformers fails
import growres, timm
model = timm.create_model("resnet18", num_classes=10)
growres.interpolate(model)
assert growres.get_adapter(model).name == "timm-resnet"
assert "transformers" not in sys.modules or sys.modules["transformers"] is None
print("ok")
"""


def test_growres_imports_and_grows_without_transformers():
    result = subprocess.run([sys.executable, "-c", WITHOUT_TRANSFORMERS], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
