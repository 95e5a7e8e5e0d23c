"""GrowthScheduler: the multi-level method in a live training run (paper Section 4, Table 1, Eq. 9).

A thin stateful layer over :func:`growres.growth.grow`. It owns the cycle plan, sets the cyclic cosine
learning rate of Eq. 9 every step, and at each cycle boundary grows the model and keeps everything
that depends on its parameters correct: the optimizer (same hyper-parameters and param groups, state
carried over, new parameters inheriting their source's state), a model EMA, and accelerate's
preparation (so DDP reduces the new parameters and ``save_state``/``load_state`` keep working).

    scheduler = GrowthScheduler(model, optimizer, steps_per_epoch=len(loader))
    for epoch in range(scheduler.plan.total):
        for x, y in loader:
            loss = F.cross_entropy(scheduler.model(x), y)
            scheduler.optimizer.zero_grad()
            loss.backward()
            scheduler.optimizer.step()
            scheduler.step()  # LR of the next step; grows the model at a cycle boundary
"""
import copy
import inspect
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn

from .allocator import keep_freed_cpu_memory
from .errors import GrowresError
from .growth import get_adapter, get_strategy, grow, is_sharded, stage_layers, uncompiled

__all__ = [
    "GrowthPlan", "GrowthRecord", "GrowthScheduler", "check_plan", "cyclic_cosine_lr", "default_plan",
    "optimizer_steps_per_epoch", "rebuild_optimizer", "regroup_optimizer", "unwrapped",
]

PAPER_EPOCHS = 160
PAPER_CYCLES = (60, 110)  # Section 5.2: interpolate at epochs 60 and 110 of 160


@dataclass(frozen=True)
class GrowthPlan:
    """When cycles start and whether they grow the model.

    ``cycles`` are the points where a new cycle starts (an interpolation, and a restart of the learning
    rate); a plan with k points has k + 1 cycles. A plan with ``grow=False`` restarts the learning rate at
    the same points without growing: the first-cycle and last-cycle baselines of Section 5.2. A plan with
    ``restart_lr=False`` anneals the learning rate once over the whole run and still grows at the cycle starts:
    the paper's ablation (Appendix D, Figure 10).
    """
    cycles: tuple[int, ...] = PAPER_CYCLES  # cycle starts, in `unit`s, strictly increasing inside (0, total)
    total: int = PAPER_EPOCHS  # training length, in `unit`s
    unit: str = "epoch"  # "epoch" or "step"
    grow: bool = True  # False: LR restarts only (fixed-depth baselines)
    restart_lr: bool = True  # False: one cosine over the whole run (Eq. 9 without restarts)

    def __post_init__(self):
        object.__setattr__(self, "cycles", tuple(self.cycles))
        if self.unit not in ("epoch", "step"):
            raise GrowresError(f"A plan's unit is 'epoch' or 'step', got {self.unit!r}.")
        if not isinstance(self.total, int) or self.total < 1:
            raise GrowresError(f"A plan's total length must be a positive integer, got {self.total!r}.")
        if any(not isinstance(c, int) for c in self.cycles):
            raise GrowresError(f"Cycle starts must be whole {self.unit}s, got {self.cycles}.")
        points = (0, *self.cycles, self.total)
        if any(a >= b for a, b in zip(points, points[1:])):
            raise GrowresError(
                f"Cycle starts {list(self.cycles)} must be strictly increasing and lie inside (0, {self.total}) "
                f"{self.unit}s: every cycle needs at least one {self.unit}."
            )

    @classmethod
    def paper(cls, interpolations: int = 2, total: int = PAPER_EPOCHS, grow: bool = True,
              unit: str = "epoch") -> "GrowthPlan":
        """The paper's schedule (epochs 60 and 110 of 160) scaled to ``total`` ``unit``s; equal cycles for other
        counts.

        A run too short for every cycle keeps the restarts that fit when it does not grow, and is refused
        when it grows (each interpolation needs a cycle)."""
        if interpolations == 2:
            cycles = [round(total * c / PAPER_EPOCHS) for c in PAPER_CYCLES]
        else:
            cycles = [round(total * (i + 1) / (interpolations + 1)) for i in range(interpolations)]
        cycles = sorted({c for c in cycles if 0 < c < total})
        if grow and len(cycles) < interpolations:
            raise GrowresError(f"{total} {unit}s cannot hold the {interpolations + 1} cycles of {interpolations} "
                               f"interpolations: train for at least {interpolations + 1} {unit}s.")
        return cls(cycles=tuple(cycles), total=total, unit=unit, grow=grow)

    def to_steps(self, steps_per_epoch: int | None) -> tuple[tuple[int, ...], int]:
        """(cycle starts, total) in optimizer steps."""
        if self.unit == "step":
            return self.cycles, self.total
        if not steps_per_epoch or steps_per_epoch < 1:
            raise GrowresError("A plan in epochs needs steps_per_epoch (optimizer steps per epoch, at least 1).")
        return tuple(c * steps_per_epoch for c in self.cycles), self.total * steps_per_epoch


