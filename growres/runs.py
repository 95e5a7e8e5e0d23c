"""A training run's folder: its layout, atomic writes, and the timm export of grown models.

    RUN/
      config.yaml          the resolved training config
      metrics.jsonl        one row per epoch (train/test loss and accuracy, lr, blocks, h, seconds, images/s)
      growth.jsonl         one row per interpolation (step, epoch, blocks, h, parameters, seconds)
      summary.json         the run's result, written at the end
      accuracy.png         train/test accuracy per epoch, interpolations marked (paper Figure 6)
      final/               model.safetensors + config.json: timm.create_model("local-dir:RUN/final", pretrained=True)
      cycles/cycle-K/      the same for the model at the end of cycle K, plus metrics.json
      checkpoints/step-N/  accelerate state + growth.json, for --resume

Every file and folder appears whole or not at all: it is written under a temporary name in the same
folder and renamed into place, so a run killed at any moment leaves nothing half-written that a reader
(or ``--resume latest``) would pick up.
"""
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch.nn as nn
import yaml
from safetensors.torch import save_file
from timm.models._hub import save_config_for_hf

from .errors import GrowresError
from .growth import get_adapter

__all__ = ["RunFolder", "atomic_dir", "write_text_atomic", "export_model", "model_args"]

TMP_PREFIX = ".tmp-"


def _default_mode(directory: bool) -> int:
    """What open()/mkdir() would give under the current umask (mkstemp/mkdtemp give 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name, dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode(directory=False))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + path.name, dir=path.parent))
    try:
        yield tmp
        tmp.chmod(_default_mode(directory=True))
        if path.exists():
            old = path.with_name(TMP_PREFIX + path.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def model_args(model: nn.Module) -> dict[str, Any]:
    """The architecture arguments that rebuild ``model`` at its current depth through timm.create_model."""
    adapter = get_adapter(model)
    args = dict(getattr(model, "_model_args", {}))
    if adapter.name == "growres":
        args.update(layers=list(model.layers), step_size=model.step_size, interpolations=model.interpolations)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}


def export_model(model: nn.Module, directory: Path, data_config: dict[str, Any] | None = None) -> None:
    """timm's Hub layout (model.safetensors + config.json with the grown architecture), written atomically.

    As timm's ``save_for_hf`` with safetensors, but with contiguous tensors, so channels-last models export too.
    """
    with atomic_dir(Path(directory)) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
        save_config_for_hf(model, tmp / "config.json", model_args=model_args(model), data_config=data_config)


class RunFolder:
    """Read access to a run folder (see the module docstring for the layout)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.yaml")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    growth_path = property(lambda self: self.path / "growth.jsonl")
    summary_path = property(lambda self: self.path / "summary.json")
    plot_path = property(lambda self: self.path / "accuracy.png")
    final_dir = property(lambda self: self.path / "final")
    cycles_dir = property(lambda self: self.path / "cycles")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")

    def require(self) -> "RunFolder":
        """This folder, if it is a finished run; else a clear error."""
        if not self.path.is_dir():
            raise GrowresError(f"No run folder at {self.path}.")
        if not (self.final_dir / "model.safetensors").is_file() or not (self.final_dir / "config.json").is_file():
            raise GrowresError(f"{self.path} has no final model (final/model.safetensors + final/config.json): "
                               "is the run finished?")
        return self

    def config(self) -> dict[str, Any]:
        return yaml.safe_load(self.config_path.read_text()) if self.config_path.is_file() else {}

    @staticmethod
    def _jsonl(path: Path) -> list[dict[str, Any]]:
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def metrics(self) -> list[dict[str, Any]]:
        return self._jsonl(self.metrics_path)

    def pace_per_cycle(self) -> dict[int, dict[str, Any]]:
        """Per cycle, its blocks per stage and its training speed: the cycle's images over its seconds (epochs of
        different lengths weigh by their time, not one each)."""
        totals: dict[int, dict[str, Any]] = {}
        for row in self.metrics():
            cycle = totals.setdefault(row["cycle"], {"layers": row["layers"], "images": 0.0, "seconds": 0.0})
            cycle["images"] += row["images_per_second"] * row["epoch_seconds"]
            cycle["seconds"] += row["epoch_seconds"]
        return {c: {"layers": t["layers"], "images_per_second": t["images"] / t["seconds"]} for c, t in totals.items()}

    def growth_records(self) -> list[dict[str, Any]]:
        return self._jsonl(self.growth_path)

    def summary(self) -> dict[str, Any]:
        return json.loads(self.summary_path.read_text()) if self.summary_path.is_file() else {}

    def cycle_dirs(self) -> list[Path]:
        """Exported end-of-cycle models, in cycle order."""
        if not self.cycles_dir.is_dir():
            return []
        dirs = [d for d in self.cycles_dir.iterdir() if d.name.startswith("cycle-") and d.is_dir()]
        return sorted(dirs, key=lambda d: int(d.name.split("-")[1]))

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (temporary folders of an interrupted save are not listed)."""
        if not self.checkpoints_dir.is_dir():
            return []
        dirs = [d for d in self.checkpoints_dir.iterdir() if d.name.startswith("step-") and d.is_dir()]
        return sorted(dirs, key=lambda d: int(d.name.split("-")[1]))
