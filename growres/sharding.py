"""Growth of a model sharded with FSDP2 (``torch.distributed.fsdp.fully_shard``) in a live run.

FSDP2 turns every parameter of a ``fully_shard``-ed module into a DTensor holding this rank's shard, and refuses to
deep-copy such a module, so blocks cannot be copied where they are. :func:`grow_sharded` therefore unshards, grows,
and shards again:

1. it records how each sharded module was sharded (mesh, ``reshard_after_forward``, mixed precision, offloading,
   each parameter's shard dimension);
2. it gathers every parameter to its full tensor and removes FSDP from the modules, leaving the plain model;
3. it grows that model with :func:`growres.grow`, exactly as an unsharded run does (so the gathered parameters equal
   those of the same model grown unsharded, bit for bit);
4. it shards again, bottom-up: every module that was sharded with its own settings, each new block with those of
   the block it copies.

Every rank holds the full model (gathered on the device of its shards) for the length of the growth.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.distributed._composable.contract import REGISTRY_KEY, STATE_KEY
from torch.distributed._composable_state import _module_state_mapping
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, OffloadPolicy, fully_shard
from torch.distributed.tensor import Shard

from .errors import GrowresError
from .growth import get_adapter, grow, module_class, plan_growth

__all__ = ["ShardingPolicy", "grow_sharded", "sharding_policies"]


@dataclass(frozen=True)
class ShardingPolicy:
    """The arguments of one ``fully_shard`` call, read back from the module it sharded."""
    mesh: DeviceMesh
    reshard_after_forward: bool | int | None  # None: FSDP's default (True, except False for the root)
    mp_policy: MixedPrecisionPolicy
    offload_policy: OffloadPolicy
    placements: dict[str, Shard]  # each managed parameter's shard dim, by its name inside the module

    def apply(self, module: nn.Module) -> None:
        by_param = {param: self.placements[name] for name, param in module.named_parameters()
                    if name in self.placements}
        fully_shard(module, mesh=self.mesh, reshard_after_forward=self.reshard_after_forward,
                    mp_policy=self.mp_policy, offload_policy=self.offload_policy,
                    shard_placement_fn=by_param.get)


def _fsdp_params(module: FSDPModule) -> list:
    """FSDP's records of the parameters ``fully_shard(module)`` manages."""
    return [param for group in module._get_fsdp_state()._fsdp_param_groups for param in group.fsdp_params]


def _owners(fsdp_param) -> list[tuple[nn.Module, str]]:
    """Where a managed parameter is registered: (module, attribute name), tied registrations included."""
    info = fsdp_param._module_info
    return [(info.module, info.param_name), *zip(info.shared_modules, info.shared_param_names)]


def _policy(module: FSDPModule) -> ShardingPolicy:
    state = module._get_fsdp_state()
    if len(state._modules) != 1 or len(state._fsdp_param_groups) != 1:
        raise GrowresError(
            f"growres re-shards modules given to fully_shard one at a time; {type(module).__name__} was sharded "
            "together with other modules or with per-parameter meshes."
        )
    group = state._fsdp_param_groups[0]
    if group.mesh_info.is_spmd_mesh:
        raise GrowresError("growres cannot re-shard a model sharded with fully_shard(..., dp_mesh_dims=...).")
    # parameter names from FSDP's records: the registered parameters may be the unsharded ones just now
    prefixes = {submodule: f"{name}." if name else "" for name, submodule in module.named_modules()}
    placements = {prefixes[p._module_info.module] + p._module_info.param_name: p.fsdp_placement
                  for p in _fsdp_params(module)}
    if state._auto_reshard_after_forward:
        reshard_after_forward = None
    elif group.post_forward_mesh_info is None:
        reshard_after_forward = False
    elif group.post_forward_mesh_info is group.mesh_info:
        reshard_after_forward = True
    else:
        reshard_after_forward = group.post_forward_mesh_info.shard_mesh_size
    return ShardingPolicy(group.mesh_info.mesh, reshard_after_forward, group.mp_policy, group.offload_policy,
                          placements)