def optimizer_steps_per_epoch(batches: int, accumulation: int = 1) -> int:
    """Optimizer steps in an epoch of ``batches`` batches, stepping every ``accumulation`` of them: the Trainer and
    Lightning both step on an epoch's last, partial accumulation too."""
    return -(-batches // accumulation)


def default_plan(planned: int | None, total: int = PAPER_EPOCHS, unit: str = "epoch") -> GrowthPlan:
    """The paper's schedule over ``total`` ``unit``s for a model that plans ``planned`` interpolations itself
    (``adapter.planned_interpolations``: growres ``*i`` models): that many, LR restarts without growth for a model at
    its final depth, and two for a model without a plan of its own (None)."""
    if planned == 0:
        return GrowthPlan.paper(total=total, grow=False, unit=unit)
    return GrowthPlan.paper(interpolations=planned or 2, total=total, unit=unit)


def check_plan(plan: GrowthPlan, planned: int | None) -> None:
    """Refuse a growing plan that disagrees with the ``planned`` interpolations of the model (None: no plan)."""
    if not plan.grow:
        return
    if planned == 0:
        raise GrowresError(
            "The model is already at its final depth (its growth plan has no interpolations left): "
            "train it with GrowthPlan(grow=False) to restart the LR at the same points without growing."
        )
    if planned is not None and planned != len(plan.cycles):
        raise GrowresError(
            f"The model plans {planned} interpolation(s) but the plan has {len(plan.cycles)} cycle "
            f"start(s) {list(plan.cycles)}: give exactly {planned}."
        )


def cyclic_cosine_lr(step: int, cycle_starts: tuple[int, ...], total: int, lr_max: float, lr_min: float) -> float:
    """Eq. 9: cosine annealing from ``lr_max`` to ``lr_min`` within each cycle, restarting at each cycle start."""
    bounds = (0, *cycle_starts, total)
    cycle = sum(step >= start for start in cycle_starts)
    start, end = bounds[cycle], bounds[cycle + 1]
    progress = min(step - start, end - start) / (end - start)
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * progress))


@dataclass
class GrowthRecord:
    """What one interpolation did, for logs and metrics."""
    step: int  # optimizer steps done when the model grew
    epoch: float | None  # the same, in epochs (step / steps_per_epoch), or None for a plan in steps
    cycle: int  # the cycle that starts now (1-based: the first growth starts cycle 2)
    layers: tuple[int, ...]  # blocks per stage after growing
    # h after growing (for a model without an explicit h, relative to the start: the strategy's step_factor ** growths)
    step_size: float
    num_params: int  # parameters after growing
    seconds: float  # wall time of the growth event (surgery, optimizer rebuild, re-prepare)


