"""Multi-level training with accelerate: the paper's recipe (Sections 4 and 5.2) as a run folder.

``growres train ...`` and ``accelerate launch examples/train.py ...`` are this module: arguments become a
:class:`TrainConfig`, and :func:`training_function` runs it, single process or DDP, writing the run folder
described in :mod:`growres.runs`.
"""
import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import time
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import timm.optim
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from safetensors import SafetensorError
from timm.models import get_pretrained_cfg_value
from timm.utils import ParseKwargs
from torch.utils.data import DataLoader, Sampler, TensorDataset
from tqdm.auto import tqdm

from .allocator import keep_freed_cpu_memory
from .data import DATASETS, ImageData, dataset_fingerprint, load_image_data
from .errors import GrowresError
from .growth import GROWTH_STRATEGIES, get_adapter, get_strategy
from .runs import RunFolder, export_model, write_text_atomic
from .scheduler import GrowthPlan, GrowthScheduler, unwrapped
from .time_saved import theoretical_time_saved

__all__ = [
    "TrainConfig", "training_function", "create_model_for_data", "add_train_arguments", "config_from_args",
    "train_command_parser",
]


def _arg(default: Any, help: str, **kwargs) -> Any:
    return field(default=default, metadata=dict(help=help, **kwargs))


@dataclass
class TrainConfig:
    """Everything a run needs. Defaults are the paper's recipe (Section 5.2); each field is a flag."""
    # what to train
    model: str = _arg("growres_resnet50i", "timm model name; growres_*i models grow by their own plan")
    model_kwargs: dict[str, Any] = field(default_factory=dict, metadata=dict(
        help="more timm.create_model arguments, KEY=VALUE ... (values read as Python literals, as timm's train.py), "
             "e.g. patch_size=4 embed_dim=96", parse="kwargs"))
    img_size: int | None = _arg(None, "input size N: the data is resized to NxN (per batch, on the device), and "
                                      "models built for one input size (ViTs) are built for it; default: the "
                                      "data's size")
    dataset: str = _arg("fashion-mnist", f"known dataset: {', '.join(DATASETS)} (Fashion-MNIST works offline)")
    dataset_id: str | None = _arg(None, "any image-classification dataset: a Hub id ORG/NAME, or a local "
                                        "save_to_disk folder or parquet folder (overrides --dataset)")
    image_column: str | None = _arg(None, "image column of --dataset-id (default: guessed)")
    label_column: str | None = _arg(None, "label column of --dataset-id (default: guessed)")
    max_train_samples: int | None = _arg(None, "use the first N training images (short runs)")
    max_eval_samples: int | None = _arg(None, "use the first N test images (short runs)")
    cache_dir: str | None = _arg(None, "where converted datasets are cached "
                                       "(default $GROWRES_CACHE or ~/.cache/growres)")
    # the multi-level schedule
    epochs: int = _arg(160, "training epochs (paper: 160)")
    cycles: tuple[int, ...] | None = _arg(None, "epochs where cycles start, e.g. 60,110 (paper); default: the "
                                                "paper's points scaled to --epochs", parse="ints")
    grow: bool | None = _arg(None, "grow at cycle starts (default: if the model plans growth; timm models: yes); "
                                   "--no-grow restarts the LR only, as the paper's baselines")
    strategy: str = _arg("copy", "interpolation strategy: " + "; ".join(
        f"{strategy.name}: {strategy.description}" for strategy in GROWTH_STRATEGIES))
    lr_restarts: bool = _arg(True, "restart the cosine LR at every cycle start (Eq. 9, the paper); --no-lr-restarts "
                                   "anneals once over the whole run and still grows at the cycle starts: the paper's "
                                   "ablation (Appendix D, Figure 10)")
    # optimisation (Section 5.2)
    opt: str = _arg("momentum", "timm optimizer name (create_optimizer_v2); paper (Section 5.2): SGD with classical "
                                "momentum 0.9, timm's 'momentum' ('sgd' is Nesterov)")
    lr_max: float = _arg(0.5, "η_max of the cyclic cosine LR, Eq. 9")
    lr_min: float = _arg(0.001, "η_min of the cyclic cosine LR, Eq. 9")
    momentum: float = _arg(0.9, "SGD momentum")
    smoothing: float = _arg(0.0, "label smoothing of the training loss")
    weight_decay: float = _arg(2e-4, "weight decay (not on norms and biases)")
    batch_size: int | None = _arg(None, "global batch size (default: the dataset's, 100 CIFAR, 32 STL-10)")
    eval_batch_size: int = _arg(500, "evaluation batch size")
    eval_every: int = _arg(1, "evaluate the test set every N epochs, and always at each cycle's end and the last "
                              "epoch (long runs on a large test set: a sparser curve, the same results)")
    grad_accum: int = _arg(1, "gradient accumulation steps")
    clip_grad: float | None = _arg(None, "clip the gradient norm to this value")
    drop_path_rate: float = _arg(0.0, "timm's stochastic depth rate (per-sample masks: every block is still "
                                      "computed; re-derived over the depth at each growth)")
    stochastic_depth: float = _arg(0.0, "real-skip stochastic depth of growres models (Huang et al. 2016): the last "
                                        "block's skip probability, linear over depth; a skipped block is not computed "
                                        "for the whole batch, eval scales each block by its survival probability. "
                                        "--stochastic-depth alone: 0.5, Huang et al.'s", const=0.5)
    model_ema: bool = _arg(False, "keep an EMA of the weights (grown with the model) and evaluate it")
    model_ema_decay: float = _arg(0.9998, "EMA decay")
    seed: int = _arg(0, "random seed")
    # speed
    mixed_precision: str = _arg("no", "accelerate mixed precision: no, fp16 or bf16 (bf16 works on CPU)")
    channels_last: bool = _arg(True, "channels-last memory format: the same fp32 math, 1.23-1.29x the images/s of "
                                     "contiguous on a 2-core CPU (benchmarks/README.md); --no-channels-last for off")
    compile: bool = _arg(False, "torch.compile the model (recompiled after each growth)")
    # outputs
    output_dir: str | None = _arg(None, "run folder (default runs/MODEL-DATASET)")
    overwrite: bool = _arg(False, "replace an existing run folder")
    checkpoint_every: str | None = _arg(None, "checkpoint every N optimizer steps, or 'epoch'")
    resume: str | None = _arg(None, "resume from a checkpoint folder, or 'latest' in --output-dir")
    log_with: str | None = _arg(None, "accelerate tracker: tensorboard, wandb, ... (comma-separated)")

    def __post_init__(self):
        if self.cycles is not None:
            self.cycles = tuple(self.cycles)
        self.model_kwargs = _json_safe_model_kwargs(self.model_kwargs)
        self.validate()

    def validate(self) -> None:
        """Every user mistake the config alone can show, before anything runs or is written."""
        def positive(name, value):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise GrowresError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}.")

        for name in ("epochs", "batch_size", "eval_batch_size", "eval_every", "grad_accum", "max_train_samples",
                     "max_eval_samples", "img_size"):
            positive(name, getattr(self, name))
        if not timm.is_model(self.model):
            raise GrowresError(f"Unknown model {self.model!r}: see `growres list` or timm.list_models().")
        if self.dataset_id is None and self.dataset not in DATASETS:
            raise GrowresError(f"Unknown dataset {self.dataset!r}: choose one of {', '.join(DATASETS)}, "
                               "or give --dataset-id ORG/NAME or a local path.")
        get_strategy(self.strategy)
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise GrowresError(f"--mixed-precision must be no, fp16 or bf16, got {self.mixed_precision!r}.")
        if not 0 <= self.lr_min <= self.lr_max or self.lr_max <= 0:
            raise GrowresError(f"Need 0 <= --lr-min <= --lr-max, --lr-max > 0; got {self.lr_min}, {self.lr_max}.")
        if self.checkpoint_every not in (None, "epoch") and not str(self.checkpoint_every).isdigit() \
                or str(self.checkpoint_every) == "0":
            raise GrowresError(f"--checkpoint-every takes a positive number of steps or 'epoch', "
                               f"got {self.checkpoint_every!r}.")
        if not 0 <= self.stochastic_depth < 1:
            raise GrowresError(f"--stochastic-depth (the last block's skip probability) must be in [0, 1), "
                               f"got {self.stochastic_depth}.")
        if self.stochastic_depth and self.model not in timm.list_models("growres_*"):
            raise GrowresError(f"--stochastic-depth skips whole blocks of growres models; {self.model} is not one: "
                               "use --drop-path-rate (timm's per-sample stochastic depth).")
        if not 0 <= self.smoothing < 1:
            raise GrowresError(f"--smoothing must be in [0, 1), got {self.smoothing}.")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise GrowresError(f"--clip-grad must be positive, got {self.clip_grad}.")
        if self.cycles is not None:
            GrowthPlan(cycles=self.cycles, total=self.epochs)  # order and range, in the plan's own words

    @property
    def dataset_name(self) -> str:
        return self.dataset_id or self.dataset

    @property
    def run_dir(self) -> Path:
        default = f"runs/{self.model}-{Path(self.dataset_name).name.replace('/', '-')}"
        return Path(self.output_dir or default)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# -- arguments ----------------------------------------------------------------------------------------


