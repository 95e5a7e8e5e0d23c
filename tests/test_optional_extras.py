"""growres without its optional extras: ``import growres`` and growth work when transformers or Lightning is not
installed, and ``import growres`` does not import Lightning."""
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


WITHOUT_LIGHTNING = """
import sys
sys.modules["lightning"] = None  # an environment without the growres[lightning] extra
import growres, growres.integrations, timm
model = timm.create_model("resnet18", num_classes=10)
growres.interpolate(model)
try:
    import growres.integrations.lightning
except ImportError:  # only the integration itself needs Lightning
    print("ok")
"""

IMPORTED = """
import sys
import growres, growres.integrations
print(sorted(name for name in ("lightning", "pytorch_lightning", "lightning.pytorch") if name in sys.modules))
"""


def test_growres_imports_and_grows_without_lightning():
    result = subprocess.run([sys.executable, "-c", WITHOUT_LIGHTNING], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


def test_import_growres_does_not_import_lightning_even_where_installed():
    result = subprocess.run([sys.executable, "-c", IMPORTED], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
