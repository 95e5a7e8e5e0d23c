"""Multi-level training inside the Hugging Face ``Trainer``: a callback, and a mixin for DDP.

    from growres.integrations.transformers import GrowthCallback, grow_to_checkpoint

    model = LlamaForCausalLM(config)  # the starting depth, e.g. 2 layers
    args = TrainingArguments("out", max_steps=1600, learning_rate=3e-3, lr_scheduler_type="constant")
    trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[GrowthCallback()])
    trainer.train()  # 2 layers, 4 from step 600, 8 from step 1100

    # resume: build the model at its starting depth, grow it to the checkpoint's depth, resume as usual
    grow_to_checkpoint(model, "out/checkpoint-800")
    trainer.train(resume_from_checkpoint="out/checkpoint-800")

``GrowthCallback`` grows the model at the plan's steps (the paper's 60/160 and 110/160 of the run by default), adds
each new parameter to its source's param group (so decay / no-decay stays right) with a copy of its source's AdamW
state, and drives the learning rate by Eq. 9 through the Trainer's own scheduler, so that the LR the Trainer logs is
the one the optimizer used. Under DDP the Trainer keeps its wrapper where no callback can reach it: train with
:class:`GrowthTrainer`, or mix :class:`GrowthTrainerMixin` into your Trainer class. FSDP and DeepSpeed under the
Trainer are refused (they shard the model their own way); grow a sharded model with ``GrowthScheduler`` over a model
sharded with ``fully_shard`` (``growres.grow_sharded``) in your own loop.
"""
import json
import logging
import os
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.distributed.fsdp import FullyShardedDataParallel
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint
from transformers.training_args import ParallelMode

from ..allocator import keep_freed_cpu_memory
from ..errors import GrowresError
from ..growth import get_adapter, get_strategy, grow, grow_to, is_sharded, stage_layers, state_dict_layers
from ..scheduler import (
    GrowthPlan,
    check_plan,
    cyclic_cosine_lr,
    default_plan,
    optimizer_steps_per_epoch,
    regroup_optimizer,
)
from .ddp import refresh_ddp

__all__ = ["GrowthCallback", "GrowthTrainer", "GrowthTrainerMixin", "grow_to_checkpoint"]

logger = logging.getLogger(__name__)

PAPER_MIN_LR_RATIO = 0.001 / 0.5  # Section 5.2: η_min / η_max

# the Trainer of each model trained by a GrowthTrainerMixin, so that a callback can reach its DDP wrapper
_TRAINERS: "weakref.WeakKeyDictionary[nn.Module, weakref.ref]" = weakref.WeakKeyDictionary()
_GUARDED: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()  # models whose load_state_dict refuses deeper weights


@dataclass
class CyclicCosineFactor:
    """The Trainer's ``LambdaLR`` factor for Eq. 9: η(step) / η_max, restarting at each cycle start.

    A callable object rather than a function, so that ``LambdaLR.state_dict`` saves its fields with the checkpoint.
    """
    cycle_starts: tuple[int, ...]
    total: int
    min_lr_ratio: float

    def __call__(self, step: int) -> float:
        return cyclic_cosine_lr(step, self.cycle_starts, self.total, 1.0, self.min_lr_ratio)


