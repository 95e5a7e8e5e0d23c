"""The dynamical-systems analysis of residual networks (Chang et al., ICLR 2018, Section 3 and Appendix C).

A residual block maps its input ``Y_j`` to ``S(Y_j) + G(Y_j)``: ``S`` is the block's identity path (the identity,
or the shortcut of a block that changes the shape) and ``G = h F`` the residual module. Viewed as forward Euler
steps of an ODE (Section 3.1), the network's blocks are time steps of size ``h``; this module measures what that
view predicts:

* :func:`residual_norms` (Section 3.3, Figure 4): per block, the mean over images of ``||Y_j||`` and
  ``||G(Y_j)||``. ``G`` is measured as the block's output minus its identity path, so it includes ``h`` and, for a
  post-activation block, the final activation: it is exactly what removing the block takes away.
* :func:`gamma_fit` (Section 3.2, Figure 3): ``γ = mean_j ||G(Y_j)||`` against the number of blocks ``d`` for
  models of several depths, fitted by least squares with ``γ = c / d``, the form Eq. 5 predicts (``||G|| = (T/d)
  ||F||``, no offset), and the fit's coefficient of determination R².
* :func:`step_function_norms` (Appendix C, Figure 7): for models with an explicit step size, ``||F(Y_j)|| =
  ||G(Y_j)|| / h`` at conceptual time ``t_j = j h``, so models of different depths overlay.
* :func:`lesion_study` (Section 3.3, after Veit et al. 2016): test accuracy with each block removed (its output
  replaced by its identity path), optionally every pair of blocks of a stage, and with a stage's time-step blocks
  shuffled, next to ``||G||`` of what was removed: Eq. 8 says removing a block changes the features by its ``G``.

Everything works through a model's :class:`growres.GrowthAdapter` (stages, transitions, shortcut), so growres
models, timm ResNets and VisionTransformers are covered. The model given is never changed: the analyses run in
eval mode and restore each module's mode, measure and remove blocks through forward hooks that they remove again,
and shuffle a deep copy. ``growres analyze`` (:func:`analyze_command`) writes the tables and figures.
"""
import argparse
import contextlib
import copy
import csv
import dataclasses
import io
import itertools
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import timm
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from .data import ImageData, load_image_data
from .errors import GrowresError
from .growth import GrowthAdapter, get_adapter, stage_layers, uncompiled
from .runs import TMP_PREFIX, RunFolder, write_text_atomic
from .train import TrainConfig, create_model_for_data

__all__ = [
    "BlockNorm", "GammaFit", "Lesion", "LesionStudy", "StepPoint", "gamma", "gamma_fit", "lesion_study",
    "residual_norms", "shuffle_stage", "step_function_norms", "without_blocks",
    "analyze_command_parser", "analyze_command",
]

# An ImageData is analysed on its test split, normalised with its mean and std; anything else is iterated as
# (inputs, labels) batches ready for the model (a DataLoader, a list of tensor pairs).
Data = ImageData | Iterable[tuple[torch.Tensor, torch.Tensor]]
DEFAULT_BATCH_SIZE = 500


@dataclass(frozen=True)
class BlockNorm:
    """Section 3.3, Figure 4: one block's mean input norm and mean residual norm over the images."""
    name: str  # the block's module path, e.g. "stages.1.0"
    stage: int
    index: int  # in its stage
    block: int  # j: its position over the whole network
    transition: bool  # changes the shape: a map between stages, not a time step
    input_norm: float  # mean over images of ||Y_j||
    residual_norm: float  # mean over images of ||G(Y_j)|| = ||block(Y_j) - shortcut(Y_j)|| (h included)
    # residual_norm / input_norm: G against the features it updates, comparable across stages of different scales
    relative_norm: float


@dataclass(frozen=True)
class StepPoint:
    """Appendix C, Figure 7: ||F(Y_j)|| at the conceptual time t_j = j h."""
    name: str
    block: int  # j
    t: float
    transition: bool
    f_norm: float  # ||G(Y_j)|| / h; a transition's G is its F (its h is 1, see step_function_norms)


