"""Interpolation: the multi-level method's model surgery (paper Section 4.1, Figure 5, Appendix B).

``interpolate(model)`` inserts, right after every residual block of every stage, a copy of that block
(parameters *and* normalisation running statistics), then halves the step size h. Solving the same ODE
on a grid twice as fine, the grown network starts close to the function the shallow one learned.

Growth works on any model whose residual blocks sit in stages, through a :class:`GrowthAdapter` that
says where the stages are, which blocks are transitions (change the shape, so are not time steps), how
to scale a residual branch exactly, and how to refresh the model's bookkeeping. Adapters for growres'
own models, timm's ResNets and timm's VisionTransformer are registered here; others are added with
:func:`register_adapter`.

Rules every adapter follows:
* a transition block (the first block of a stage that changes resolution or channels) is never copied
  and its branch is never rescaled; the block inserted after it copies the next old block (Appendix B);
* a stage made of one transition block has no block of its shape to copy: interpolation refuses such
  a model, before touching it, with a message naming the stage.

How the new blocks are placed and how branches and h are scaled is a :class:`GrowthStrategy`, a row of
data in :data:`GROWTH_STRATEGIES` (by name: :data:`STRATEGIES`). Every strategy makes the same new blocks,
one per old block, copied from the sources above, so every stage doubles:

* ``copy`` (the paper): each block followed by its copy, h halved;
* ``identity``: the same layout, each new branch zeroed and each old time step's doubled, h halved: the grown
  model computes exactly what the shallow one did;
* ``stack`` (G_stack, Du et al., "Stacking Your Transformers", NeurIPS 2024): each stage's blocks followed by
  the new blocks in the same order (blocks 0..L-1, 0..L-1), nothing rescaled, h unchanged. A stage that starts
  with a transition T is not repeated whole (a second T would see its output shape): its new blocks are those
  ``copy`` makes, in order, so [T, b1, b2] becomes [T, b1, b2, b1', b1', b2'];
* ``copy-unscaled``: ``copy``'s layout with nothing rescaled and h unchanged (next to ``copy``, the effect of
  halving h; next to ``stack``, the effect of the order of the blocks).

A placement that would put a new block behind another transition than its source's (possible only with a
transition after a stage's first block, which no built-in adapter has) is refused before anything changes.
"""
import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
from timm.layers import DropPath
from timm.models._input import update_model_args

from .errors import GrowresError
from .multilevel_resnet import MultilevelResNet

try:  # FSDP2's public home since torch 2.6
    from torch.distributed.fsdp import FSDPModule
except ImportError:  # older torch, or a build without torch.distributed: nothing is sharded with FSDP2
    class FSDPModule:
        """Stand-in of which no module is an instance."""

__all__ = [
    "GrowthAdapter", "GrowthStrategy", "GROWTH_STRATEGIES", "STRATEGIES", "get_strategy", "interpolate", "grow",
    "register_adapter", "registered_adapters", "get_adapter", "stage_layers", "state_dict_layers", "grow_to",
    "uncompiled", "module_class", "is_sharded", "scale_layer",
]


def interleave(old: list, new: list) -> list:
    """Each old block followed by the new block made for it: [b0, b0', b1, b1', ...]."""
    return [block for pair in zip(old, new, strict=True) for block in pair]


def after_stage(old: list, new: list) -> list:
    """The stage's old blocks, then the new ones in the same order: [b0, b1, ..., b0', b1', ...]."""
    return [*old, *new]


@dataclass(frozen=True)
class GrowthStrategy:
    """One interpolation strategy, as data: where the new blocks go and how residual branches and h are scaled.

    The new blocks are the same for every strategy (one per old block, copied as Appendix B says); a strategy
    only places and scales them. Scales multiply a block's branch through its adapter's ``scale_branch``; a
    transition's branch is never rescaled, and a new block is never a transition.
    """
    name: str
    placement: Callable[[list, list], list]  # (a stage's old blocks, the new block for each) -> the grown stage
    new_branch_scale: float  # multiplies every new block's branch
    old_branch_scale: float  # multiplies every old time-step block's branch
    step_factor: float  # multiplies h: the explicit h where the model has one, else every time step's branch
    description: str  # one line, for `growres list --strategies` and `growres train --help`