class GrowthCallback(TrainerCallback):
    """Grows the Trainer's model at the cycle starts of a plan and sets the learning rate of Eq. 9.

    Args:
        plan: when to grow, in the Trainer's optimizer steps or epochs; its ``total`` must be the run's length.
            Default: the paper's proportions (growth at 60/160 and 110/160) over the run, or the model's own plan
            (``growres_*i`` models).
        strategy: one of ``growres.STRATEGIES`` (``"copy"``: the paper's; ``"stack"``: G_stack's); see
            :func:`growres.interpolate`.
        min_lr_ratio: η_min / η_max of Eq. 9; η_max is ``TrainingArguments.learning_rate`` (paper: 0.001 / 0.5).
        reset_optimizer_state: start every parameter's optimizer state afresh at each growth.

    The callback replaces the shape of the Trainer's schedule (any ``lr_scheduler_type`` that makes a ``LambdaLR``;
    warmup is refused, since Eq. 9 has none). It keeps no state of its own: on resume, the Trainer's step says which
    growths happened, and :func:`grow_to_checkpoint` rebuilds their depth before the weights load.
    """

    def __init__(self, plan: GrowthPlan | None = None, strategy: str = "copy",
                 min_lr_ratio: float = PAPER_MIN_LR_RATIO, reset_optimizer_state: bool = False):
        get_strategy(strategy)  # refuses an unknown name, listing the known ones
        if not 0 <= min_lr_ratio <= 1:
            raise GrowresError(f"min_lr_ratio is η_min / η_max, between 0 and 1; got {min_lr_ratio}.")
        self.plan, self.strategy = plan, strategy
        self.min_lr_ratio, self.reset_optimizer_state = min_lr_ratio, reset_optimizer_state
        self.planned: int | None = None  # the interpolations the model plans itself, read before it grows
        self.growth_steps: tuple[int, ...] = ()  # in optimizer steps, once the run's length is known
        self.records: list[dict] = []  # one per growth in this process: step, layers, parameters

    # -- events ------------------------------------------------------------------------------------------

    def on_init_end(self, args, state, control, model=None, **kwargs):
        if model is not None:  # None with model_init (the model is built in train())
            # refuse an ungrowable model when the Trainer is built, not steps into training
            self.planned = get_adapter(model).planned_interpolations(model)
            _refuse_deeper_state_dicts(model)

    def on_train_begin(self, args, state, control, model=None, lr_scheduler=None, train_dataloader=None, **kwargs):
        _refuse_unsupported_parallelism(args, model)
        if any(p.device.type == "cpu" for p in model.parameters()):
            keep_freed_cpu_memory()  # else a grown model re-faults its activations every step (growres.allocator)
        if self.plan is None:
            plan = default_plan(self.planned, total=state.max_steps, unit="step")
        else:
            plan = self.plan
            check_plan(plan, self.planned)
        cycle_starts, total = plan.to_steps(_steps_per_epoch(args, train_dataloader))
        if total != state.max_steps:
            raise GrowresError(f"The plan lasts {total} optimizer steps ({plan.total} {plan.unit}s) but the Trainer "
                               f"trains for {state.max_steps}: give the plan the run's length.")
        self.growth_steps = cycle_starts if plan.grow else ()
        _drive_lr(lr_scheduler, CyclicCosineFactor(cycle_starts if plan.restart_lr else (), total,
                                                   self.min_lr_ratio), args, state)

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if state.global_step not in self.growth_steps:
            return
        sources = grow(model, self.strategy)
        regroup_optimizer(getattr(optimizer, "optimizer", optimizer), model, sources,  # under AcceleratedOptimizer
                          reset_state=self.reset_optimizer_state)
        wrapper = _trainer_of(model).model_wrapped if model in _TRAINERS else model
        if isinstance(wrapper, nn.parallel.DistributedDataParallel):
            refresh_ddp(wrapper)  # else DDP would never all-reduce the new parameters' gradients
        record = {"step": state.global_step, "layers": list(stage_layers(model)),
                  "num_params": sum(p.numel() for p in model.parameters())}
        self.records.append(record)
        logger.info("growres: grew to %s blocks per stage at step %d", record["layers"], record["step"])


def _steps_per_epoch(args, train_dataloader) -> int | None:
    """Optimizer steps per epoch, as the Trainer counts them (None for a loader without a length)."""
    if train_dataloader is None or not hasattr(train_dataloader, "__len__"):
        return None
    return optimizer_steps_per_epoch(len(train_dataloader), args.gradient_accumulation_steps)


def _drive_lr(lr_scheduler, factor: CyclicCosineFactor, args, state) -> None:
    """Make the Trainer's scheduler follow Eq. 9."""
    if not isinstance(lr_scheduler, torch.optim.lr_scheduler.LambdaLR):
        raise GrowresError(f"GrowthCallback sets Eq. 9's learning rate through the Trainer's LambdaLR scheduler; "
                           f"lr_scheduler_type={args.lr_scheduler_type!r} makes a {type(lr_scheduler).__name__}: "
                           "use the default ('linear') or 'constant'.")
    if args.get_warmup_steps(state.max_steps) > 0:
        raise GrowresError("Eq. 9 has no warmup: set warmup_steps=0 (GrowthCallback restarts the LR at each cycle).")
    # every schedule the Trainer makes starts at factor 1 (without warmup), and a resumed one at the LR this callback
    # gave: the factors take over from the next step, and get_last_lr(), which the Trainer logs, is what was used
    lr_scheduler.lr_lambdas = [factor] * len(lr_scheduler.optimizer.param_groups)


def _refuse_unsupported_parallelism(args, model) -> None:
    sharded_by_accelerate = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
    if args.fsdp or sharded_by_accelerate or is_sharded(model) or isinstance(model, FullyShardedDataParallel):
        raise GrowresError("GrowthCallback cannot grow a model the Trainer shards with FSDP. Grow a sharded model "
                           "in your own loop: GrowthScheduler over a model sharded with fully_shard "
                           "(growres.grow_sharded).")
    if args.deepspeed:
        raise GrowresError("GrowthCallback cannot grow a model under DeepSpeed, whose engine owns the parameters "
                           "and optimizer partitions. Grow a sharded model with GrowthScheduler over FSDP2's "
                           "fully_shard (growres.grow_sharded) in your own loop.")
    if args.parallel_mode == ParallelMode.DISTRIBUTED and args.world_size > 1 and model not in _TRAINERS:
        raise GrowresError("Under DDP the Trainer keeps its DistributedDataParallel wrapper out of a callback's "
                           "reach, and the new layers would never be all-reduced: train with "
                           "growres.integrations.transformers.GrowthTrainer, or mix GrowthTrainerMixin into your "
                           "Trainer class (class MyTrainer(GrowthTrainerMixin, Trainer)).")