def _constructor_defaults(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's defaults that its constructor takes: torch's AdamW records ``decoupled_weight_decay``
    (inherited from Adam) without accepting it. The groups carry every hyper-parameter anyway."""
    parameters = inspect.signature(type(optimizer)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(optimizer.defaults)
    return {key: value for key, value in optimizer.defaults.items() if key in parameters}


def unwrapped(model: nn.Module, accelerator: Any = None) -> nn.Module:
    """The module under DDP and torch.compile wrappers, with accelerate's mixed-precision forward kept.

    ``accelerator.unwrap_model(model, keep_fp32_wrapper=False)`` removes that forward from the *live* model, so
    mixed precision would silently end; growth strips it only right before preparing the grown model anew.
    """
    if accelerator is not None:
        return accelerator.unwrap_model(model, keep_fp32_wrapper=True, keep_torch_compile=False)
    return uncompiled(model)


def _copy_state(state: dict[str, Any]) -> dict[str, Any]:
    """A copy of one parameter's optimizer state. Tensors are cloned, not deep-copied: ``copy.deepcopy`` of a DTensor
    (a sharded parameter's momentum) clones it and then copies its local shard a second time."""
    return {key: value.clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)
            for key, value in state.items()}


def rebuild_optimizer(
        optimizer: torch.optim.Optimizer,
        model: nn.Module,
        sources: dict[nn.Parameter, nn.Parameter],
        reset_state: bool = False,
) -> torch.optim.Optimizer:
    """A new optimizer of the same class over the grown model, with the same param-group structure.

    ``sources`` maps each parameter of the grown model that ``optimizer`` does not hold to the old parameter it
    continues: the one it was copied from, or the one it replaces (re-sharding by the gather path of
    :func:`growres.sharding.grow_sharded` makes new parameter objects); replaced parameters leave the optimizer.
    Each such parameter joins its source's group (so e.g. a copied BN weight stays out of weight decay) and, unless
    ``reset_state``, takes its source's state (momentum): the state itself for a replacement, a copy for each copy;
    old parameters keep theirs.
    Params are ordered as in the model, so an optimizer rebuilt the same way on resume has the same ``state_dict``
    layout.
    """
    order = {param: idx for idx, param in enumerate(model.parameters())}
    replaced = {source for source in sources.values() if source not in order}
    groups = []
    for group in optimizer.param_groups:
        members = set(group["params"])
        params = [p for p in group["params"] if p not in replaced]
        params += [new for new, source in sources.items() if source in members]
        params.sort(key=lambda p: order.get(p, len(order)))
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": params})
    rebuilt = type(optimizer)(groups, **_constructor_defaults(optimizer))
    if not reset_state:
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param in optimizer.state and param not in replaced:
                    rebuilt.state[param] = optimizer.state[param]
        handed_over = set()
        for new, source in sources.items():
            if source not in optimizer.state:
                continue
            if source in replaced and source not in handed_over:
                handed_over.add(source)  # the old optimizer is dropped: its state moves instead of being copied
                rebuilt.state[new] = optimizer.state[source]
            else:
                rebuilt.state[new] = _copy_state(optimizer.state[source])
    return rebuilt


def regroup_optimizer(
        optimizer: torch.optim.Optimizer,
        model: nn.Module,
        sources: dict[nn.Parameter, nn.Parameter],
        reset_state: bool = False,
) -> None:
    """:func:`rebuild_optimizer`, in place: the same optimizer object takes the grown model's parameters and state.

    For trainers that hold the optimizer (and LR schedulers built on it) themselves, such as the Hugging Face
    ``Trainer`` and Lightning: their references stay valid, and a scheduler that pairs its per-group values with
    ``param_groups`` by position keeps pairing them right, since growth adds no group.
    """
    rebuilt = rebuild_optimizer(optimizer, model, sources, reset_state)
    for group, regrouped in zip(optimizer.param_groups, rebuilt.param_groups, strict=True):
        group["params"] = regrouped["params"]
    optimizer.state = rebuilt.state


class GrowthScheduler:
    """Grows a model at the cycle starts of a plan and sets the cyclic cosine LR of Eq. 9.

    Use ``scheduler.model`` and ``scheduler.optimizer`` in the loop: growth replaces both (and, under
    accelerate, re-prepares them). Call :meth:`step` once after every optimizer step.

    Args:
        model: the model (prepared by ``accelerator`` if one is given).
        optimizer: its optimizer (prepared by ``accelerator`` if one is given).
        plan: when to grow; default: the model's own plan (``growres_*i`` models), the paper's schedule
            for models without one, and LR restarts without growth for growres models at final depth.
        steps_per_epoch: optimizer steps per epoch, needed for a plan in epochs.
        strategy: the name of a growth strategy: ``"copy"`` (the paper), ``"identity"``, ``"stack"`` or
            ``"copy-unscaled"`` (:data:`growres.STRATEGIES`); see :func:`growres.interpolate`.
        lr_max, lr_min: η_max and η_min of Eq. 9 (paper: 0.5 and 0.001).
        ema: a model EMA with a ``.module`` (e.g. timm's ``ModelEmaV3``), grown in step with the model.
        accelerator: the ``accelerate.Accelerator`` that prepared ``model`` and ``optimizer``.
        reset_optimizer_state: start every parameter's optimizer state afresh at each growth.

    A model on the CPU also sets glibc's malloc to keep freed memory (:func:`growres.keep_freed_cpu_memory`):
    without it, a grown model steps up to ~20% slower than the same architecture built directly.

    A model sharded with FSDP2's ``fully_shard`` grows shard-locally (:func:`growres.grow_sharded`): every block a
    new block copies must be sharded on its own, which is checked here.
    """

    def __init__(
            self,
            model: nn.Module,
            optimizer: torch.optim.Optimizer,
            plan: GrowthPlan | None = None,
            *,
            steps_per_epoch: int | None = None,
            strategy: str = "copy",
            lr_max: float = 0.5,
            lr_min: float = 0.001,
            ema: Any = None,
            accelerator: Any = None,
            reset_optimizer_state: bool = False,
    ):
        get_strategy(strategy)  # an unknown name is refused here, not at the first growth
        if not 0 <= lr_min <= lr_max or lr_max <= 0:
            raise GrowresError(f"Need 0 <= lr_min <= lr_max and lr_max > 0, got lr_min={lr_min}, lr_max={lr_max}.")
        self.model, self.optimizer = model, optimizer
        self.accelerator, self.ema = accelerator, ema
        self.strategy, self.reset_optimizer_state = strategy, reset_optimizer_state
        self.lr_max, self.lr_min = lr_max, lr_min
        self.steps_per_epoch = steps_per_epoch
        self.adapter = get_adapter(self._bare_model())
        if any(p.device.type == "cpu" for p in self._bare_model().parameters()):
            keep_freed_cpu_memory()  # else a grown model re-faults its activations every step (growres.allocator)
        self.plan = plan if plan is not None else self._default_plan()
        self._check_plan()
        if self.plan.grow and is_sharded(self._bare_model()):  # refused now, not at the first growth, hours later
            from .sharding import check_shard_local
            check_shard_local(self._bare_model(), strategy)
        self.cycle_starts, self.total_steps = self.plan.to_steps(steps_per_epoch)
        self.step_count = 0
        self.cycle = 0  # 0-based index of the current cycle
        self.records: list[GrowthRecord] = []
        self._set_lr()

    # -- plan ----------------------------------------------------------------------------------------

    def _planned_interpolations(self) -> int | None:
        return self.adapter.planned_interpolations(self._bare_model())

    def _default_plan(self) -> GrowthPlan:
        return default_plan(self._planned_interpolations())

    def _check_plan(self) -> None:
        check_plan(self.plan, self._planned_interpolations())

    # -- the training-loop interface -----------------------------------------------------------------

    @property
    def lr(self) -> float:
        """The learning rate of the coming optimizer step (before any per-group ``lr_scale``)."""
        restarts = self.cycle_starts if self.plan.restart_lr else ()
        return cyclic_cosine_lr(self.step_count, restarts, self.total_steps, self.lr_max, self.lr_min)

    @property
    def layers(self) -> tuple[int, ...]:
        return stage_layers(self._bare_model())

    @property
    def step_size(self) -> float:
        """h of the model, or, for a model without an explicit h, h relative to the start: the strategy's
        ``step_factor ** growths`` (0.5 ** growths for the paper's copy, 1 for stack)."""
        return self._step_size(growths=len(self.records))

    def _step_size(self, growths: int) -> float:
        explicit = self.adapter.step_size(self._bare_model())
        return explicit if explicit is not None else get_strategy(self.strategy).step_factor ** growths

    @property
    def step_ends_cycle(self) -> bool:
        """Whether the coming :meth:`step` ends a cycle (the last step before a cycle start, or of training):
        the moment to evaluate or export the cycle's model, before it grows."""
        return self.step_count + 1 in self.cycle_starts or self.step_count + 1 == self.total_steps

    def step(self) -> GrowthRecord | None:
        """Advance one optimizer step; at a cycle start, grow (if the plan grows). Returns the growth record."""
        self.step_count += 1
        record = None
        if self.step_count in self.cycle_starts:
            self.cycle += 1
            if self.plan.grow:
                record = self._grow()
        self._set_lr()
        return record

    def _set_lr(self) -> None:
        lr = self.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    # -- growth ---------------------------------------------------------------------------------------

    def _bare_model(self) -> nn.Module:
        return unwrapped(self.model, self.accelerator)

    def _grow(self, carry_state: bool = True) -> GrowthRecord:
        started = time.perf_counter()
        accelerator = self.accelerator
        if accelerator is not None:
            accelerator.wait_for_everyone()
        model = self._bare_model()
        # the torch optimizer under accelerate's AcceleratedOptimizer
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)

        if is_sharded(model):  # with FSDP2, by hand or by accelerate's FSDP plugin: each new block from its shards
            from .sharding import grow_sharded  # imported only where FSDP2 exists (torch >= 2.6 with distributed)
            sources = grow_sharded(model, self.strategy)  # shard-local: new parameters -> their sources
        else:
            sources = grow(model, self.strategy)
        optimizer = rebuild_optimizer(
            optimizer, model, sources, reset_state=self.reset_optimizer_state or not carry_state
        )
        if self.ema is not None:
            grow(self.ema.module, self.strategy)

        if accelerator is None:
            self.model, self.optimizer = model, optimizer
        else:
            # Surgery on a DDP-wrapped model would leave the new parameters out of the gradient reduction:
            # prepare the grown model anew. free_memory() forgets the old model and optimizer (else
            # save_state writes model_1/optimizer_1), and the prepared dataloaders are registered again
            # so their sampler states keep being checkpointed. The marker would make prepare() skip the model.
            # Under accelerate's FSDP2 the model was re-sharded above; prepare() leaves an FSDPModule as it is and
            # re-points the optimizer at its parameters by name (untested: accelerate does not shard on CPU).
            model.__dict__.pop("_is_accelerate_prepared", None)
            accelerator.unwrap_model(model, keep_fp32_wrapper=False)  # prepare() wraps its forward in autocast anew
            dataloaders = list(accelerator._dataloaders)
            step = accelerator.step
            accelerator.free_memory()
            accelerator.step = step
            self.model, self.optimizer, *_ = accelerator.prepare(model, optimizer, *dataloaders)
        self._set_lr()

        steps_per_epoch = self.steps_per_epoch if self.plan.unit == "epoch" else None
        record = GrowthRecord(
            step=self.step_count,
            epoch=self.step_count / steps_per_epoch if steps_per_epoch else None,
            cycle=self.cycle + 1,
            layers=stage_layers(model),
            step_size=self._step_size(growths=len(self.records) + 1),
            num_params=sum(p.numel() for p in model.parameters()),
            seconds=time.perf_counter() - started,
        )
        self.records.append(record)
        return record

    # -- checkpointing ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Cycle, depth and h, plus the plan: enough to rebuild the right depth before loading weights."""
        return {
            "step": self.step_count,
            "cycle": self.cycle,
            "layers": list(self.layers),
            "step_size": self.step_size,
            "strategy": self.strategy,
            "plan": asdict(self.plan),
            "records": [asdict(r) for r in self.records],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Grow the model to the checkpoint's depth (weights and optimizer state are loaded after this)."""
        saved_plan = GrowthPlan(**state["plan"])
        if saved_plan != self.plan or state["strategy"] != self.strategy:
            raise GrowresError(
                f"The checkpoint was made with plan {saved_plan} and strategy {state['strategy']!r}; this run has "
                f"plan {self.plan} and strategy {self.strategy!r}."
            )
        growths = len(state["records"])
        if growths < len(self.records) or state["cycle"] < self.cycle:
            raise GrowresError("Cannot load a growth state from an earlier cycle into a model that has grown further.")
        self.cycle = state["cycle"]
        self.step_count = state["step"]
        while len(self.records) < growths:
            self._grow(carry_state=False)
        self.records = [GrowthRecord(**{**r, "layers": tuple(r["layers"])}) for r in state["records"]]
        if list(self.layers) != list(state["layers"]):
            raise GrowresError(f"Rebuilt depth {self.layers} differs from the checkpoint's {tuple(state['layers'])}.")
        self._set_lr()