GROWTH_STRATEGIES = (
    GrowthStrategy("copy", interleave, 1.0, 1.0, 0.5,
                   "the paper's interpolation, each block followed by its copy and h halved (the same ODE on a grid "
                   "twice as fine)"),
    # the old branch doubles as h halves, so its effective step h * G is what it was; new blocks add exactly 0
    GrowthStrategy("identity", interleave, 0.0, 2.0, 0.5,
                   "copy's layout with each new branch zeroed and each old one doubled, h halved: the function "
                   "does not change"),
    GrowthStrategy("stack", after_stage, 1.0, 1.0, 1.0,
                   "G_stack (Du et al., 2024): each stage's blocks followed by their copies in the same order, "
                   "nothing rescaled, h unchanged (a stage's transition is not repeated)"),
    GrowthStrategy("copy-unscaled", interleave, 1.0, 1.0, 1.0,
                   "copy's layout, nothing rescaled, h unchanged: next to copy, the effect of halving h; next to "
                   "stack, that of the order"),
)
STRATEGIES = tuple(strategy.name for strategy in GROWTH_STRATEGIES)


def get_strategy(name: str) -> GrowthStrategy:
    """The strategy called ``name``, or a GrowresError naming the choices."""
    for strategy in GROWTH_STRATEGIES:
        if strategy.name == name:
            return strategy
    raise GrowresError(f"Unknown interpolation strategy {name!r}: choose one of {', '.join(STRATEGIES)}.")


@dataclass(frozen=True)
class GrowthAdapter:
    """How growth finds and operates on the residual blocks of one family of models."""
    name: str
    matches: Callable[[nn.Module], bool]  # is this model of the family?
    stages: Callable[[nn.Module], list[nn.Sequential]]  # containers of blocks, in forward order
    is_transition: Callable[[nn.Module], bool]  # does this block change its input's shape?
    scale_branch: Callable[[nn.Module, float], None]  # block -> shortcut + factor * branch, exactly
    refresh: Callable[[nn.Module], None]  # update the model's records after its depth changed
    # multiply h of every time-step block; None: the model has no explicit h, fold it into each branch
    scale_step: Callable[[nn.Module, float], None] | None = None
    step_size: Callable[[nn.Module], float | None] = lambda model: None  # explicit h, where there is one
    planned_interpolations: Callable[[nn.Module], int | None] = lambda model: None  # the model's own plan
    # the block's identity path for input x (what the block outputs with its residual branch removed);
    # None: analyses that need it (growres.analysis) refuse the family
    shortcut: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None
    description: str = ""  # one line for `growres list --families`: what the family is
    examples: tuple[str, ...] = ()  # model names of the family, e.g. timm names


_ADAPTERS: list[GrowthAdapter] = []


def register_adapter(adapter: GrowthAdapter) -> GrowthAdapter:
    """Register ``adapter``; it takes precedence over those registered before it."""
    if not isinstance(adapter, GrowthAdapter):
        raise GrowresError(f"register_adapter takes a growres.GrowthAdapter, got {type(adapter).__name__}.")
    _ADAPTERS.insert(0, adapter)
    return adapter


def registered_adapters() -> tuple[GrowthAdapter, ...]:
    """Every registered adapter, in the order of registration."""
    return tuple(reversed(_ADAPTERS))


def get_adapter(model: nn.Module) -> GrowthAdapter:
    """The adapter that knows ``model``'s family, or a GrowresError that says what to register."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        raise GrowresError("Grow the bare model, not its DistributedDataParallel wrapper "
                           "(accelerator.unwrap_model(model)); GrowthScheduler re-prepares it for you.")
    for adapter in _ADAPTERS:
        if adapter.matches(model):
            return adapter
    known = ", ".join(a.name for a in _ADAPTERS)
    raise GrowresError(
        f"No growth adapter matches {type(model).__name__} (known: {known}). Register one with "
        "growres.register_adapter(growres.GrowthAdapter(...)) saying where its stages of residual blocks are, "
        "which blocks change shape, how to scale a block's residual branch, and how to refresh its bookkeeping."
    )


def uncompiled(model: nn.Module) -> nn.Module:
    """The module under a torch.compile wrapper (which shares its modules), or the model itself."""
    return getattr(model, "_orig_mod", model)


def module_class(module: nn.Module) -> type:
    """The class ``module`` was built as: FSDP2's ``fully_shard`` swaps it for a subclass ``FSDP<Class>``
    (compare with this, not ``type(module)``, where an adapter wants one exact class)."""
    cls = type(module)
    return cls.__mro__[cls._orig_cls_mro_index] if issubclass(cls, FSDPModule) else cls


def is_sharded(model: nn.Module) -> bool:
    """Whether FSDP2's ``fully_shard`` was applied to ``model`` or any of its submodules."""
    return any(isinstance(module, FSDPModule) for module in model.modules())