def _parse_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 60,110; got {text!r}") from None


class _ParseModelKwargs(ParseKwargs):
    """timm train.py's KEY=VALUE parse, with one clear message for an item that is not KEY=VALUE."""

    def __call__(self, parser, namespace, values, option_string=None):
        malformed = [value for value in values if value and "=" not in value]
        if malformed:
            raise GrowresError(f"{option_string} takes KEY=VALUE items (e.g. patch_size=4), got {malformed[0]!r}.")
        super().__call__(parser, namespace, values, option_string)


# set by growres from the data and its own flags; --model-kwargs must not contradict them
_DATA_MODEL_ARGS = {"num_classes": "the data's classes", "in_chans": "the data's channels", "img_size": "--img-size",
                    "drop_path_rate": "--drop-path-rate", "stochastic_depth": "--stochastic-depth"}


def _json_safe_model_kwargs(model_kwargs: Any) -> dict[str, Any]:
    """The --model-kwargs checked, with tuples as lists: the run's config.yaml, its checkpoints' identity and the
    exported config.json hold them, and must read back equal."""
    if model_kwargs is None:  # an empty `model_kwargs:` in a YAML file
        return {}
    if not isinstance(model_kwargs, dict) or not all(isinstance(key, str) for key in model_kwargs):
        raise GrowresError(f"model_kwargs must map argument names to values, got {model_kwargs!r}.")
    for key in model_kwargs:
        if key in _DATA_MODEL_ARGS:
            raise GrowresError(f"--model-kwargs {key}=... is set by growres from {_DATA_MODEL_ARGS[key]}; "
                               "drop it from --model-kwargs.")
    try:
        return json.loads(json.dumps(model_kwargs))
    except (TypeError, ValueError) as err:
        raise GrowresError(f"--model-kwargs values must be numbers, strings, booleans, None or lists of them: "
                           f"{err}.") from None


