"""Multi-level ResNets and Wide ResNets with an explicit step size

Paper: `Multi-level Residual Networks from Dynamical Systems View` - https://arxiv.org/abs/1710.10348
(Bo Chang, Lili Meng, Eldad Haber, Frederick Tung, David Begert; ICLR 2018)

A residual network is a forward-Euler discretisation of an ODE, ``Y_{j+1} = Y_j + h * F(Y_j)``.
These are the paper's CIFAR/STL-10 networks (Section 5.1, Appendix A, Table 5): a 3x3 stem, three
stages of pre-activation basic blocks with widths 16-32-64 (ResNet) or 32-64-128 (Wide ResNet), a
final BN-ReLU, global average pooling and a linear classifier. Depth is 6n + 2 for n blocks a stage.

The parameter counts of Table 5 pin the design down (tests/test_models.py checks every cell):
* the stem is a bias-free 3x3 conv to the first stage's width, so the first block of stage 1 keeps
  its shape;
* every block holds two BN-ReLU-conv3x3 units (bias-free convs);
* shortcuts have no parameters: a block that halves the resolution and doubles the channels
  subsamples its input and zero-pads the new channels ("option A" of He et al., 2016).

Step size h (Section 3.2, Appendix C): a block that keeps the shape of its input is a step of the ODE
and computes ``Y + h * G(Y)``. h is a buffer of that block, so it travels in every ``state_dict``, and
``model.step_size`` reads or sets it for the whole model. A block that changes the shape (the first
block of stages 2 and 3) is not a time step: it maps one ODE's state space onto the next one's.
Its ``h`` is fixed at 1 and interpolation never touches it, so what a downsampling block computes
does not change when the network is refined.

Multi-level models (``growres_*i``) are built at their first-cycle depth with h = 1 and carry their
growth plan (``model.growth_plan``) for :mod:`growres.growth` to follow.

Features (``feature_info``, ``features_only``, ``forward_intermediates``) are the stem's output and each stage's, as
in timm's ResNetV2: the final norm is not a tap of its own. Growth adds blocks within stages, so the taps stay.
"""
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import BatchNormAct2d, ClassifierHead, DropPath, get_device_dtype
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint_seq

from .errors import GrowresError

__all__ = ["MultilevelResNet", "PreActBasicBlock", "ZeroPadShortcut", "GrowthTarget"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class ZeroPadShortcut(nn.Module):
    """Parameter-free shortcut of a downsampling block: subsample, then zero-pad the new channels."""

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        self.stride = stride
        self.extra_chs = out_chs - in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_chs))