def _trainer_of(model: nn.Module) -> Trainer:
    trainer = _TRAINERS[model]()
    assert trainer is not None, "a model outlived the GrowthTrainerMixin that registered it"
    return trainer


# -- resume ------------------------------------------------------------------------------------------------


def _refuse_deeper_state_dicts(model: nn.Module) -> None:
    """Make ``model.load_state_dict`` refuse a state dict with more blocks than the model: the Trainer loads a
    checkpoint's weights with ``strict=False``, which would fill the first blocks of a model not yet grown and drop
    the rest without a word."""
    def refuse_deeper(module, state_dict, prefix, *args):
        held = state_dict_layers(module, [key[len(prefix):] for key in state_dict if key.startswith(prefix)])
        layers = stage_layers(module)
        if any(h > n for h, n in zip(held, layers)):
            raise GrowresError(
                f"The weights being loaded hold {held} blocks per stage and the model {layers}: the checkpoint was "
                "made after growth. Grow the model first, with growres.integrations.transformers."
                "grow_to_checkpoint(model, checkpoint_dir), then resume."
            )

    if model not in _GUARDED:
        model.register_load_state_dict_pre_hook(refuse_deeper)
        _GUARDED.add(model)


def _checkpoint_keys(checkpoint: Path) -> list[str]:
    """The parameter names of a Trainer checkpoint's model weights, without reading the weights."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (checkpoint / index).is_file():
            return list(json.loads((checkpoint / index).read_text())["weight_map"])
    if (checkpoint / "model.safetensors").is_file():
        from safetensors import safe_open
        with safe_open(checkpoint / "model.safetensors", framework="pt") as weights:
            return list(weights.keys())
    if (checkpoint / "pytorch_model.bin").is_file():
        return list(torch.load(checkpoint / "pytorch_model.bin", map_location="meta", weights_only=True, mmap=True))
    raise GrowresError(f"{checkpoint} holds no model weights (model.safetensors or pytorch_model.bin): "
                       "give a Trainer checkpoint directory such as out/checkpoint-800.")


def grow_to_checkpoint(model: nn.Module, checkpoint_dir: str | Path, strategy: str = "copy") -> nn.Module:
    """Grow a freshly built ``model`` (at the run's starting depth) to the depth of a Trainer checkpoint, in place,
    so that ``trainer.train(resume_from_checkpoint=checkpoint_dir)`` loads every weight into a block of its own.

    ``checkpoint_dir`` may also be the Trainer's ``output_dir``, for its last checkpoint. The weights growth gives the
    new blocks are all replaced by the checkpoint's; ``strategy`` (the run's) matters only to a model whose step size
    h is not a weight (growres models). Returns ``model``.
    """
    checkpoint = Path(checkpoint_dir)
    if not checkpoint.is_dir():
        raise GrowresError(f"No checkpoint directory at {checkpoint}.")
    last = get_last_checkpoint(str(checkpoint))
    if last is not None and not (checkpoint / "trainer_state.json").is_file():
        checkpoint = Path(last)  # an output_dir: its last checkpoint, as train(resume_from_checkpoint=True) takes
    grow_to(model, state_dict_layers(model, _checkpoint_keys(checkpoint)), strategy)
    return model


# -- DDP ---------------------------------------------------------------------------------------------------


class GrowthTrainerMixin:
    """Makes a ``Trainer`` class grow correctly under DDP: ``class MyTrainer(GrowthTrainerMixin, Trainer)``.

    The Trainer's loop holds its ``DistributedDataParallel`` wrapper in a local variable, and the wrapper registers
    gradient hooks only on the parameters it saw when built. The mixin lets :class:`GrowthCallback` find the wrapper
    and rebuild its reducer over the grown model in place (:func:`growres.integrations.ddp.refresh_ddp`). It also
    grows the model to a checkpoint's depth when ``train(resume_from_checkpoint=...)`` is given one.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.model is not None:
            _TRAINERS[self.model] = weakref.ref(self)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if resume_from_checkpoint:
            checkpoint = self.args.output_dir if resume_from_checkpoint is True else resume_from_checkpoint
            growth = [cb for cb in self.callback_handler.callbacks if isinstance(cb, GrowthCallback)]
            grow_to_checkpoint(self.model, checkpoint, growth[0].strategy if growth else "copy")
        return super().train(resume_from_checkpoint, *args, **kwargs)


class GrowthTrainer(GrowthTrainerMixin, Trainer):
    """``transformers.Trainer`` with :class:`GrowthTrainerMixin`: grows under DDP, and resumes mid-growth by itself."""