@dataclass(frozen=True)
class GammaFit:
    """Section 3.2, Figure 3: γ against the number of blocks d, fitted by γ = c / d with least squares.

    One coefficient, no offset: Eq. 5 (||G|| = (T/d) ||F||) has none, and over the three or so depths one trains,
    a second parameter would leave R² nothing to judge.
    """
    depths: tuple[int, ...]
    gammas: tuple[float, ...]
    c: float
    # 1 - SS_res / SS_tot around the mean γ; below 0 when c / d fits worse than a constant; nan if all γ are equal
    r2: float

    @classmethod
    def from_points(cls, depths: Sequence[int], gammas: Sequence[float]) -> "GammaFit":
        if len(depths) != len(gammas):
            raise GrowresError(f"Got {len(depths)} depths but {len(gammas)} values of γ: give one γ per depth.")
        _require_depths(depths)
        inverse = [1.0 / d for d in depths]
        # least squares for one coefficient: c minimises Σ (γ_i - c / d_i)²
        c = sum(x * g for x, g in zip(inverse, gammas)) / sum(x * x for x in inverse)
        mean = sum(gammas) / len(gammas)
        ss_res = sum((g - c * x) ** 2 for x, g in zip(inverse, gammas))
        ss_tot = sum((g - mean) ** 2 for g in gammas)
        r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
        return cls(tuple(depths), tuple(float(g) for g in gammas), c, r2)

    def predict(self, depth: float) -> float:
        return self.c / depth


@dataclass(frozen=True)
class Lesion:
    """One lesion of Section 3.3 and the test accuracy it leaves."""
    kind: str  # "drop" (one block), "drop-pair" (two blocks of a stage), "shuffle" (a stage's time steps permuted)
    stage: int
    blocks: tuple[str, ...]  # drops: the removed blocks; shuffle: the stage's blocks in their new order
    accuracy: float
    residual_norm: float | None  # drops: Σ ||G(Y_j)|| of the removed blocks in the intact model; shuffle: None
    relative_norm: float | None  # drops: Σ ||G(Y_j)|| / ||Y_j|| of the removed blocks; shuffle: None


@dataclass(frozen=True)
class LesionStudy:
    intact_accuracy: float
    norms: list[BlockNorm]  # of the intact model, measured in the same pass as its accuracy
    lesions: list[Lesion]

    def rank_correlation(self, relative: bool = False) -> float:
        """Spearman's ρ between ||G|| (or ||G|| / ||Y||) of the removed block and the accuracy drop, over
        single-block drops.

        Eq. 8 predicts it positive: removing a block changes the features by that block's G. nan when either
        side is constant.
        """
        drops = [lesion for lesion in self.lesions if lesion.kind == "drop"]
        sizes = [d.relative_norm if relative else d.residual_norm for d in drops]
        return _pearson(_ranks(sizes), _ranks([self.intact_accuracy - d.accuracy for d in drops]))


# -- blocks, hooks and evaluation ----------------------------------------------------------------------


class _Block(NamedTuple):
    name: str
    stage: int
    index: int
    block: int
    transition: bool
    module: nn.Module


def _adapter(model: nn.Module) -> GrowthAdapter:
    adapter = get_adapter(model)
    if adapter.shortcut is None:
        raise GrowresError(f"The growth adapter {adapter.name!r} does not say what a block's identity path is, which "
                           "the analyses need: register it with shortcut=lambda block, x: ... .")
    return adapter