def stage_layers(model: nn.Module) -> tuple[int, ...]:
    """Blocks per stage of any model an adapter covers."""
    model = uncompiled(model)
    return tuple(len(stage) for stage in get_adapter(model).stages(model))


def state_dict_layers(model: nn.Module, keys) -> tuple[int, ...]:
    """Blocks per stage that a state dict of ``model``'s architecture holds, from its ``keys``: for each stage, one
    more than the highest block index under the stage's name (0 where no key is under it, as in one file of a
    sharded checkpoint)."""
    model = uncompiled(model)
    names = {module: name for name, module in model.named_modules()}
    prefixes = [f"{names[stage]}." for stage in get_adapter(model).stages(model)]
    depth = [0] * len(prefixes)
    for key in keys:
        for idx, prefix in enumerate(prefixes):
            block = key[len(prefix):].split(".", 1)[0] if key.startswith(prefix) else ""
            if block.isdigit():
                depth[idx] = max(depth[idx], int(block) + 1)
    return tuple(depth)


def grow_to(model: nn.Module, layers: tuple[int, ...], strategy: str = "copy") -> None:
    """Grow ``model`` in place until it has ``layers`` blocks per stage, e.g. a checkpoint's depth before loading
    the checkpoint's weights into it (which replace every weight growth set). Refuses, before anything changes, a
    depth that interpolations (each doubling every stage) cannot reach from the model's."""
    current, layers = stage_layers(model), tuple(layers)
    reachable = {tuple(n << growths for n in current): growths for growths in range(32)}
    if layers not in reachable:
        raise GrowresError(f"Growth cannot take a model of {current} blocks per stage to {layers}: each interpolation "
                           "doubles every stage. Build the model at the run's starting depth.")
    growths = reachable[layers]
    for _ in range(growths):
        grow(model, strategy)


def _set_blocks(stage: nn.Sequential, blocks: list[nn.Module]) -> None:
    """Replace a stage's blocks in place, so references to the stage stay valid."""
    for name in list(stage._modules):
        del stage._modules[name]
    for idx, block in enumerate(blocks):
        stage.add_module(str(idx), block)


def _plan_copies(adapter: GrowthAdapter, stage_idx: int, blocks: list[nn.Module]) -> list[nn.Module]:
    """For each block of a stage, the old block that the new block made for it copies (whatever the placement)."""
    sources = []
    for idx, block in enumerate(blocks):
        if not adapter.is_transition(block):
            sources.append(block)
        elif idx + 1 < len(blocks) and not adapter.is_transition(blocks[idx + 1]):
            sources.append(blocks[idx + 1])  # Appendix B: the copy after a transition comes from the next block
        else:
            raise GrowresError(
                f"Stage {stage_idx} has a shape-changing block with no block of its output shape after it, "
                "so interpolation has nothing to copy: give every stage at least two blocks."
            )
    return sources


def _check_placement(adapter: GrowthAdapter, strategy: GrowthStrategy, stage_idx: int, blocks: list[nn.Module],
                     sources: list[nn.Module]) -> None:
    """Refuse a placement that puts a new block behind another transition than its source: its input would have
    another shape than the one the source was made for."""
    def transitions_up_to(block: nn.Module) -> int:
        return sum(adapter.is_transition(b) for b in blocks[:blocks.index(block) + 1])

    # placed as tokens: old blocks and sources may be the same modules
    placed = strategy.placement([("old", b) for b in blocks], [("new", s) for s in sources])
    passed = 0
    for kind, block in placed:
        if kind == "old":
            passed += adapter.is_transition(block)
        elif passed != transitions_up_to(block):
            beside = ", ".join(s.name for s in GROWTH_STRATEGIES if s.placement is interleave)
            raise GrowresError(
                f"Stage {stage_idx} has a shape-changing block after its first block, so strategy {strategy.name!r} "
                "would place a new block where its input has another shape than its source's: grow this model with "
                f"a strategy that keeps each new block beside its source ({beside})."
            )


def _scale_branch(adapter: GrowthAdapter, block: nn.Module, factor: float) -> None:
    """Multiply a block's branch by a strategy's ``factor``."""
    if factor != 1.0:  # a strategy's "leave it as it is": no arithmetic on the weights at all
        adapter.scale_branch(block, factor)


