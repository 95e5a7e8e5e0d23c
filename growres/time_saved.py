"""Predicted training time saved by a growth plan (paper Section 4.2, Table 2).

Training time is taken as proportional to the FLOPs of the model trained in each cycle times the
cycle's length; the saving is measured against the last-cycle (full-depth) model trained throughout.
"""
import copy

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import GrowresError
from .growth import grow, uncompiled
from .scheduler import GrowthPlan

__all__ = ["theoretical_time_saved", "forward_flops"]


def forward_flops(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> int:
    """FLOPs of one forward pass on one image (torch's FLOP counter; convs and matmuls)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_size, device=device))
    model.train(was_training)
    return counter.get_total_flops()


def theoretical_time_saved(
        plan: GrowthPlan | int,
        model: nn.Module | None = None,
        input_size: tuple[int, int, int] = (3, 32, 32),
) -> float:
    """Fraction of the full-depth model's training time a plan saves.

    Args:
        plan: an int k is k interpolations dividing training equally: Table 2's figure,
            ``1 - (2 - 2**-k) / (k + 1)`` (0.25 for k=1, 0.42 for k=2). A :class:`GrowthPlan` takes its
            own cycle lengths.
        model: the model at its first-cycle depth. With a plan, each cycle's cost is then its forward FLOPs
            (the stem, transitions and head do not double, so this differs from the ideal figure: for the
            paper's ResNets the cheap stride-2 transitions put it slightly above); without one, a cycle costs
            in proportion to its blocks, as in Table 2. The model is not changed.
        input_size: the input for counting FLOPs (C, H, W).
    """
    if isinstance(plan, int):
        if plan < 0:
            raise GrowresError(f"The number of interpolations must be >= 0, got {plan}.")
        return 1 - (2 - 2.0 ** -plan) / (plan + 1)
    if not plan.grow:
        return 0.0
    bounds = (0, *plan.cycles, plan.total)
    lengths = [end - start for start, end in zip(bounds, bounds[1:])]
    if model is None:
        costs = [2.0 ** (i - len(plan.cycles)) for i in range(len(lengths))]
    else:
        probe = copy.deepcopy(uncompiled(model))
        costs = [forward_flops(probe, input_size)]
        for _ in plan.cycles:
            grow(probe)
            costs.append(forward_flops(probe, input_size))
    spent = sum(length * cost for length, cost in zip(lengths, costs))
    return 1 - spent / (plan.total * costs[-1])