def _field_type(f: dataclasses.Field) -> type:
    """The non-None type of an ``X | None`` field."""
    hint = typing.get_type_hints(TrainConfig)[f.name]
    if isinstance(hint, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, plus --config. Flags default to None, so given ones win over the file."""
    parser.add_argument("--config", help="YAML file of TrainConfig fields; flags win over it")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = _field_type(f)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f.metadata["help"])
        elif f.metadata.get("parse") == "ints":
            parser.add_argument(flag, type=_parse_ints, default=None, help=f.metadata["help"])
        elif "const" in f.metadata:  # the flag alone gives `const`
            parser.add_argument(flag, type=kind, nargs="?", const=f.metadata["const"], default=None,
                                help=f"{f.metadata['help']} (default: {f.default})")
        elif f.metadata.get("parse") == "kwargs":
            parser.add_argument(flag, nargs="*", action=_ParseModelKwargs, default=None, metavar="KEY=VALUE",
                                help=f.metadata["help"])
        else:
            parser.add_argument(flag, type=kind, default=None, help=f"{f.metadata['help']} (default: {f.default})")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig defaults, overridden by the --config file, overridden by the flags given."""
    values: dict[str, Any] = {}
    if args.config:
        try:
            loaded = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise GrowresError(f"Cannot read the config file {args.config}: {err}") from None
        if not isinstance(loaded, dict):
            raise GrowresError(f"The config file {args.config} must hold a mapping of TrainConfig fields.")
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise GrowresError(f"Unknown keys in {args.config}: {', '.join(unknown)}.")
        values.update(loaded)
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None and k in
                   {f.name for f in dataclasses.fields(TrainConfig)}})
    return TrainConfig(**values)


def train_command_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="Train (and grow) a model; the same code as `accelerate launch examples/train.py`.",
        description="Multi-level training. Defaults are the paper's recipe; see README for the full recipes.",
    )
    add_train_arguments(parser)
    parser.set_defaults(func=train_command)


def train_command(args: argparse.Namespace) -> None:
    training_function(config_from_args(args))