def _blocks(model: nn.Module, adapter: GrowthAdapter) -> list[_Block]:
    names = {module: name for name, module in model.named_modules()}
    blocks = []
    for stage_idx, stage in enumerate(adapter.stages(model)):
        for idx, block in enumerate(stage):
            blocks.append(_Block(names[block], stage_idx, idx, len(blocks), adapter.is_transition(block), block))
    return blocks


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm must not update its statistics), then every module's own mode back."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def _forward_hooks(hooks: Iterable[tuple[nn.Module, Callable]]) -> Iterator[None]:
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _image_norms(features: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each image's feature map (or token sequence)."""
    return features.detach().flatten(1).float().norm(dim=1)


def _evaluate(model: nn.Module, data: Data, batch_size: int, desc: str) -> float:
    """Test accuracy of ``model`` as it is (mode, hooks) on ``data``."""
    if isinstance(data, ImageData):
        loader, prepare = DataLoader(TensorDataset(data.test_images, data.test_labels), batch_size), data.normalize
    else:
        loader, prepare = data, lambda images: images
    device = next(model.parameters()).device
    correct = total = 0
    with torch.no_grad():
        for images, labels in tqdm(loader, desc=desc, disable=None, leave=False):
            logits = model(prepare(images.to(device)))
            correct += (logits.argmax(-1) == labels.to(device)).sum().item()
            total += len(labels)
    if total == 0:
        raise GrowresError("There are no test images to analyse.")
    return correct / total


class _NormRecorder:
    """Forward hooks summing, per block, the per-image norms of its input Y_j and of G(Y_j)."""

    def __init__(self, blocks: list[_Block], shortcut: Callable[[nn.Module, torch.Tensor], torch.Tensor]):
        self.blocks = blocks
        self.shortcut = shortcut
        self.input_sums = [0.0] * len(blocks)
        self.residual_sums = [0.0] * len(blocks)
        self.counts = [0] * len(blocks)

    def hooks(self) -> list[tuple[nn.Module, Callable]]:
        return [(block.module, self._hook(block.block)) for block in self.blocks]

    def _hook(self, j: int) -> Callable:
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            x = inputs[0]
            self.input_sums[j] += _image_norms(x).sum().item()
            self.residual_sums[j] += _image_norms(output - self.shortcut(module, x)).sum().item()
            self.counts[j] += len(x)
        return record

    def norms(self) -> list[BlockNorm]:
        norms = []
        for b in self.blocks:
            input_norm = self.input_sums[b.block] / self.counts[b.block]
            residual_norm = self.residual_sums[b.block] / self.counts[b.block]
            norms.append(BlockNorm(b.name, b.stage, b.index, b.block, b.transition, input_norm, residual_norm,
                                   residual_norm / input_norm))
        return norms


def _measure(model: nn.Module, data: Data, batch_size: int) -> tuple[list[BlockNorm], float]:
    """One pass over the data: every block's norms, and the model's test accuracy."""
    model = uncompiled(model)  # a compiled graph would bypass the hooks
    adapter = _adapter(model)
    recorder = _NormRecorder(_blocks(model, adapter), adapter.shortcut)
    with _eval_mode(model), _forward_hooks(recorder.hooks()):
        accuracy = _evaluate(model, data, batch_size, "norms")
    return recorder.norms(), accuracy


# -- the analyses -------------------------------------------------------------------------------------


def residual_norms(model: nn.Module, data: Data, batch_size: int = DEFAULT_BATCH_SIZE) -> list[BlockNorm]:
    """Section 3.3, Figure 4: mean ||Y_j|| and ||G(Y_j)|| over the test images, for every block in forward order."""
    return _measure(model, data, batch_size)[0]


def gamma(norms: Sequence[BlockNorm]) -> float:
    """Section 3.2: γ = (1/d) Σ_j ||G(Y_j)||, the mean residual norm over the d blocks."""
    return sum(n.residual_norm for n in norms) / len(norms)


def _require_depths(depths: Sequence[int]) -> None:
    if len(set(depths)) < 2:
        raise GrowresError(f"γ against depth needs models of at least two different depths, got {list(depths)} "
                           "blocks.")


def gamma_fit(models: Sequence[nn.Module], data: Data, batch_size: int = DEFAULT_BATCH_SIZE) -> GammaFit:
    """Section 3.2, Figure 3: γ of each model against its number of blocks d, fitted by γ = c / d."""
    return _fit_gamma([(model, data) for model in models], batch_size)


def _fit_gamma(subjects: Sequence[tuple[nn.Module, Data]], batch_size: int) -> GammaFit:
    """gamma_fit, each model evaluated on its own data (the CLI normalises the data the way each model wants)."""
    depths = [sum(stage_layers(model)) for model, _ in subjects]
    _require_depths(depths)  # before the evaluations
    return GammaFit.from_points(depths, [gamma(residual_norms(model, data, batch_size)) for model, data in subjects])


def _explicit_step_size(model: nn.Module) -> float:
    """The model's explicit h (Appendix C), or a GrowresError for a model without one."""
    model = uncompiled(model)  # a compiled graph would bypass the hooks
    h = _adapter(model).step_size(model)
    if h is None:
        raise GrowresError(f"{type(model).__name__} has no explicit step size h, so ||F|| = ||G||/h over "
                           "conceptual time (Appendix C) is not defined for it; use the norms or gamma analysis.")
    return float(h)


def step_function_norms(model: nn.Module, data: Data, batch_size: int = DEFAULT_BATCH_SIZE) -> list[StepPoint]:
    """Appendix C, Figure 7: ||F(Y_j)|| = ||G(Y_j)|| / h at t_j = j h, for a model with an explicit h.

    A transition block is not a time step: its h stays 1 (growth never rescales it), so its F is its G, and a
    deeper discretisation of the same model shows the same value there.
    """
    h = _explicit_step_size(model)
    return [
        StepPoint(n.name, n.block, n.block * h, n.transition, n.residual_norm / (1.0 if n.transition else h))
        for n in residual_norms(model, data, batch_size)
    ]


@contextlib.contextmanager
def without_blocks(model: nn.Module, blocks: Iterable[nn.Module]) -> Iterator[nn.Module]:
    """Inside the ``with`` statement, ``blocks`` of ``model`` output their identity path only (a lesion, Section 3.3).

    For a transition that is its shortcut, which changes the shape the way the block does. The model's mode is
    left as it is: call it in eval mode to measure what the paper measures.
    """
    model = uncompiled(model)  # a compiled graph would bypass the hooks
    adapter = _adapter(model)
    known = {b.module for b in _blocks(model, adapter)}
    blocks = list(blocks)
    if any(block not in known for block in blocks):
        raise GrowresError("without_blocks takes residual blocks of the model's stages (see growres.get_adapter).")
    with _forward_hooks((block, lambda module, inputs, output: adapter.shortcut(module, inputs[0]))
                        for block in blocks):
        yield model


def shuffle_stage(model: nn.Module, stage: int, order: Sequence[int]) -> nn.Module:
    """A deep copy of ``model`` whose stage ``stage`` runs its blocks in ``order`` (old indices, new positions).

    Transitions must stay where they are: only time steps can trade places (Section 3.3).
    """
    model = uncompiled(model)  # a compiled graph would bypass the hooks
    adapter = _adapter(model)
    blocks = list(adapter.stages(model)[stage])
    if sorted(order) != list(range(len(blocks))):
        raise GrowresError(f"order must be a permutation of the {len(blocks)} block indices of stage {stage}.")
    if any(adapter.is_transition(blocks[old]) and old != new for new, old in enumerate(order)):
        raise GrowresError("A shuffle must keep the transition blocks in place: they change the shape.")
    shuffled = copy.deepcopy(model)
    container = adapter.stages(shuffled)[stage]
    old_blocks = list(container)
    for (name, _), old in zip(list(container.named_children()), order):
        setattr(container, name, old_blocks[old])
    return shuffled


def _drop_groups(blocks: list[_Block], pairs: bool) -> Iterator[tuple[_Block, ...]]:
    yield from ((block,) for block in blocks)
    if pairs:
        for _, stage_blocks in itertools.groupby(blocks, key=lambda b: b.stage):
            yield from itertools.combinations(list(stage_blocks), 2)


def _shuffle_orders(stage_blocks: list[_Block], count: int, generator: torch.Generator) -> list[list[int]]:
    """Up to ``count`` distinct orders of a stage that permute its time-step blocks (never the identity)."""
    movable = [b.index for b in stage_blocks if not b.transition]
    orders: list[list[int]] = []
    while len(orders) < min(count, math.factorial(len(movable)) - 1):
        perm = torch.randperm(len(movable), generator=generator).tolist()
        order = list(range(len(stage_blocks)))
        for position, source in zip(movable, perm):
            order[position] = movable[source]
        if perm != sorted(perm) and order not in orders:
            orders.append(order)
    return orders


def lesion_study(model: nn.Module, data: Data, *, pairs: bool = False, shuffles: int = 0, seed: int = 0,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> LesionStudy:
    """Section 3.3: test accuracy with each block removed, optionally each pair of a stage, and shuffled stages.

    Args:
        pairs: also remove every pair of blocks within a stage.
        shuffles: permutations of each stage's time-step blocks to evaluate (drawn from ``seed``, distinct, on a
            deep copy); a stage with fewer than two time-step blocks has none.
    """
    model = uncompiled(model)  # a compiled graph would bypass the hooks
    blocks = _blocks(model, _adapter(model))
    norms, intact = _measure(model, data, batch_size)
    lesions = []
    with _eval_mode(model):
        for group in _drop_groups(blocks, pairs):
            with without_blocks(model, [b.module for b in group]):
                accuracy = _evaluate(model, data, batch_size, "drop " + "+".join(b.name for b in group))
            removed = [norms[b.block] for b in group]
            lesions.append(Lesion("drop" if len(group) == 1 else "drop-pair", group[0].stage,
                                  tuple(n.name for n in removed), accuracy, sum(n.residual_norm for n in removed),
                                  sum(n.relative_norm for n in removed)))
    generator = torch.Generator().manual_seed(seed)
    for stage, stage_blocks in itertools.groupby(blocks, key=lambda b: b.stage):
        stage_blocks = list(stage_blocks)
        for order in _shuffle_orders(stage_blocks, shuffles, generator):
            shuffled = shuffle_stage(model, stage, order).eval()
            accuracy = _evaluate(shuffled, data, batch_size, f"shuffle stage {stage}")
            lesions.append(Lesion("shuffle", stage, tuple(stage_blocks[i].name for i in order), accuracy, None, None))
    return LesionStudy(intact, norms, lesions)


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank (as Spearman's ρ needs)."""
    ordered = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    position = 0
    for _, group in itertools.groupby(ordered, key=lambda i: values[i]):
        group = list(group)
        for i in group:
            ranks[i] = position + (len(group) + 1) / 2
        position += len(group)
    return ranks


def _pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


# -- growres analyze ----------------------------------------------------------------------------------

_DATA_FLAGS = ("dataset", "dataset_id", "image_column", "label_column", "max_eval_samples", "cache_dir")


@dataclass(frozen=True)
class _Source:
    """A MODEL argument: what to load, and the dataset settings it brings."""
    text: str  # as given
    label: str  # short name for tables and legends
    uri: str | None  # for timm.create_model(uri, pretrained=True); None: a timm name, built with random weights
    data_settings: dict[str, Any]  # a run folder's config.yaml dataset settings; empty for other sources


@dataclass(frozen=True)
class _Subject:
    """A loaded model, with the test data it is analysed on (normalised with its own statistics)."""
    label: str
    source: str
    model: nn.Module
    data: ImageData

    def describe(self) -> str:
        layers = "-".join(map(str, stage_layers(self.model)))
        h = _adapter(self.model).step_size(self.model)
        return f"{self.label} ({layers} blocks{'' if h is None else f', h={h:g}'})"


@dataclass(frozen=True)
class _Report:
    """What one analysis writes (NAME.csv, NAME.json, NAME.png) and prints."""
    rows: list[dict[str, Any]]
    meta: dict[str, Any]
    figure: Any  # a matplotlib Figure
    lines: list[str]


def _parse_source(text: str) -> _Source:
    if text.startswith("hf-hub:"):
        return _Source(text, text.rsplit("/", 1)[-1], text, {})
    if text.startswith("local-dir:"):
        path = Path(text[len("local-dir:"):])
        if not (path / "config.json").is_file():
            raise GrowresError(f"No exported model at {path}: local-dir: takes a folder with config.json and "
                               "model.safetensors.")
        return _Source(text, path.resolve().name, text, {})
    path = Path(text)
    if path.is_dir():
        run = RunFolder(path)
        if not run.config_path.is_file():
            raise GrowresError(f"{path} is not a growres run folder (it has no config.yaml); for an exported model "
                               f"folder, pass local-dir:{path}.")
        settings = run.require().config()
        return _Source(text, path.resolve().name, f"local-dir:{run.final_dir}",
                       {name: settings.get(name) for name in _DATA_FLAGS})
    if timm.is_model(text):
        return _Source(text, text, None, {})
    raise GrowresError(f"Unknown model {text!r}: give a run folder, local-dir:PATH, hf-hub:ORG/NAME or a timm model "
                       "name.")


def _data_settings(args: argparse.Namespace, sources: list[_Source]) -> dict[str, Any]:
    """Flags win; then the first run folder's settings, unless --dataset or --dataset-id names other data;
    then growres train's defaults."""
    other_data = args.dataset is not None or args.dataset_id is not None
    recorded = {} if other_data else next((s.data_settings for s in sources if s.data_settings), {})
    return {
        name: getattr(args, name) if getattr(args, name) is not None else recorded.get(name, getattr(TrainConfig, name))
        for name in _DATA_FLAGS
    }


def _load_subject(source: _Source, label: str, data: ImageData) -> _Subject:
    if source.uri is None:
        model, stats = create_model_for_data(source.text, data), (data.mean, data.std)
    else:
        try:
            model = timm.create_model(source.uri, pretrained=True)
        except (OSError, RuntimeError) as err:  # missing files, the Hub unreachable, weights of another shape
            raise GrowresError(f"Cannot load {source.text}: {' '.join(str(err).split())}") from None
        # an exported model records the statistics it was trained with (a growres run: its data's)
        stats = (model.pretrained_cfg.get("mean", data.mean), model.pretrained_cfg.get("std", data.std))
        # and the input size (a run with --img-size: its data resized), which the test images are resized to
        size = model.pretrained_cfg.get("input_size")
        if size and tuple(size[1:]) != tuple(data.test_images.shape[2:]):
            data = dataclasses.replace(data, image_size=size[-1])
    _adapter(model)
    classes = getattr(model, "num_classes", data.num_classes)
    if classes != data.num_classes:
        raise GrowresError(f"{source.text} predicts {classes} classes but {data.name} has {data.num_classes}: pass "
                           "the data it was trained on with --dataset or --dataset-id.")
    return _Subject(label, source.text, model, dataclasses.replace(data, mean=tuple(stats[0]), std=tuple(stats[1])))


def _load_subjects(args: argparse.Namespace) -> list[_Subject]:
    sources = [_parse_source(text) for text in args.models]
    if args.analysis == "gamma" and len(sources) < 2:
        raise GrowresError("gamma fits γ against depth: give at least two models of different depths.")
    settings = _data_settings(args, sources)
    data = load_image_data(
        settings["dataset"], dataset_id=settings["dataset_id"], image_column=settings["image_column"],
        label_column=settings["label_column"], max_eval_samples=settings["max_eval_samples"],
        cache_dir=settings["cache_dir"],
        # only the test split is analysed; the training images give the statistics of a model that records none
        max_train_samples=None if any(s.uri is None for s in sources) else 1,
    )
    short = [s.label for s in sources]
    labels = short if len(set(short)) == len(short) else [s.text for s in sources]
    return [_load_subject(source, label, data) for source, label in zip(sources, labels)]


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: an undefined statistic is written as null."""
    return None if math.isnan(value) else value


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _largest(norms: list[BlockNorm], field: str, count: int = 3) -> str:
    top = sorted(norms, key=lambda n: getattr(n, field), reverse=True)[:count]
    rest = sorted(getattr(n, field) for n in norms if n not in top)
    named = ", ".join(f"{n.name}{' (transition)' if n.transition else ''} {getattr(n, field):.3g}" for n in top)
    return named + (f"; median of the other {len(rest)} blocks {rest[len(rest) // 2]:.3g}" if rest else "")


def _norms_report(subjects: list[_Subject], args: argparse.Namespace) -> _Report:
    plt = _pyplot()
    fig, axes = plt.subplots(len(subjects), 1, figsize=(7, 3.2 * len(subjects)), squeeze=False)
    rows, models, lines = [], [], []
    for subject, ax in zip(subjects, axes[:, 0]):
        norms, accuracy = _measure(subject.model, subject.data, args.batch_size)
        rows += [dict(model=subject.label, **dataclasses.asdict(n)) for n in norms]
        models.append(dict(model=subject.label, source=subject.source, test_accuracy=accuracy, gamma=gamma(norms)))
        lines += [f"{subject.describe()}: test accuracy {accuracy:.2%}, gamma {gamma(norms):.4g}",
                  f"  largest ||G(Y_j)||: {_largest(norms, 'residual_norm')}",
                  f"  largest ||G(Y_j)||/||Y_j||: {_largest(norms, 'relative_norm')}"]
        _plot_norms(ax, subject, norms)
    fig.tight_layout()
    return _Report(rows, dict(analysis="norms", models=models), fig, lines)


def _plot_norms(ax, subject: _Subject, norms: list[BlockNorm]) -> None:
    blocks = [n.block for n in norms]
    ax.plot(blocks, [n.input_norm for n in norms], "o-", markersize=3, label=r"$\|Y_j\|$ (block input)")
    ax.plot(blocks, [n.residual_norm for n in norms], "s-", markersize=3, label=r"$\|G(Y_j)\|$ (residual module)")
    for n in norms:
        if n.index == 0 and n.block > 0:
            ax.axvline(n.block - 0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("block j (dashed: stage boundaries)")
    ax.set_ylabel("mean L2 norm")
    ax.set_title(subject.describe())
    ax.legend(fontsize=8)


def _gamma_report(subjects: list[_Subject], args: argparse.Namespace) -> _Report:
    fit = _fit_gamma([(s.model, s.data) for s in subjects], args.batch_size)
    depths, gammas = fit.depths, fit.gammas
    rows = [dict(model=s.label, source=s.source, blocks=d, gamma=g, fitted=fit.predict(d))
            for s, d, g in zip(subjects, depths, gammas)]
    lines = [f"{s.describe()}: d = {d} blocks, gamma = {g:.4g}" for s, d, g in zip(subjects, depths, gammas)]
    lines.append(f"least-squares fit gamma = c/d: c = {fit.c:.4g}, R^2 = {fit.r2:.3f}")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(depths, gammas, "o", label="models")
    for s, d, g in zip(subjects, depths, gammas):
        ax.annotate(s.label, (d, g), textcoords="offset points", xytext=(4, 4), fontsize=8)
    grid = [min(depths) + i * (max(depths) - min(depths)) / 100 for i in range(101)]
    ax.plot(grid, [fit.predict(d) for d in grid], "-", label=f"c/d, c={fit.c:.3g}, R²={fit.r2:.3f}")
    ax.set_xlabel("residual blocks d")
    ax.set_ylabel(r"$\gamma$ = mean $\|G(Y_j)\|$")
    ax.legend()
    fig.tight_layout()
    meta = dict(analysis="gamma", fit="gamma = c / d (least squares)", c=fit.c, r2=_finite_or_none(fit.r2))
    return _Report(rows, meta, fig, lines)


def _time_report(subjects: list[_Subject], args: argparse.Namespace) -> _Report:
    steps = {s.label: _explicit_step_size(s.model) for s in subjects}  # refuse before any evaluation runs
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    rows, lines = [], []
    for subject in subjects:
        points = step_function_norms(subject.model, subject.data, args.batch_size)
        rows += [dict(model=subject.label, h=steps[subject.label], **dataclasses.asdict(p)) for p in points]
        ax.plot([p.t for p in points], [p.f_norm for p in points], "o-", markersize=3, label=subject.describe())
        peak = max(points, key=lambda p: p.f_norm)
        lines.append(f"{subject.describe()}: ||F(Y_j)|| over t in [0, {points[-1].t:g}]: mean "
                     f"{sum(p.f_norm for p in points) / len(points):.4g}, largest {peak.f_norm:.4g} at t = {peak.t:g} "
                     f"({peak.name})")
    ax.set_yscale("log")
    ax.set_xlabel(r"conceptual time $t_j = j h$")
    ax.set_ylabel(r"$\|F(Y_j)\| = \|G(Y_j)\| / h$")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _Report(rows, dict(analysis="time", step_sizes=steps), fig, lines)


def _lesion_report(subjects: list[_Subject], args: argparse.Namespace) -> _Report:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    rows, models, lines = [], [], []
    for subject in subjects:
        study = lesion_study(subject.model, subject.data, pairs=args.pairs, shuffles=args.shuffles, seed=args.seed,
                             batch_size=args.batch_size)
        rows += [dict(model=subject.label, accuracy_drop=study.intact_accuracy - lesion.accuracy,
                      **dataclasses.asdict(lesion)) for lesion in study.lesions]
        models.append(dict(model=subject.label, source=subject.source, intact_accuracy=study.intact_accuracy,
                           rank_correlation=_finite_or_none(study.rank_correlation()),
                           relative_rank_correlation=_finite_or_none(study.rank_correlation(relative=True))))
        lines += _lesion_lines(subject, study)
        for ax, relative in zip(axes, (False, True)):
            _plot_lesions(ax, subject, study, relative)
    axes[0].set_xlabel(r"$\|G(Y_j)\|$ of the removed blocks (intact model)")
    axes[1].set_xlabel(r"$\|G(Y_j)\| / \|Y_j\|$ of the removed blocks")
    axes[0].set_ylabel("test accuracy drop (points)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return _Report(rows, dict(analysis="lesion", models=models), fig, lines)


def _lesion_lines(subject: _Subject, study: LesionStudy) -> list[str]:
    lines = [f"{subject.describe()}: intact test accuracy {study.intact_accuracy:.2%}; over single-block drops, "
             f"Spearman rho(accuracy drop, ||G||) = {study.rank_correlation():.3f}, "
             f"rho(accuracy drop, ||G||/||Y||) = {study.rank_correlation(relative=True):.3f}"]
    for kind in ("drop", "drop-pair"):
        worst = sorted((x for x in study.lesions if x.kind == kind), key=lambda x: x.accuracy)[:3]
        if worst:
            lines.append(f"  largest effects of {kind}: " + ", ".join(
                f"{'+'.join(x.blocks)} (||G|| {x.residual_norm:.3g}, ||G||/||Y|| {x.relative_norm:.3g}) -> "
                f"{x.accuracy:.2%}" for x in worst))
    for stage, group in itertools.groupby((x for x in study.lesions if x.kind == "shuffle"), key=lambda x: x.stage):
        accuracies = [x.accuracy for x in group]
        lines.append(f"  shuffled stage {stage}: accuracy {min(accuracies):.2%} to {max(accuracies):.2%} over "
                     f"{len(accuracies)} permutations")
    return lines


def _plot_lesions(ax, subject: _Subject, study: LesionStudy, relative: bool) -> None:
    """Accuracy drop against the size of what was removed; transitions named."""
    transitions = {n.name for n in study.norms if n.transition}
    for kind, marker in (("drop", "o"), ("drop-pair", ".")):
        chosen = [x for x in study.lesions if x.kind == kind]
        sizes = [x.relative_norm if relative else x.residual_norm for x in chosen]
        drops = [100 * (study.intact_accuracy - x.accuracy) for x in chosen]
        if chosen:
            ax.scatter(sizes, drops, marker=marker, label=f"{subject.label}: {kind}")
        for lesion, size, drop in zip(chosen, sizes, drops):
            if kind == "drop" and lesion.blocks[0] in transitions:
                ax.annotate(lesion.blocks[0], (size, drop), textcoords="offset points", xytext=(4, 4), fontsize=7)


_ANALYSES: dict[str, tuple[Callable[[list[_Subject], argparse.Namespace], _Report], str]] = {
    "norms": (_norms_report, "mean ||Y_j|| and ||G(Y_j)|| per block (Section 3.3, Figure 4)"),
    "gamma": (_gamma_report, "γ = mean ||G(Y_j)|| against depth d, fitted by c/d (Section 3.2, Figure 3); "
                             "two or more models"),
    "time": (_time_report, "||F(Y_j)|| = ||G||/h over conceptual time t = j h (Appendix C, Figure 7); "
                           "models with an explicit h"),
    "lesion": (_lesion_report, "test accuracy with blocks removed or shuffled, next to their ||G|| (Section 3.3)"),
}


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: " ".join(v) if isinstance(v, tuple) else v for k, v in row.items()})
    return buffer.getvalue()


def _save_figure(fig, path: Path) -> None:
    """Render to a temporary file beside ``path`` and rename it into place, as write_text_atomic does."""
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name, dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=120)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        _pyplot().close(fig)


def _write_report(report: _Report, out: Path, name: str) -> list[Path]:
    paths = [out / f"{name}.csv", out / f"{name}.json", out / f"{name}.png"]
    write_text_atomic(paths[0], _csv_text(report.rows))
    write_text_atomic(paths[1], json.dumps(dict(report.meta, rows=report.rows), indent=2) + "\n")
    _save_figure(report.figure, paths[2])
    return paths


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``minimum``."""
    def parse(text: str) -> int:
        if not text.lstrip("-").isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return int(text)
    return parse


def _common_arguments() -> argparse.ArgumentParser:
    """The flags every analysis takes: models, data (as `growres train`), batch size, output folder."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help="a run folder (its final model and dataset settings), local-dir:PATH, hf-hub:ORG/NAME, "
                             "or a timm model name (random weights, for quick checks)")
    for f in dataclasses.fields(TrainConfig):
        if f.name in _DATA_FLAGS:
            parser.add_argument("--" + f.name.replace("_", "-"), type=int if f.name == "max_eval_samples" else str,
                                default=None, help=f.metadata["help"])
    parser.add_argument("--batch-size", type=_int_at_least(1), default=DEFAULT_BATCH_SIZE,
                        help=f"evaluation batch size (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--output-dir", required=True, help="where the CSV, JSON and PNG files are written")
    return parser


_DATA_NOTE = ("Data: the test split of --dataset/--dataset-id, else of a run folder's dataset (its config.yaml), "
              "else Fashion-MNIST; images are normalised with the mean and std a run or export recorded (for a timm "
              "model name, the data's).")


def analyze_command_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "analyze", help="Dynamical-systems analysis of trained models: residual norms, γ, F over time, lesions.",
        description="The analyses of Section 3 and Appendix C of the paper, on the test split; each writes "
                    "ANALYSIS.csv, ANALYSIS.json and ANALYSIS.png into --output-dir.",
    )
    analyses = parser.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    common = _common_arguments()
    for name, (_, help_text) in _ANALYSES.items():
        sub = analyses.add_parser(name, parents=[common], help=help_text, description=help_text + ". " + _DATA_NOTE)
        if name == "lesion":
            sub.add_argument("--pairs", action="store_true", help="also remove every pair of blocks within a stage")
            sub.add_argument("--shuffles", type=_int_at_least(0), default=3,
                             help="permutations of each stage's time-step blocks to evaluate (default 3; 0: none)")
            sub.add_argument("--seed", type=int, default=0, help="seed of the permutations (default 0)")
    parser.set_defaults(func=analyze_command)


def analyze_command(args: argparse.Namespace) -> None:
    report_fn, _ = _ANALYSES[args.analysis]
    report = report_fn(_load_subjects(args), args)
    out = Path(args.output_dir)
    paths = _write_report(report, out, args.analysis)
    print("\n".join(report.lines))
    print(f"wrote {', '.join(str(p) for p in paths)}")
