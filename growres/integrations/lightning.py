"""``GrowthCallback``: the multi-level method (Chang et al., ICLR 2018) inside ``lightning.Trainer``.

    import lightning as L
    import timm
    import torch
    import growres
    from growres.integrations.lightning import GrowthCallback

    class Classifier(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = timm.create_model("growres_resnet50i", num_classes=10)  # 2-2-2 blocks, plans 2 growths

        def training_step(self, batch, batch_idx):
            images, labels = batch
            return torch.nn.functional.cross_entropy(self.net(images), labels)

        def configure_optimizers(self):  # one optimizer, no LR scheduler: each group's lr is its η_max
            return torch.optim.SGD(self.parameters(), lr=0.5, momentum=0.9)

    trainer = L.Trainer(max_epochs=160, callbacks=[GrowthCallback()])
    trainer.fit(Classifier(), loader)  # 2-2-2 blocks, 4-4-4 from epoch 60, 8-8-8 from epoch 110

    # resume: a freshly built module first grows to the checkpoint's depth, then takes its weights and optimizer state
    trainer = L.Trainer(max_epochs=160, callbacks=[GrowthCallback()])
    trainer.fit(Classifier(), loader, ckpt_path=path)

At each cycle start of the plan (after that optimizer step), the growable module grows in place
(:func:`growres.grow`), the optimizer takes the new parameters in place (:func:`growres.regroup_optimizer`: the same
param groups, every new parameter in its source's group with a copy of its state), and under DDP the wrapper
re-registers the parameters so the new ones are all-reduced (:func:`growres.integrations.ddp.refresh_ddp`). The
learning rate of every group follows Eq. 9 (:func:`growres.cyclic_cosine_lr`) from the lr ``configure_optimizers``
gave it down to ``min_lr_ratio`` times that, set before each optimizer step, so what Lightning logs is what is used.

Importing this module imports Lightning (``lightning.pytorch``, the ``growres[lightning]`` extra); ``import growres``
does not. Single-device and DDP strategies are supported; sharded ones (FSDP, DeepSpeed, ModelParallel) are refused.
"""
import dataclasses
import math
import time
from typing import Any

import lightning.pytorch as pl
import torch.nn as nn
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from ..allocator import keep_freed_cpu_memory
from ..errors import GrowresError
from ..growth import get_adapter, get_strategy, grow, grow_to, plan_growth, registered_adapters, stage_layers
from ..scheduler import (
    GrowthPlan,
    GrowthRecord,
    check_plan,
    cyclic_cosine_lr,
    default_plan,
    optimizer_steps_per_epoch,
    regroup_optimizer,
)
from .ddp import refresh_ddp

__all__ = ["GrowthCallback"]