def _scale_step(adapter: GrowthAdapter, model: nn.Module, factor: float) -> None:
    """Multiply h by ``factor``: the explicit h where the model has one, else every time step's branch."""
    if factor == 1.0:
        return
    if adapter.scale_step is not None:
        adapter.scale_step(model, factor)
        return
    for stage in adapter.stages(model):
        for block in stage:
            if not adapter.is_transition(block):
                adapter.scale_branch(block, factor)


def plan_growth(model: nn.Module, strategy: str = "copy") -> list[list[nn.Module]]:
    """For each stage of ``model``, the old block each new block will copy; a GrowresError if ``model`` cannot
    grow with ``strategy`` (checked before anything changes)."""
    row = get_strategy(strategy)
    model = uncompiled(model)
    adapter = get_adapter(model)
    plans = []
    for idx, stage in enumerate(adapter.stages(model)):
        blocks = list(stage)
        sources = _plan_copies(adapter, idx, blocks)
        _check_placement(adapter, row, idx, blocks, sources)
        plans.append(sources)
    return plans


def grow(model: nn.Module, strategy: str = "copy", *,
         copy_block: Callable[[nn.Module], nn.Module] = copy.deepcopy) -> dict[nn.Parameter, nn.Parameter]:
    """Interpolate ``model`` in place with the named :class:`GrowthStrategy`; return each new parameter's source
    parameter.

    The mapping lets an optimizer give every new parameter the state of the parameter it was copied
    from (:class:`growres.GrowthScheduler` does this). ``copy_block(source)`` makes each new block, an exact copy
    of ``source`` with its parameters in the same order; the strategy then places and scales it like any block,
    through the adapter (:func:`growres.grow_sharded` passes one that copies a sharded block shard by shard).
    """
    model = uncompiled(model)
    adapter = get_adapter(model)
    stages = adapter.stages(model)
    plans = plan_growth(model, strategy)  # checks all first
    row = get_strategy(strategy)

    sources: dict[nn.Parameter, nn.Parameter] = {}
    with torch.no_grad():
        for stage, copy_from in zip(stages, plans):
            old = list(stage)
            new = [copy_block(source) for source in copy_from]  # all copied before any old branch is scaled
            for new_block, source in zip(new, copy_from):
                sources.update(zip(new_block.parameters(), source.parameters()))
                _scale_branch(adapter, new_block, row.new_branch_scale)
            for block in old:
                if not adapter.is_transition(block):
                    _scale_branch(adapter, block, row.old_branch_scale)
            _set_blocks(stage, row.placement(old, new))
        _scale_step(adapter, model, row.step_factor)
    adapter.refresh(model)
    return sources


def interpolate(model: nn.Module, strategy: str = "copy") -> nn.Module:
    """Double the blocks of every stage (and, with the paper's strategy, halve h), in place; return the model.

    Args:
        model: any model a registered :class:`GrowthAdapter` covers (unwrapped from DDP).
        strategy: the name of a :class:`GrowthStrategy` (:data:`STRATEGIES`). ``"copy"`` (the paper): each
            block followed by its copy and h halved, so the grown model solves the same ODE on a finer grid.
            ``"identity"``: each new block starts as an exact identity and the old blocks keep their effective
            step, so eval-mode outputs do not change at all. ``"stack"``: each stage's blocks followed by their
            copies in the same order, h unchanged (a stage's transition is not repeated; see the module's
            docstring). ``"copy-unscaled"``: ``"copy"`` with h unchanged.
    """
    grow(model, strategy)
    return model


def scale_layer(layer: nn.Module, factor: float) -> None:
    """Multiply a layer's weight and its bias (if any): a branch ending in an affine layer (linear, conv,
    norm) is then scaled exactly. For adapters' ``scale_branch``."""
    layer.weight.mul_(factor)
    if layer.bias is not None:
        layer.bias.mul_(factor)


# -- growres' own models ----------------------------------------------------------------------------


def _growres_refresh(model: MultilevelResNet) -> None:
    model.interpolations = max(model.interpolations - 1, 0)
    model.update_drop_path()
    model.update_feature_info()
    update_model_args(model, layers=model.layers, step_size=model.step_size, interpolations=model.interpolations)