# -- data order ---------------------------------------------------------------------------------------


class EpochPermutationSampler(Sampler[int]):
    """A fresh permutation every epoch, a function of (seed, epoch) alone, so a resumed run sees the same order.

    Its method is ``start_epoch``, not ``set_epoch``: accelerate's loaders call ``set_epoch`` with their
    own iteration count, which restarts at 0 in a resumed process.
    """

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


# -- the model ------------------------------------------------------------------------------------------


def create_model_for_data(name: str, data: ImageData, model_kwargs: dict[str, Any] | None = None,
                          drop_path_rate: float = 0.0, stochastic_depth: float = 0.0) -> nn.Module:
    """``timm.create_model`` for ``data``, as timm's train.py builds it: classes and channels from the data, the
    data's input size for models built for one size (``img_size``: ViTs), then ``model_kwargs``.

    A model that cannot take the data's size is refused here with one clear message, not deep inside training.
    """
    channels, height, width = data.input_size
    kwargs: dict[str, Any] = dict(num_classes=data.num_classes, in_chans=channels)
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    if stochastic_depth:  # an architecture argument: the exported model scales its blocks in eval by it too
        kwargs["stochastic_depth"] = stochastic_depth
    if get_pretrained_cfg_value(name, "fixed_input_size"):
        kwargs["img_size"] = height if height == width else (height, width)
    kwargs.update(model_kwargs or {})
    try:
        model = timm.create_model(name, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as err:  # an argument it does not take or refuses
        raise GrowresError(f"Cannot build {name} with {kwargs}: {_one_line(err)}") from None
    _check_input_size(model, name, data.input_size)
    return model


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def _check_input_size(model: nn.Module, name: str, input_size: tuple[int, int, int]) -> None:
    """One image through ``model`` (eval mode, no gradients): a size it cannot take fails now, with a way out."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=next(model.parameters()).device))
    except (RuntimeError, AssertionError, ValueError) as err:
        reductions = [info.get("reduction", 0) for info in getattr(model, "feature_info", []) if isinstance(info, dict)]
        stride = f" (its total stride is {max(reductions)})" if reductions else ""
        raise GrowresError(
            f"{name} cannot take {input_size[1]}x{input_size[2]} images{stride}: {_one_line(err)}. Resize the data "
            "with --img-size N, or build the model for this size with --model-kwargs."
        ) from None
    finally:
        model.train(was_training)


# -- the training function ------------------------------------------------------------------------------


def _check_run_dir(config: TrainConfig) -> None:
    run_dir = config.run_dir
    if config.resume or not run_dir.exists() or not any(run_dir.iterdir()):
        return
    if not config.overwrite:
        raise GrowresError(f"The run folder {run_dir} exists: pass --overwrite to replace it, "
                           "or --resume latest to continue it.")


def _find_checkpoint(config: TrainConfig) -> Path:
    if config.resume == "latest":
        checkpoints = RunFolder(config.run_dir).checkpoints()
        if not checkpoints:
            raise GrowresError(f"--resume latest: no checkpoint in {config.run_dir / 'checkpoints'}.")
        return checkpoints[-1]
    path = Path(config.resume)
    if not (path / "growth.json").is_file():
        raise GrowresError(f"--resume {path}: not a growres checkpoint (no growth.json).")
    return path


def _identity(config: TrainConfig, data: ImageData) -> dict[str, Any]:
    """What must match for a checkpoint to continue this run."""
    keys = ("model", "epochs", "cycles", "grow", "strategy", "seed", "batch_size", "grad_accum", "opt")
    values = config.to_dict()
    identity = {k: values[k] for k in keys}
    # only when given, so that checkpoints written before these flags existed still resume
    identity.update({k: values[k] for k in ("model_kwargs", "img_size", "stochastic_depth") if values[k]})
    return {"config": identity, "data": dataset_fingerprint(data)}


def _resolve_plan(config: TrainConfig, model: torch.nn.Module) -> GrowthPlan:
    planned = get_adapter(model).planned_interpolations(model)
    grow = config.grow if config.grow is not None else planned != 0
    if config.cycles is not None:
        plan = GrowthPlan(cycles=config.cycles, total=config.epochs, grow=grow)
    else:
        plan = GrowthPlan.paper(interpolations=planned or 2, total=config.epochs, grow=grow)
    return dataclasses.replace(plan, restart_lr=config.lr_restarts)


def evaluate(model, loader, data: ImageData, accelerator) -> tuple[float, float]:
    """Mean loss and accuracy over the whole eval set (all processes)."""
    model.eval()
    loss_sum = torch.zeros((), device=accelerator.device)
    correct = torch.zeros((), device=accelerator.device)
    count = torch.zeros((), device=accelerator.device)
    with torch.no_grad():
        for images, labels in loader:
            logits = model(data.normalize(images))
            logits, labels = accelerator.gather_for_metrics((logits, labels))
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
            correct += (logits.argmax(-1) == labels).sum()
            count += labels.numel()
    model.train()
    return (loss_sum / count).item(), (correct / count).item()


def plot_accuracy(run: RunFolder) -> None:
    """Train and test accuracy per epoch with the interpolations marked (paper Figure 6)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = run.metrics()
    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [100 * r["train_acc"] for r in rows], label="train")
    tested = [r for r in rows if r["test_acc"] is not None]  # --eval-every: not every epoch
    ax.plot([r["epoch"] for r in tested], [100 * r["test_acc"] for r in tested], label="test", marker=".")
    for i, record in enumerate(run.growth_records()):
        ax.axvline(record["epoch"], color="grey", linestyle="--", label="interpolation" if i == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{run.config().get('model')} on {run.config().get('dataset_name')}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run.plot_path.with_name(".tmp-accuracy.png"), dpi=120)
    plt.close(fig)
    os.replace(run.plot_path.with_name(".tmp-accuracy.png"), run.plot_path)


