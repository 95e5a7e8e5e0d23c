"""Re-registering a grown module's parameters with the DistributedDataParallel wrapper that already holds it.

Trainers keep their DDP wrapper where a callback cannot replace it (the Hugging Face ``Trainer`` keeps it in a local
variable of its loop). Parameters added to the wrapped module after the wrapper was built get no gradient hooks and
are never all-reduced (pytorch#12603): replicas would drift apart silently. :func:`refresh_ddp` rebuilds the
wrapper's reducer over the module's current parameters, in place, the way DDP's own ``__setstate__`` rebuilds it
after unpickling. This module is growres' one use of DDP's private methods; ``tests/test_integrations_ddp.py``
pins them.
"""
import torch.nn as nn

__all__ = ["refresh_ddp"]


def refresh_ddp(ddp: nn.parallel.DistributedDataParallel) -> None:
    """Make ``ddp`` reduce the gradients of every parameter its module has now (call it after growing the module).

    No collective: the replicas must already be identical (growth is deterministic on identical replicas).
    """
    ddp._remove_autograd_hooks()  # else the old reducer's hooks would fire on the old parameters too
    ddp._module_parameters = [param for name, param in ddp.module.named_parameters()
                              if name not in ddp.parameters_to_ignore]
    parameters, expect_sparse_gradient = ddp._build_params_for_reducer()  # also re-collects the buffers to sync
    param_to_name = ddp._build_debug_param_to_name_mapping(parameters)
    ddp._ddp_init_helper(parameters, expect_sparse_gradient, param_to_name, ddp.static_graph)
    # communication hooks live on the reducer: register the user's again on the new one
    hooks, ddp._comm_hooks = ddp._comm_hooks, []
    for hook, state in hooks:
        ddp.register_comm_hook(state, hook)