register_adapter(GrowthAdapter(
    name="growres",
    matches=lambda model: isinstance(model, MultilevelResNet),
    stages=lambda model: list(model.stages),
    is_transition=lambda block: block.is_transition,
    # G ends in a bias-free conv, so scaling its weight scales G exactly
    scale_branch=lambda block, factor: block.conv2.weight.mul_(factor),
    refresh=_growres_refresh,
    scale_step=lambda model, factor: setattr(model, 'step_size', model.step_size * factor),
    step_size=lambda model: model.step_size,
    planned_interpolations=lambda model: model.interpolations,
    shortcut=lambda block, x: block.shortcut(x),
    description="the paper's pre-activation ResNets and Wide ResNets, with an explicit step size h",
    examples=("growres_resnet50i", "growres_wrn50i", "growres_resnet122"),
))


# -- timm ResNets (BasicBlock, Bottleneck) -----------------------------------------------------------


def _drop_path_rates(model: nn.Module, num_blocks: int) -> list[float]:
    """timm's linear stochastic-depth rule over the current depth, from the rate the model was made with."""
    rate = getattr(model, "_model_args", {}).get("drop_path_rate") or 0.0
    return [rate * idx / max(num_blocks - 1, 1) for idx in range(num_blocks)]


def _is_timm_resnet(model: nn.Module) -> bool:
    from timm.models.resnet import BasicBlock, Bottleneck, ResNet
    if not isinstance(model, ResNet):
        return False
    blocks = [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]
    # a squeeze-excitation gate depends on its input's scale, so scaling bn2/bn3 would not scale the branch
    return all(isinstance(b, (BasicBlock, Bottleneck)) and b.se is None for b in blocks)


def _timm_resnet_scale_branch(block: nn.Module, factor: float) -> None:
    scale_layer(block.bn3 if hasattr(block, "bn3") else block.bn2, factor)


def _timm_resnet_refresh(model: nn.Module) -> None:
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    blocks = [b for stage in stages for b in stage]
    for block, rate in zip(blocks, _drop_path_rates(model, len(blocks))):
        block.drop_path = DropPath(rate) if rate > 0 else None
    update_model_args(model, layers=tuple(len(stage) for stage in stages))


register_adapter(GrowthAdapter(
    name="timm-resnet",
    matches=_is_timm_resnet,
    stages=lambda model: [model.layer1, model.layer2, model.layer3, model.layer4],
    is_transition=lambda block: block.downsample is not None,
    # post-activation blocks end in a BN: scaling its affine scales the branch before the shared ReLU
    scale_branch=_timm_resnet_scale_branch,
    refresh=_timm_resnet_refresh,
    shortcut=lambda block, x: block.downsample(x) if block.downsample is not None else x,
    description="timm ResNets of BasicBlock/Bottleneck blocks without squeeze-excitation",
    examples=("resnet18", "resnet50", "resnet50d", "wide_resnet50_2"),
))


# -- timm VisionTransformer --------------------------------------------------------------------------


def _is_timm_vit(model: nn.Module) -> bool:
    from timm.models.vision_transformer import Block, VisionTransformer
    return isinstance(model, VisionTransformer) and all(module_class(b) is Block for b in model.blocks)


def _vit_scale_branch(block: nn.Module, factor: float) -> None:
    """Both sub-branches (attention, MLP) of a pre-norm block: a layer-scale if present, else the last linear."""
    for layer_scale, last_linear in ((block.ls1, block.attn.proj), (block.ls2, block.mlp.fc2)):
        if hasattr(layer_scale, "gamma"):
            layer_scale.gamma.mul_(factor)
        else:
            scale_layer(last_linear, factor)


def _vit_refresh(model: nn.Module) -> None:
    depth = len(model.blocks)
    for block, rate in zip(model.blocks, _drop_path_rates(model, depth)):
        block.drop_path1 = DropPath(rate) if rate > 0 else nn.Identity()
        block.drop_path2 = DropPath(rate) if rate > 0 else nn.Identity()
    reduction = model.feature_info[0]["reduction"]
    model.feature_info = [
        dict(module=f"blocks.{i}", num_chs=model.embed_dim, reduction=reduction) for i in range(depth)
    ]
    update_model_args(model, depth=depth)


register_adapter(GrowthAdapter(
    name="timm-vit",
    matches=_is_timm_vit,
    stages=lambda model: [model.blocks],  # every block keeps the token shape: one stage
    is_transition=lambda block: False,
    scale_branch=_vit_scale_branch,
    refresh=_vit_refresh,
    shortcut=lambda block, x: x,
    description="timm VisionTransformers (pre-norm blocks, with or without layer-scale): one stage",
    examples=("vit_tiny_patch16_224", "vit_small_patch16_224", "deit_tiny_patch16_224"),
))