class _Run:
    """The mutable state of one training run: history, timings and the run folder's files."""

    def __init__(self, folder: RunFolder, accelerator):
        self.folder, self.accelerator = folder, accelerator
        self.history: list[dict[str, Any]] = []
        self.growth: list[dict[str, Any]] = []
        self.cycles: list[dict[str, Any]] = []
        self.train_seconds = 0.0  # training time of finished epochs (growth events included)
        self.epoch_seconds = 0.0  # of the epoch in progress
        # loss sum, correct, images of the epoch in progress (this process), kept on the device and read once
        # an epoch: reading them every step would stall a GPU's queue of kernels at every batch
        self.epoch_sums = self._sums([0.0, 0.0, 0.0])

    def _sums(self, values: list[float]) -> torch.Tensor:
        device = self.accelerator.device
        return torch.tensor(values, dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)

    def add_batch(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch to the epoch's sums, on the device (no host synchronisation)."""
        images = labels.numel()
        self.epoch_sums[0] += loss.detach().to(self.epoch_sums.dtype) * images
        self.epoch_sums[1] += (logits.argmax(-1) == labels).sum()
        self.epoch_sums[2] += images

    def state(self) -> dict[str, Any]:
        """The run's state for a checkpoint (collective: every process calls it)."""
        # each process keeps its own running sums of the epoch in progress
        sums = self.accelerator.gather(self.epoch_sums[None])
        state = {k: getattr(self, k) for k in ("history", "growth", "cycles", "train_seconds", "epoch_seconds")}
        return dict(state, epoch_sums_per_process=sums.tolist())

    def load(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.epoch_sums = self._sums(state.pop("epoch_sums_per_process")[self.accelerator.process_index])
        for key, value in state.items():
            setattr(self, key, value)

    def write_logs(self) -> None:
        if self.accelerator.is_main_process:
            write_text_atomic(self.folder.metrics_path, "".join(json.dumps(r) + "\n" for r in self.history))
            write_text_atomic(self.folder.growth_path, "".join(json.dumps(r) + "\n" for r in self.growth))


@contextlib.contextmanager
def _new_run_folder(folder: RunFolder, accelerator, replace: bool) -> Iterator[None]:
    """Create the run folder (emptied first if ``replace``); if the block fails, remove a folder it created."""
    created = not folder.path.exists()
    if accelerator.is_main_process:
        if replace and folder.path.exists():
            shutil.rmtree(folder.path)
            created = True
        folder.path.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    try:
        yield
    except BaseException:
        if created and accelerator.is_main_process:
            shutil.rmtree(folder.path, ignore_errors=True)
        raise


def _save_checkpoint(accelerator, run: _Run, scheduler: GrowthScheduler, identity: dict, epoch: int) -> None:
    """accelerate's state plus growth.json, renamed into place only when whole."""
    name = f"step-{scheduler.step_count:08d}"
    final = run.folder.checkpoints_dir / name
    tmp = run.folder.checkpoints_dir / f".tmp-{name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    run_state = run.state()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        growth = {"scheduler": scheduler.state_dict(), "epoch": epoch, "run": run_state, "identity": identity}
        (tmp / "growth.json").write_text(json.dumps(growth))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()


def training_function(config: TrainConfig) -> dict[str, Any]:
    """Train ``config.model`` by the multi-level method; returns the run's summary."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from timm.utils import ModelEmaV3

    # 1. Check the run folder before any process writes to it, then start accelerate
    _check_run_dir(config)
    keep_freed_cpu_memory()  # CPU steps re-use freed activations instead of page-faulting them in (growres.allocator)
    checkpoint = _find_checkpoint(config) if config.resume else None
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.grad_accum,
        log_with=config.log_with.split(",") if config.log_with else None,
        project_dir=str(config.run_dir),
        dynamo_backend="inductor" if config.compile else "no",
    )
    set_seed(config.seed)

    # 2. Data: uint8 tensors, augmented in batches on the device (Appendix A)
    with accelerator.main_process_first():
        data = load_image_data(
            config.dataset, dataset_id=config.dataset_id, image_column=config.image_column,
            label_column=config.label_column, max_train_samples=config.max_train_samples,
            max_eval_samples=config.max_eval_samples, cache_dir=config.cache_dir, image_size=config.img_size,
        )
    spec = DATASETS.get(config.dataset)
    if config.batch_size is None:
        config.batch_size = spec.batch_size if spec else 100
    if config.batch_size % accelerator.num_processes:
        raise GrowresError(f"--batch-size {config.batch_size} must be divisible by the "
                           f"{accelerator.num_processes} processes.")
    per_process_batch = config.batch_size // accelerator.num_processes
    sampler = EpochPermutationSampler(len(data.train_labels), config.seed)
    train_loader = DataLoader(TensorDataset(data.train_images, data.train_labels), per_process_batch, sampler=sampler)
    eval_loader = DataLoader(TensorDataset(data.test_images, data.test_labels), config.eval_batch_size)

    # 3. Model, optimizer (SGD, no weight decay on norms and biases), EMA
    if config.stochastic_depth and accelerator.num_processes > 1:
        raise GrowresError("--stochastic-depth runs in one process: every process would have to skip the same "
                           "blocks, and DDP to expect their missing gradients.")
    model = create_model_for_data(config.model, data, config.model_kwargs, config.drop_path_rate,
                                  config.stochastic_depth)
    get_adapter(model)  # a clear error now for a model growth does not know
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    try:
        optimizer = timm.optim.create_optimizer_v2(
            model, config.opt, lr=config.lr_max, momentum=config.momentum, weight_decay=config.weight_decay,
        )
    except (AssertionError, ValueError) as err:  # timm's unknown-optimizer check
        raise GrowresError(f"Cannot create optimizer {config.opt!r}: {err}") from None
    plan = _resolve_plan(config, model)
    config.cycles, config.grow = plan.cycles, plan.grow
    predicted_saving = theoretical_time_saved(plan, model, data.input_size)
    # the EMA copies the model before prepare() wraps its forward (a copied wrapper would call the live model)
    ema = ModelEmaV3(model, decay=config.model_ema_decay, device=accelerator.device) if config.model_ema else None
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

    # 4. The growth scheduler: cyclic cosine LR of Eq. 9 and interpolation at the cycle starts
    steps_per_epoch = math.ceil(len(train_loader) / config.grad_accum)
    scheduler = GrowthScheduler(
        model, optimizer, plan, steps_per_epoch=steps_per_epoch, strategy=config.strategy,
        lr_max=config.lr_max, lr_min=config.lr_min, ema=ema, accelerator=accelerator,
    )
    identity = _identity(config, data)
    saved = json.loads((checkpoint / "growth.json").read_text()) if checkpoint is not None else None
    if saved is not None and saved["identity"] != identity:
        raise GrowresError(f"Cannot resume from {checkpoint}: it belongs to another run "
                           f"({saved['identity']['config']['model']} on {saved['identity']['data']['name']}); "
                           f"this run is {config.model} on {data.name}.")

    # 5. The run folder, made only now that the run is set up; a failure before training starts removes it again
    folder = RunFolder(config.run_dir)
    with _new_run_folder(folder, accelerator, replace=config.overwrite and not config.resume):
        run = _Run(folder, accelerator)
        # Resume: rebuild the checkpoint's depth, then load weights, optimizer, RNG and EMA into it
        start_epoch = 0
        if saved is not None:
            scheduler.load_state_dict(saved["scheduler"])
            try:
                accelerator.load_state(str(checkpoint))
            except (OSError, RuntimeError, ValueError, SafetensorError) as err:  # missing, truncated, mismatched
                raise GrowresError(f"Cannot load the checkpoint {checkpoint}: {' '.join(str(err).split())}") from None
            run.load(saved["run"])
            start_epoch = scheduler.step_count // steps_per_epoch
            run.write_logs()
        if accelerator.is_main_process:
            write_text_atomic(folder.config_path, yaml.safe_dump(
                dict(config.to_dict(), dataset_name=data.name, num_classes=data.num_classes), sort_keys=False))
        if config.log_with:
            flat = {k: str(v) if isinstance(v, (list, tuple, dict)) or v is None else v
                    for k, v in config.to_dict().items()}  # trackers take scalars
            accelerator.init_trackers("growres", config=flat)

    # 6. Train: each epoch is a pass over a fresh permutation; growth happens inside scheduler.step()
    data_config = dict(input_size=data.input_size, mean=data.mean, std=data.std)
    for epoch in range(start_epoch, config.epochs):
        sampler.start_epoch(epoch)
        done = scheduler.step_count - epoch * steps_per_epoch  # optimizer steps already taken this epoch
        loader = accelerator.skip_first_batches(train_loader, done * config.grad_accum) if done else train_loader
        batches = len(train_loader) - done * config.grad_accum
        progress = tqdm(loader, total=batches, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                        disable=True if not accelerator.is_local_main_process else None)  # None: on a terminal
        clock = time.perf_counter()  # training time: batches and growth, not evaluation, export or checkpoints
        for batch_idx, (images, labels) in enumerate(progress):
            # Every batch's randomness (crops, flips, stochastic depth) is a function of (seed, batch, process)
            # alone, so a run resumed anywhere draws exactly what the uninterrupted run drew.
            batch_number = epoch * len(train_loader) + done * config.grad_accum + batch_idx
            torch.manual_seed((config.seed << 40) + (batch_number << 8) + accelerator.process_index)
            images = data.augment(images)
            if config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with accelerator.accumulate(scheduler.model):
                logits = scheduler.model(images)
                loss = F.cross_entropy(logits, labels, label_smoothing=config.smoothing)
                accelerator.backward(loss)
                if config.clip_grad and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(scheduler.model.parameters(), config.clip_grad)
                scheduler.optimizer.step()
                scheduler.optimizer.zero_grad()
            run.add_batch(loss, logits, labels)
            if not accelerator.sync_gradients:
                continue
            if ema is not None:
                ema.update(unwrapped(scheduler.model, accelerator))
            lr = scheduler.lr
            run.epoch_seconds += time.perf_counter() - clock
            if batch_idx == batches - 1:  # the epoch's last step: evaluate the model it trained, before growth
                due = (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs or scheduler.step_ends_cycle
                _end_epoch(run, scheduler, eval_loader if due else None, data, accelerator, ema, epoch, lr)
            if scheduler.step_ends_cycle:
                _end_cycle(run, scheduler, eval_loader, data, accelerator, data_config)
            clock = time.perf_counter()
            record = scheduler.step()
            if record is not None:
                run.growth.append(dataclasses.asdict(record))
                run.write_logs()
                accelerator.print(f"interpolated at epoch {record.epoch:g}: {record.layers} blocks, "
                                  f"h={record.step_size:g}, {record.num_params:,} parameters, {record.seconds:.2f}s")
            if config.checkpoint_every not in (None, "epoch") and \
                    scheduler.step_count % int(config.checkpoint_every) == 0:
                run.epoch_seconds += time.perf_counter() - clock
                _save_checkpoint(accelerator, run, scheduler, identity, epoch)
                clock = time.perf_counter()
        run.epoch_seconds += time.perf_counter() - clock
        run.train_seconds += run.epoch_seconds
        run.epoch_seconds = 0.0
        if config.checkpoint_every == "epoch":
            _save_checkpoint(accelerator, run, scheduler, identity, epoch + 1)

    # 7. The final model, the figure and the summary
    return _finish(run, scheduler, config, data, accelerator, data_config, predicted_saving)


def _end_epoch(run: _Run, scheduler, eval_loader, data, accelerator, ema, epoch: int, lr: float) -> None:
    """The epoch's row of metrics.jsonl; its test metrics are None when ``eval_loader`` is (not due, --eval-every)."""
    loss_sum, correct, seen = accelerator.reduce(run.epoch_sums.clone(), "sum").tolist()  # the epoch's one read
    test_loss, test_acc = evaluate(scheduler.model, eval_loader, data, accelerator) if eval_loader else (None, None)
    seconds = run.epoch_seconds
    row = {
        "epoch": epoch + 1, "step": scheduler.step_count + 1, "cycle": scheduler.cycle + 1,
        "train_loss": loss_sum / seen, "train_acc": correct / seen,
        "test_loss": test_loss, "test_acc": test_acc, "lr": lr,
        "layers": list(scheduler.layers), "step_size": scheduler.step_size,
        "num_params": sum(p.numel() for p in scheduler.model.parameters()),
        "epoch_seconds": seconds, "cumulative_seconds": run.train_seconds + seconds,
        "images_per_second": seen / seconds if seconds else None,
    }
    if ema is not None and eval_loader is not None:
        row["ema_test_loss"], row["ema_test_acc"] = evaluate(ema.module, eval_loader, data, accelerator)
    run.history.append(row)
    run.epoch_sums.zero_()
    run.write_logs()
    accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=epoch + 1)
    tested = f", test acc {test_acc:.4f}" if test_acc is not None else ""
    accelerator.print(f"epoch {epoch + 1}: train acc {row['train_acc']:.4f}{tested}, "
                      f"blocks {row['layers']}, h={row['step_size']:g}, {seconds:.1f}s")


def _end_cycle(run: _Run, scheduler, eval_loader, data, accelerator, data_config) -> None:
    """Export the model as it ends its cycle (before growth), with its test accuracy."""
    cycle = scheduler.cycle + 1
    if run.history and run.history[-1]["step"] == scheduler.step_count + 1:  # the epoch's evaluation just ran
        test_loss, test_acc = run.history[-1]["test_loss"], run.history[-1]["test_acc"]
    else:
        test_loss, test_acc = evaluate(scheduler.model, eval_loader, data, accelerator)
    info = {"cycle": cycle, "step": scheduler.step_count + 1, "layers": list(scheduler.layers),
            "step_size": scheduler.step_size, "test_loss": test_loss, "test_acc": test_acc,
            "train_seconds": run.train_seconds + run.epoch_seconds}
    run.cycles = [c for c in run.cycles if c["cycle"] != cycle] + [info]
    if accelerator.is_main_process:
        directory = run.folder.cycles_dir / f"cycle-{cycle}"
        export_model(unwrapped(scheduler.model, accelerator), directory, data_config)
        write_text_atomic(directory / "metrics.json", json.dumps(info, indent=2))
    accelerator.wait_for_everyone()


def _finish(run: _Run, scheduler, config: TrainConfig, data: ImageData, accelerator, data_config,
            predicted_saving: float) -> dict[str, Any]:
    model = unwrapped(scheduler.model, accelerator)
    final = run.history[-1]
    summary = {
        "model": config.model, "dataset": data.name, "num_classes": data.num_classes,
        "test_acc": final["test_acc"], "test_loss": final["test_loss"], "train_acc": final["train_acc"],
        "layers": final["layers"], "step_size": final["step_size"], "num_params": final["num_params"],
        "train_seconds": run.train_seconds, "epochs": config.epochs, "cycles": run.cycles,
        "growth": run.growth, "plan": dataclasses.asdict(scheduler.plan),
        "theoretical_time_saved": predicted_saving,  # from FLOPs, against the last-cycle model
        "world_size": accelerator.num_processes,
    }
    if accelerator.num_processes > 1:  # DDP must have kept every replica's parameters identical
        flat = torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])
        replicas = accelerator.gather(flat[None])
        summary["replicas_in_sync"] = bool((replicas == replicas[0]).all())
    if accelerator.is_main_process:
        export_model(model, run.folder.final_dir, data_config)
        write_text_atomic(run.folder.summary_path, json.dumps(summary, indent=2))
        plot_accuracy(run.folder)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    accelerator.print(
        f"{config.model} on {data.name}: test accuracy {100 * summary['test_acc']:.2f}% after "
        f"{config.epochs} epochs ({'-'.join(map(str, summary['layers']))} blocks, h={summary['step_size']:g}), "
        f"{summary['train_seconds']:.0f}s of training; results in {run.folder.path}/"
    )
    return summary
