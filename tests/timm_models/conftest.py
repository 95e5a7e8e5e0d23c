"""Run timm's own model tests (test_models.py, pinned from timm 1.0.31) on growres' models.

timm has no plugin discovery: growres registers its models when it is imported, so it is imported here, before
pytest imports test_models.py, whose parametrize lists read timm's registry at collection time.
"""
import growres  # noqa: F401  (registers the growres_* models with timm)

# The markers timm's pyproject.toml registers for this file, and pytest-timeout's, which timm's CI has.
_MARKERS = {
    "base": "timm: model tests using the basic setup",
    "forward": "timm: the per-model forward tests",
    "backward": "timm: the per-model backward tests",
    "cfg": "timm: model tests checking the config",
    "cfg_nonstd": "timm: non-standard model config tests (also marked cfg)",
    "torchscript": "timm: model tests using torchscript",
    "features": "timm: model tests checking feature extraction",
    "fxforward": "timm: model tests using torch fx (only forward)",
    "fxbackward": "timm: model tests using torch fx (only backward)",
    "timeout": "pytest-timeout's per-test limit (a no-op without that plugin)",
}


def pytest_configure(config):
    for name, description in _MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