# -- timm ConvNeXt -----------------------------------------------------------------------------------


def _set_drop_path(model: nn.Module, blocks: list[nn.Module]) -> None:
    """timm's stochastic depth over the new depth, for blocks with one ``drop_path`` (Identity when off)."""
    for block, rate in zip(blocks, _drop_path_rates(model, len(blocks))):
        block.drop_path = DropPath(rate) if rate > 0 else nn.Identity()


def _is_timm_convnext(model: nn.Module) -> bool:
    from timm.models.convnext import ConvNeXt, ConvNeXtBlock
    return isinstance(model, ConvNeXt) and all(module_class(b) is ConvNeXtBlock for s in model.stages for b in s.blocks)


def _convnext_scale_branch(block: nn.Module, factor: float) -> None:
    """The layer-scale ``gamma`` multiplies the whole branch; without one (ls_init_value=None, ConvNeXt-V2)
    the branch ends in the MLP's last linear (or 1x1 conv)."""
    if block.gamma is not None:
        block.gamma.mul_(factor)
    else:
        scale_layer(block.mlp.fc2, factor)


def _refresh_stages_of_blocks(model: nn.Module, depth_arg: str) -> None:
    """timm models whose ``stages`` each hold ``blocks``; ``depth_arg`` is the model's argument for blocks per stage
    (ConvNeXt: ``depths``, ResNetV2: ``layers``). feature_info names stages, not blocks: depth does not change it."""
    _set_drop_path(model, [b for stage in model.stages for b in stage.blocks])
    update_model_args(model, **{depth_arg: tuple(len(stage.blocks) for stage in model.stages)})


register_adapter(GrowthAdapter(
    name="timm-convnext",
    matches=_is_timm_convnext,
    # a stage's downsampling (norm + strided conv) runs before its blocks, outside them: every block is a time step
    stages=lambda model: [stage.blocks for stage in model.stages],
    is_transition=lambda block: not isinstance(block.shortcut, nn.Identity),
    scale_branch=_convnext_scale_branch,
    refresh=lambda model: _refresh_stages_of_blocks(model, "depths"),
    shortcut=lambda block, x: block.shortcut(x),
    description="timm ConvNeXt and ConvNeXt-V2 (layer-scale gamma, or the MLP's last linear without one)",
    examples=("convnext_atto", "convnext_tiny", "convnextv2_atto"),
))


# -- timm ResNetV2 (pre-activation) ------------------------------------------------------------------


def _preact_last_conv(block: nn.Module) -> nn.Module:
    """The conv a pre-activation block's branch ends in (PreActBottleneck: conv3, PreActBasic: conv2)."""
    return block.conv3 if hasattr(block, "conv3") else block.conv2


def _is_timm_resnetv2(model: nn.Module) -> bool:
    from timm.layers import Conv2dSame
    from timm.models.resnetv2 import PreActBasic, PreActBottleneck, ResNetV2
    if not isinstance(model, ResNetV2):
        return False
    blocks = [b for stage in model.stages for b in stage.blocks]
    # a weight-standardised conv (BiT's StdConv2d) normalises its weight, so scaling it would not scale the branch
    return all(module_class(b) in (PreActBasic, PreActBottleneck)
               and type(_preact_last_conv(b)) in (nn.Conv2d, Conv2dSame) for b in blocks)


def _resnetv2_scale_branch(block: nn.Module, factor: float) -> None:
    scale_layer(_preact_last_conv(block), factor)


register_adapter(GrowthAdapter(
    name="timm-resnetv2",
    matches=_is_timm_resnetv2,
    stages=lambda model: [stage.blocks for stage in model.stages],
    # a stage's first block projects the pre-activated input (stride and/or channels): a transition
    is_transition=lambda block: block.downsample is not None,
    # pre-activation: the branch ends in a conv, as the paper's blocks, so scaling its weight scales G exactly
    scale_branch=_resnetv2_scale_branch,
    refresh=lambda model: _refresh_stages_of_blocks(model, "layers"),
    shortcut=lambda block, x: block.downsample(block.norm1(x)) if block.downsample is not None else x,
    description="timm ResNetV2, pre-activation (PreActBottleneck/PreActBasic blocks, plain convs)",
    examples=("resnetv2_50", "resnetv2_50d", "resnetv2_18"),
))