def sharding_policies(model: nn.Module) -> dict[nn.Module, ShardingPolicy]:
    """How each sharded module of ``model`` was sharded, bottom-up (the order ``fully_shard`` needs)."""
    return {module: _policy(module) for module in reversed(list(model.modules())) if isinstance(module, FSDPModule)}


def _remove_fsdp(module: FSDPModule) -> dict[nn.Parameter, nn.Parameter]:
    """Replace each sharded parameter of ``module`` by its gathered full tensor and remove FSDP from the module,
    undoing what ``fully_shard`` installed (torch has no public inverse). Returns each full parameter's shard."""
    state = module._get_fsdp_state()
    full_to_sharded = {}
    for group in state._fsdp_param_groups:
        for fsdp_param in group.fsdp_params:
            sharded = fsdp_param.sharded_param  # the parameter's truth, also while the module is unsharded
            with torch.no_grad():
                full = nn.Parameter(sharded.full_tensor(), requires_grad=sharded.requires_grad)
            for owner, name in _owners(fsdp_param):
                setattr(owner, name, full)
            fsdp_param._post_load_hook_handle.remove()
            full_to_sharded[full] = sharded
        for handles in (group._module_to_pre_save_state_dict_hook_handle,
                        group._module_to_pre_load_state_dict_hook_handle):
            for handle in handles.values():
                handle.remove()
    state._pre_forward_hook_handle.remove()
    state._post_forward_hook_handle.remove()
    states = module.__dict__[STATE_KEY]
    for api in [api for api, api_state in states.items() if api_state is state]:
        del states[api]
    del module.__dict__[REGISTRY_KEY]["fully_shard"]
    del _module_state_mapping[module]
    module.__class__ = module_class(module)  # FSDP<Block> -> Block
    return full_to_sharded


def grow_sharded(model: nn.Module, strategy: str = "copy") -> dict[nn.Parameter, nn.Parameter]:
    """Interpolate a model sharded with ``fully_shard``, in place, and shard it again with the same policy.

    Collective: every rank of the mesh calls it at the same point. Returns, like :func:`growres.grow`, the
    parameter each new parameter continues, for :func:`growres.rebuild_optimizer` to carry the (sharded) optimizer
    state over; here that covers every re-sharded parameter (a new object standing for the parameter it replaces)
    as well as the copies.
    """
    plan_growth(model, strategy)  # refusals come while the model is still sharded
    policies = sharding_policies(model)
    managed = {owner for module in policies for param in _fsdp_params(module) for owner in _owners(param)}
    under_fsdp = {submodule for module in policies for submodule in module.modules()}
    unmanaged = [f"{owner_name}.{name}".lstrip(".")
                 for owner_name, owner in model.named_modules() if owner in under_fsdp
                 for name, param in owner._parameters.items() if param is not None and (owner, name) not in managed]
    if unmanaged:  # sharding their module again would shard them
        raise GrowresError(f"growres re-shards sharded modules whose every parameter FSDP manages; {unmanaged[:3]} "
                           "are not (fully_shard(..., ignored_params=...) is not supported).")
    adapter = get_adapter(model)
    old_blocks = [block for stage in adapter.stages(model) for block in stage]

    full_to_old = {}
    for module in policies:
        full_to_old.update(_remove_fsdp(module))
    block_of = {param: block for block in old_blocks for param in block.parameters()}
    copies = grow(model, strategy)

    names_after_growth = {param: name for name, param in model.named_parameters()}
    for stage in adapter.stages(model):
        for block in stage:  # a new block is sharded as the block it copies
            first = next(block.parameters(), None)
            if first in copies and block_of[copies[first]] in policies:
                policies[block] = policies[block_of[copies[first]]]
    for module in reversed(list(model.modules())):  # bottom-up
        if module in policies:
            policies[module].apply(module)

    sharded = dict(model.named_parameters())
    continues = {sharded[name]: full_to_old.get(copies.get(full, full), copies.get(full, full))
                 for full, name in names_after_growth.items()}
    return {new: old for new, old in continues.items() if new is not old}  # unmanaged parameters stay themselves