class PreActBasicBlock(nn.Module):
    """Pre-activation basic block, one forward-Euler step ``Y + h * G(Y)``.

    ``G`` is (BN-ReLU-conv3x3) twice. A block whose input and output shapes differ is a transition,
    not a time step: it keeps ``h = 1`` (see the module docstring).

    ``survival_prob`` < 1 is real-skip stochastic depth (Huang et al., 2016): in training the whole batch
    skips ``G`` (and its compute) with probability 1 - ``survival_prob``; in eval every block runs, with its
    residual scaled by its expected presence, ``Y + survival_prob * h * G(Y)``. The draw comes from torch's
    default CPU generator, so it follows ``torch.manual_seed`` and never waits on an accelerator.
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            stride: int = 1,
            step_size: float = 1.0,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.is_transition = stride != 1 or in_chs != out_chs
        self.norm1 = BatchNormAct2d(in_chs, **dd)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False, **dd)
        self.norm2 = BatchNormAct2d(out_chs, **dd)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False, **dd)
        self.shortcut = ZeroPadShortcut(in_chs, out_chs, stride) if self.is_transition else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.register_buffer("h", torch.tensor(1.0 if self.is_transition else float(step_size), **dd))
        self.survival_prob = 1.0  # set over the depth by MultilevelResNet.update_drop_path

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual module G (without h)."""
        return self.conv2(self.norm2(self.conv1(self.norm1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        if self.training and self.survival_prob < 1 and torch.rand(()).item() >= self.survival_prob:
            return shortcut  # skipped for the whole batch: no compute, no gradient for G
        residual = self.drop_path(self.residual(x))
        h = self.h if self.training or self.survival_prob == 1 else self.h * self.survival_prob
        return torch.addcmul(shortcut, h, residual)  # shortcut + h * residual, in one pass over memory


@dataclass(frozen=True)
class GrowthTarget:
    """Where a multi-level model is headed: the plan it carries as data."""
    interpolations: int  # interpolations still to come (each doubles the blocks and halves h)
    final_layers: tuple[int, ...]  # blocks per stage after the last interpolation
    final_step_size: float  # h after the last interpolation


def _check_per_stage(name: str, values: Sequence[int]) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise GrowresError(f"{name} must be a sequence with one positive integer per stage, e.g. (2, 2, 2), "
                           f"got {values!r}.")
    if any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in values):
        raise GrowresError(f"{name} must hold positive integers, one per stage, got {tuple(values)!r}.")
    return tuple(values)


def _check_step_size(step_size: float) -> float:
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not math.isfinite(step_size) \
            or step_size <= 0:
        raise GrowresError(f"step_size (h) must be a positive finite number, got {step_size!r}.")
    return float(step_size)


class MultilevelResNet(nn.Module):
    """Pre-activation ResNet for small images with an explicit, shared step size h.

    Args:
        layers: Blocks per stage (n-n-n for depth 6n + 2).
        widths: Channels per stage (16-32-64 ResNet, 32-64-128 Wide ResNet).
        step_size: h of every time-step block.
        interpolations: Interpolations the model is still planned to go through (multi-level models).
        num_classes: Classifier outputs.
        in_chans: Input image channels.
        global_pool: Global pooling type.
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth as timm has it (per-sample masks, every block computed), linear in
            the block index up to this rate.
        stochastic_depth: Real-skip stochastic depth (Huang et al., 2016): the probability that the last block
            is skipped for a whole training batch, falling linearly to the first (Huang et al.: 0.5). Skipped
            blocks cost nothing; eval scales each residual by its survival probability (see PreActBasicBlock).
        device: Device of the parameters and buffers (timm's factory kwargs, e.g. 'meta').
        dtype: Dtype of the parameters and buffers.
    """

    def __init__(
            self,
            layers: Sequence[int] = (2, 2, 2),
            widths: Sequence[int] = (16, 32, 64),
            step_size: float = 1.0,
            interpolations: int = 0,
            num_classes: int = 10,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            stochastic_depth: float = 0.,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        layers = _check_per_stage('layers', layers)
        widths = _check_per_stage('widths', widths)
        step_size = _check_step_size(step_size)
        if len(widths) != len(layers):
            raise GrowresError(f"layers {layers} and widths {widths} must name the same number of stages.")
        if not isinstance(interpolations, int) or interpolations < 0:
            raise GrowresError(f"interpolations must be a non-negative integer, got {interpolations!r}.")
        if isinstance(stochastic_depth, bool) or not isinstance(stochastic_depth, (int, float)) \
                or not 0 <= stochastic_depth < 1:
            raise GrowresError(f"stochastic_depth (the last block's skip probability) must be in [0, 1), "
                               f"got {stochastic_depth!r}.")
        self.widths = widths
        self.interpolations = interpolations
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.drop_path_rate = drop_path_rate
        self.stochastic_depth = float(stochastic_depth)
        self.grad_checkpointing = False

        self.stem = nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False, **dd)
        self.feature_info = [dict(num_chs=widths[0], reduction=1, module='stem')]
        stages = []
        prev_chs, reduction = widths[0], 1
        for stage_idx, (depth, chs) in enumerate(zip(layers, widths)):
            stride = 1 if stage_idx == 0 else 2
            reduction *= stride
            blocks = [
                PreActBasicBlock(prev_chs if i == 0 else chs, chs, stride if i == 0 else 1, step_size, **dd)
                for i in range(depth)
            ]
            stages.append(nn.Sequential(*blocks))
            prev_chs = chs
            self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=f'stages.{stage_idx}'))
        self.stages = nn.Sequential(*stages)
        # as in timm's ResNetV2, the final pre-activation norm is not a feature tap: it only follows the last stage
        # (forward_intermediates applies it to that stage's tap with norm=True)
        self.norm = BatchNormAct2d(prev_chs, **dd)
        self.num_features = self.head_hidden_size = prev_chs
        self.head = ClassifierHead(prev_chs, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self.update_drop_path()
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    # -- the ODE view ---------------------------------------------------------------------------
    # The properties are bookkeeping for Python (growth, export): torch.jit.unused keeps TorchScript, which compiles
    # a module's properties with the module, from compiling them (forward never reads them).

    @torch.jit.unused
    @property
    def layers(self) -> tuple[int, ...]:
        """Blocks per stage."""
        return tuple(len(stage) for stage in self.stages)

    def step_blocks(self) -> list[PreActBasicBlock]:
        """The blocks that are time steps of the ODE (every block that keeps its input's shape)."""
        return [b for stage in self.stages for b in stage if not b.is_transition]

    @torch.jit.unused
    @property
    def step_size(self) -> float:
        """h, the step size shared by every time-step block."""
        steps = {float(b.h) for b in self.step_blocks()}
        assert len(steps) <= 1, f"time-step blocks disagree on h: {sorted(steps)}"
        return steps.pop() if steps else 1.0

    @step_size.setter
    def step_size(self, value: float) -> None:
        value = _check_step_size(value)
        for block in self.step_blocks():
            block.h.fill_(value)

    @torch.jit.unused
    @property
    def growth_plan(self) -> GrowthTarget:
        """The model's own growth plan: interpolations left, final blocks per stage and final h."""
        scale = 2 ** self.interpolations
        return GrowthTarget(self.interpolations, tuple(n * scale for n in self.layers), self.step_size / scale)

    def update_drop_path(self) -> None:
        """(Re)derive both kinds of stochastic depth of every block over the current depth (after growth too).

        timm's rule for ``drop_path_rate`` (0 at the first block, the rate at the last); Huang et al.'s linear
        decay for ``stochastic_depth``: block l of L survives with probability 1 - l / L * stochastic_depth.
        """
        blocks = [b for stage in self.stages for b in stage]
        for idx, block in enumerate(blocks):
            rate = self.drop_path_rate * idx / max(len(blocks) - 1, 1)
            block.drop_path = DropPath(rate) if rate > 0. else nn.Identity()
            block.survival_prob = 1 - (idx + 1) / len(blocks) * self.stochastic_depth

    def update_feature_info(self) -> None:
        """Depth does not change channels or reductions; kept for the growth adapter's contract."""
        for info, chs in zip(self.feature_info[1:], self.widths):
            assert info['num_chs'] == chs

    # -- timm model interface -------------------------------------------------------------------

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r'^stem',
            blocks=r'^stages\.(\d+)' if coarse else [
                (r'^stages\.(\d+)\.(\d+)', None),
                (r'^norm', (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier, on the model's device and dtype; the pooling is kept if ``global_pool`` is None."""
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool, in_features=self.num_features, **get_device_dtype(self))
        self.head_hidden_size = self.head.num_features

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: int | list[int] | None = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Forward features that returns intermediates, as timm's ResNetV2.

        The taps are those of ``feature_info``: index 0 is the stem's output, index i the output of stage i - 1.
        Growth adds blocks within stages, so the taps (and their indices) are the same before and after it.

        Args:
            x: Input image tensor.
            indices: Take last n taps if int, all if None, select matching indices if sequence.
            norm: Apply the final norm to the last stage's tap (the only one it is sized and trained for).
            stop_early: Stop iterating over stages when the last desired tap is hit (not in TorchScript).
            output_fmt: Shape of intermediate feature outputs.
            intermediates_only: Only return intermediate features.

        Returns:
            Features and list of intermediate features or just intermediate features.
        """
        assert output_fmt in ('NCHW',), 'Output shape must be NCHW.'
        intermediates = []
        # the stem and every stage; counted from widths, which pruning does not shorten, so indices keep their meaning
        last_idx = len(self.widths)
        take_indices, max_index = feature_take_indices(last_idx + 1, indices)

        feat_idx = 0
        x = self.stem(x)
        if feat_idx in take_indices:
            intermediates.append(x)
        # if-blocks, not conditional expressions: TorchScript drops the arm of an if-block that is_scripting() rules
        # out, so neither the Sequential slice nor checkpoint_seq (neither of which it compiles) is compiled
        if torch.jit.is_scripting() or not stop_early:  # noqa: SIM108
            stages = self.stages
        else:
            stages = self.stages[:max_index]
        for feat_idx, stage in enumerate(stages, start=1):
            if self.grad_checkpointing and not torch.jit.is_scripting():  # noqa: SIM108
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
            if feat_idx in take_indices:
                intermediates.append(self.norm(x) if norm and feat_idx == last_idx else x)

        if intermediates_only:
            return intermediates

        if feat_idx == last_idx:
            x = self.norm(x)

        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: int | list[int] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> list[int]:
        """Prune layers not required for specified intermediates, as timm's ResNetV2.

        Args:
            indices: Indices of intermediate layers to keep.
            prune_norm: Whether to prune the final norm.
            prune_head: Whether to prune the classifier head.

        Returns:
            List of indices that were kept.
        """
        take_indices, max_index = feature_take_indices(len(self.widths) + 1, indices)
        prune_end = max_index < len(self.widths)
        if prune_norm or prune_end:
            self.norm = nn.Identity()  # sized for (and only applied to) the last stage
        self.stages = self.stages[:max_index]  # the stem is tap 0, so tap i ends stages[:i]
        if prune_end:
            # the features now end at the last kept tap; the head is sized for the final features, so it goes too
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.stages, x)
        else:
            x = self.stages(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.forward_head(x)


def _create_multilevel_resnet(variant: str, pretrained: bool = False, **kwargs) -> MultilevelResNet:
    return build_model_with_cfg(
        MultilevelResNet,
        variant,
        pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)),
        **kwargs,
    )


def _cfg(url: str = '', **kwargs) -> dict[str, Any]:
    return {
        'url': url,
        'num_classes': 10,
        'input_size': (3, 32, 32),
        'pool_size': (8, 8),
        'crop_pct': 1.0,
        'interpolation': 'bilinear',
        'mean': CIFAR10_MEAN,
        'std': CIFAR10_STD,
        'first_conv': 'stem',
        'classifier': 'head.fc',
        'license': 'apache-2.0',
        'paper_ids': 'arXiv:1710.10348',
        'paper_name': 'Multi-level Residual Networks from Dynamical Systems View',
        **kwargs,
    }


# One config per entrypoint, read by @register_model: CIFAR-sized inputs and normalisation.
# STL-10 (96x96) and other datasets work through the same config: pooling is global.
default_cfgs = generate_default_cfgs({
    f'growres_{name}': _cfg()
    for name in (
        'resnet14', 'resnet32', 'resnet50', 'resnet122', 'wrn14', 'wrn32', 'wrn50', 'wrn122',
        'resnet50i', 'resnet122i', 'wrn50i', 'wrn122i',
    )
})

RESNET_WIDTHS = (16, 32, 64)
WIDE_RESNET_WIDTHS = (32, 64, 128)


def _model_args(n: int, widths: tuple[int, ...], overrides: dict[str, Any], interpolations: int = 0) -> dict[str, Any]:
    """A registered model's defaults; every one of them can be overridden through create_model."""
    return {'layers': (n, n, n), 'widths': widths, 'step_size': 1.0, 'interpolations': interpolations, **overrides}


@register_model
def growres_resnet14(pretrained: bool = False, **kwargs) -> MultilevelResNet:
    """ResNet-14 (2-2-2 blocks, h=1): the first-cycle model of ResNet-50-i."""
    return _create_multilevel_resnet('growres_resnet14', pretrained, **_model_args(2, RESNET_WIDTHS, kwargs))


@register_model
def growres_resnet32(pretrained: bool = False, **kwargs) -> MultilevelResNet:
    """ResNet-32 (5-5-5 blocks, h=1): the first-cycle model of ResNet-122-i."""
    return _create_multilevel_resnet('growres_resnet32', pretrained, **_model_args(5, RESNET_WIDTHS, kwargs))


@register_model
def growres_resnet50(pretrained: bool = False, **kwargs) -> MultilevelResNet:
    """ResNet-50 (8-8-8 blocks): the last-cycle model of ResNet-50-i."""
    return _create_multilevel_resnet('growres_resnet50', pretrained, **_model_args(8, RESNET_WIDTHS, kwargs))


@register_model
def growres_resnet122(pretrained: bool = False, **kwargs) -> MultilevelResNet:
    """ResNet-122 (20-20-20 blocks): the last-cycle model of ResNet-122-i."""
    return _create_multilevel_resnet('growres_resnet122', pretrained, **_model_args(20, RESNET_WIDTHS, kwargs))


@register_model
def growres_wrn14(pretrained: bool = False, **kwargs) -> MultilevelResNet:
    """Wide ResNet-14 (2-2-2 blocks, widths 32-64-128)."""
    return _create_multilevel_resnet('growres_wrn14', pretrained, **_model_args(2, WIDE_RESNET_WIDTHS, kwargs))


@register_model
def growres_wrn32(pretrained: bool = False, **kwargs) -> MultilevelResNet:
    """Wide ResNet-32 (5-5-5 blocks, widths 32-64-128)."""
    return _create_multilevel_resnet('growres_wrn32', pretrained, **_model_args(5, WIDE_RESNET_WIDTHS, kwargs))


@register_model
def growres_wrn50(pretrained: bool = False, **kwargs) -> MultilevelResNet:
    """Wide ResNet-50 (8-8-8 blocks, widths 32-64-128)."""
    return _create_multilevel_resnet('growres_wrn50', pretrained, **_model_args(8, WIDE_RESNET_WIDTHS, kwargs))


@register_model
def growres_wrn122(pretrained: bool = False, **kwargs) -> MultilevelResNet:
    """Wide ResNet-122 (20-20-20 blocks, widths 32-64-128)."""
    return _create_multilevel_resnet('growres_wrn122', pretrained, **_model_args(20, WIDE_RESNET_WIDTHS, kwargs))


@register_model
def growres_resnet50i(pretrained: bool = False, **kwargs) -> MultilevelResNet:
    """ResNet-50-i: starts 2-2-2 at h=1, interpolated twice to 8-8-8 at h=0.25."""
    model_args = _model_args(2, RESNET_WIDTHS, kwargs, interpolations=2)
    return _create_multilevel_resnet('growres_resnet50i', pretrained, **model_args)


@register_model
def growres_resnet122i(pretrained: bool = False, **kwargs) -> MultilevelResNet:
    """ResNet-122-i: starts 5-5-5 at h=1, interpolated twice to 20-20-20 at h=0.25."""
    model_args = _model_args(5, RESNET_WIDTHS, kwargs, interpolations=2)
    return _create_multilevel_resnet('growres_resnet122i', pretrained, **model_args)


@register_model
def growres_wrn50i(pretrained: bool = False, **kwargs) -> MultilevelResNet:
    """Wide ResNet-50-i: starts 2-2-2 at h=1, interpolated twice to 8-8-8 at h=0.25."""
    model_args = _model_args(2, WIDE_RESNET_WIDTHS, kwargs, interpolations=2)
    return _create_multilevel_resnet('growres_wrn50i', pretrained, **model_args)


@register_model
def growres_wrn122i(pretrained: bool = False, **kwargs) -> MultilevelResNet:
    """Wide ResNet-122-i: starts 5-5-5 at h=1, interpolated twice to 20-20-20 at h=0.25."""
    model_args = _model_args(5, WIDE_RESNET_WIDTHS, kwargs, interpolations=2)
    return _create_multilevel_resnet('growres_wrn122i', pretrained, **model_args)