class GrowthCallback(pl.Callback):
    """Grow the LightningModule's growable module at the cycle starts of a plan, with the LR of Eq. 9.

    Args:
        plan: when cycles start and whether they grow, in epochs or optimizer steps; it must cover the run
            (``trainer.estimated_stepping_batches`` optimizer steps). Default: the module's own plan (growres ``*i``
            models), else two growths, at the paper's 60/160 and 110/160 of the run's optimizer steps.
        module: the attribute path of the growable submodule (e.g. ``"net"``); default: the LightningModule itself
            if a growth adapter matches it, else its one outermost submodule an adapter matches.
        strategy: how to grow, one of ``growres.STRATEGIES`` (``"copy"``: the paper's); see :func:`growres.grow`.
        min_lr_ratio: η_min / η_max of Eq. 9 (the paper: 0.001 / 0.5).
        reset_optimizer_state: start every parameter's optimizer state afresh at each growth.

    ``configure_optimizers`` returns one optimizer and no LR scheduler (this callback sets the LR), with each
    group's parameters in the module's order (as filtering ``named_parameters()`` gives): a resumed run's
    optimizer, built anew over the grown module, then lines up with the checkpoint's state. Under manual
    optimization ``training_step`` steps ``self.optimizers()``; the callback grows and sets the LR between batches
    all the same, and regroups that optimizer in place.
    """

    def __init__(
            self,
            plan: GrowthPlan | None = None,
            *,
            module: str | None = None,
            strategy: str = "copy",
            min_lr_ratio: float = 0.002,
            reset_optimizer_state: bool = False,
    ):
        if plan is not None and not isinstance(plan, GrowthPlan):
            raise GrowresError(f"plan must be a growres.GrowthPlan or None, got {type(plan).__name__}.")
        get_strategy(strategy)  # refuses an unknown name, listing the known ones
        if not 0 <= min_lr_ratio <= 1:
            raise GrowresError(f"min_lr_ratio (η_min / η_max) must be in [0, 1], got {min_lr_ratio!r}.")
        self.given_plan, self.module, self.strategy = plan, module, strategy
        self.min_lr_ratio, self.reset_optimizer_state = min_lr_ratio, reset_optimizer_state
        self.plan: GrowthPlan | None = None  # the plan of the run being fitted, resolved at its start
        self.records: list[GrowthRecord] = []  # the growths of that run, in order
        self._start_layers: tuple[int, ...] | None = None
        self._cycle_starts: tuple[int, ...] = ()
        self._total_steps = 0
        self._steps_per_epoch: int | None = None
        self._lr_max: list[float] = []
        self._hook = None  # the LightningModule's wrapped on_load_checkpoint, while installed

    # -- Lightning hooks ------------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if isinstance(trainer.strategy, (FSDPStrategy, DeepSpeedStrategy, ModelParallelStrategy)):
            raise GrowresError(
                f"GrowthCallback cannot grow a model sharded by {type(trainer.strategy).__name__}. To grow a sharded "
                "model, write the loop yourself: shard it with torch's fully_shard and give it to "
                "growres.GrowthScheduler (or call growres.grow_sharded), see the README's 'Growing a sharded model'."
            )
        self._growable(pl_module)  # refuses a module with none, or several, before anything runs
        if stage == TrainerFn.FITTING:
            self.plan, self.records, self._start_layers = None, [], None  # a resumed run's state replaces these
        self._watch_checkpoint_load(trainer, pl_module)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # runs after configure_optimizers and the checkpoint's weights and callback states, before its optimizer
        # state: every check here comes before anything changes
        self._unwatch(pl_module)
        if len(trainer.optimizers) != 1:
            raise GrowresError(f"GrowthCallback grows runs with one optimizer; configure_optimizers returned "
                               f"{len(trainer.optimizers)}.")
        if trainer.lr_scheduler_configs:
            raise GrowresError(
                "GrowthCallback sets the learning rate itself (Eq. 9, from each param group's lr as η_max): return "
                "no LR scheduler from configure_optimizers, they would overwrite each other's learning rates."
            )
        optimizer = trainer.optimizers[0]
        _check_module_order(optimizer, pl_module)
        self.plan, self._cycle_starts, self._total_steps, self._steps_per_epoch = self._run_plan(trainer, pl_module)
        module = self._growable(pl_module)
        if self.plan.grow:
            plan_growth(module, self.strategy)  # a model that cannot grow is refused now, not at the first growth
        if self._start_layers is None:
            self._start_layers = stage_layers(module)
        # before the optimizer state of a checkpoint is loaded: these are the lrs configure_optimizers set
        self._lr_max = [group["lr"] for group in optimizer.param_groups]
        if any(p.device.type == "cpu" for p in module.parameters()):
            keep_freed_cpu_memory()  # else a grown model re-faults its activations every step (growres.allocator)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._set_lr(trainer)  # after a resumed optimizer state: its groups' lrs are the checkpoint's

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # Lightning runs checkpoint callbacks last, so a checkpoint of this step holds the grown model
        growths = len(self.records)
        if self.plan.grow and growths < len(self._cycle_starts) and trainer.global_step == self._cycle_starts[growths]:
            self._grow(trainer, pl_module)
        self._set_lr(trainer)  # the next step's: at any moment between steps the groups hold the coming step's lr

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._unwatch(pl_module)

    def state_dict(self) -> dict[str, Any]:
        if self.plan is None:
            return {}
        return {
            "plan": dataclasses.asdict(self.plan),
            "cycle_starts": list(self._cycle_starts),
            "total_steps": self._total_steps,
            "strategy": self.strategy,
            "start_layers": list(self._start_layers),
            "records": [dataclasses.asdict(r) for r in self.records],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # the module already has the checkpoint's depth (see _watch_checkpoint_load)
        self._start_layers = tuple(state_dict["start_layers"])
        self.records = [GrowthRecord(**{**r, "layers": tuple(r["layers"])}) for r in state_dict["records"]]

    # -- the growable module and its plan ----------------------------------------------------------------

    def _growable(self, pl_module: pl.LightningModule) -> nn.Module:
        if self.module is not None:
            try:
                return pl_module.get_submodule(self.module)  # one no adapter knows: refused where its plan is read
            except AttributeError:
                raise GrowresError(f"{type(pl_module).__name__} has no submodule {self.module!r}.") from None
        if _has_adapter(pl_module):
            return pl_module
        found: dict[str, nn.Module] = {}
        for name, sub in pl_module.named_modules():
            # a module an adapter matches grows with everything in it: only outermost matches are candidates
            if name and not any(name.startswith(f"{outer}.") for outer in found) and _has_adapter(sub):
                found[name] = sub
        if len(found) != 1:
            names = ", ".join(f"{name!r} ({type(sub).__name__})" for name, sub in found.items())
            raise GrowresError(
                f"GrowthCallback found {len(found)} growable submodules in {type(pl_module).__name__}"
                + (f": {names}; name the one to grow with module='...'." if found else
                   " (none that a growth adapter matches): name one with module='...', or register an adapter for "
                   "its family with growres.register_adapter.")
            )
        return next(iter(found.values()))

    def _run_plan(self, trainer: pl.Trainer, pl_module: pl.LightningModule):
        """The plan of this run, its cycle starts and length in optimizer steps, and optimizer steps per epoch."""
        total = trainer.estimated_stepping_batches
        if total == math.inf or total < 1:
            raise GrowresError("GrowthCallback needs a run of known length: set max_steps, or max_epochs with a "
                               "dataloader that has a length.")
        module = self._growable(pl_module)
        planned = get_adapter(module).planned_interpolations(module)  # a plan of its own (growres *i models)
        if planned is not None:
            planned += len(self.records)  # as it was at the run's start: a resumed run's module has grown already
        if self.given_plan is None:
            plan = default_plan(planned, total=total, unit="step")
        else:
            plan = self.given_plan
            check_plan(plan, planned)
        steps_per_epoch = None
        if plan.unit == "epoch":
            if trainer.num_training_batches == math.inf:
                raise GrowresError("A plan in epochs needs a dataloader that has a length: give the plan in steps.")
            steps_per_epoch = optimizer_steps_per_epoch(trainer.num_training_batches,
                                                        trainer.accumulate_grad_batches)
        cycle_starts, plan_total = plan.to_steps(steps_per_epoch)
        if plan_total != total:
            raise GrowresError(
                f"The plan covers {plan.total} {plan.unit}s ({plan_total} optimizer steps) but this run takes {total} "
                f"optimizer steps (trainer.estimated_stepping_batches): give a plan of the run's length."
            )
        return plan, cycle_starts, total, steps_per_epoch

    # -- the learning rate and growth ---------------------------------------------------------------------

    def _set_lr(self, trainer: pl.Trainer) -> None:
        groups = trainer.optimizers[0].param_groups
        if len(groups) != len(self._lr_max):
            raise GrowresError(f"The optimizer's param groups changed from {len(self._lr_max)} to {len(groups)} "
                               "during training; GrowthCallback sets each group's lr from the one it started with.")
        restarts = self._cycle_starts if self.plan.restart_lr else ()
        for group, lr_max in zip(groups, self._lr_max):
            group["lr"] = cyclic_cosine_lr(trainer.global_step, restarts, self._total_steps, lr_max,
                                           self.min_lr_ratio * lr_max)

    def _grow(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        started = time.perf_counter()
        module = self._growable(pl_module)
        sources = grow(module, self.strategy)
        # in place: the trainer, its strategy and the LightningOptimizer wrappers all hold this optimizer
        regroup_optimizer(trainer.optimizers[0], pl_module, sources, reset_state=self.reset_optimizer_state)
        if isinstance(trainer.strategy.model, nn.parallel.DistributedDataParallel):
            refresh_ddp(trainer.strategy.model)  # else the new parameters' gradients are never all-reduced
        step, growths = trainer.global_step, len(self.records) + 1
        step_size = get_adapter(module).step_size(module)
        self.records.append(GrowthRecord(
            step=step,
            epoch=step / self._steps_per_epoch if self._steps_per_epoch else None,
            cycle=growths + 1,
            layers=stage_layers(module),
            step_size=step_size if step_size is not None else get_strategy(self.strategy).step_factor ** growths,
            num_params=sum(p.numel() for p in module.parameters()),
            seconds=time.perf_counter() - started,
        ))
        rank_zero_info(f"growres: grew to {'-'.join(map(str, self.records[-1].layers))} blocks at step {step}.")

    # -- resuming: the module's depth before the checkpoint's weights load ------------------------------------

    def _watch_checkpoint_load(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Grow a fresh module to a checkpoint's depth right before Lightning loads the checkpoint's weights into it.

        Lightning loads them (strictly) after callbacks' ``setup`` and before their ``load_state_dict``, and the path
        is not known in ``setup`` (``trainer.ckpt_path`` is set when loading starts); the one hook that sees the
        checkpoint first is the LightningModule's ``on_load_checkpoint``. So that hook is wrapped, for one load.
        """
        self._unwatch(pl_module)
        users_hook = pl_module.on_load_checkpoint

        def on_load_checkpoint(checkpoint: dict[str, Any]) -> None:
            self._unwatch(pl_module)
            state = checkpoint.get("callbacks", {}).get(self.state_key)
            if state:  # else the checkpoint is of a run without this callback: the module has its depth
                self._restore_depth(trainer, pl_module, state)
            users_hook(checkpoint)

        self._hook = pl_module.on_load_checkpoint = on_load_checkpoint

    def _unwatch(self, pl_module: pl.LightningModule) -> None:
        if self._hook is not None and pl_module.__dict__.get("on_load_checkpoint") is self._hook:
            del pl_module.on_load_checkpoint
        self._hook = None

    def _restore_depth(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # a run resumed with another plan or strategy would diverge
            plan, cycle_starts, total, _ = self._run_plan(trainer, pl_module)
            saved = GrowthPlan(**state["plan"])
            if (saved, tuple(state["cycle_starts"]), state["total_steps"], state["strategy"]) != \
                    (plan, cycle_starts, total, self.strategy):
                raise GrowresError(
                    f"The checkpoint was made with plan {saved} (cycle starts {state['cycle_starts']} of "
                    f"{state['total_steps']} optimizer steps) and strategy {state['strategy']!r}; this run has plan "
                    f"{plan} (cycle starts {list(cycle_starts)} of {total}) and strategy {self.strategy!r}."
                )
        layers = state["records"][-1]["layers"] if state["records"] else state["start_layers"]
        grow_to(self._growable(pl_module), tuple(layers), self.strategy)  # the checkpoint's weights replace the copies'


def _has_adapter(module: nn.Module) -> bool:
    return any(adapter.matches(module) for adapter in registered_adapters())


def _check_module_order(optimizer, pl_module: pl.LightningModule) -> None:
    """Growth lists each group's parameters in the module's order: a group built in another order would not line up
    with the same group built anew by configure_optimizers over the grown module when a run resumes."""
    order = {param: idx for idx, param in enumerate(pl_module.parameters())}
    for idx, group in enumerate(optimizer.param_groups):
        positions = [order[p] for p in group["params"] if p in order]
        if positions != sorted(positions):
            raise GrowresError(
                f"Param group {idx} lists its parameters out of the module's order. GrowthCallback keeps every group "
                "in the module's order as it grows, so that a resumed run's optimizer lines up with the checkpoint: "
                "build the groups by filtering self.named_parameters() (or parameters()) in order."
            )
