"""Growth of a model sharded with FSDP2 (``torch.distributed.fsdp.fully_shard``) in a live run.

FSDP2 turns every parameter of a ``fully_shard``-ed module into a DTensor holding this rank's shard. A new block is a
copy of an old block of the same shapes, sharded with the same mesh and placements, so on every rank the new block's
shard is a copy of its source's local shard: :func:`grow_sharded` grows shard-locally, without any collective.

1. It checks first (before anything changes) that every block a new block copies is sharded on its own
   (``fully_shard(block)``: its parameters are in its own FSDP group, not in the root's), with a policy growres can
   read back and apply again.
2. Each new block is made by :func:`growres.grow` through a block copier: a structural copy of the source with
   parameters on the meta device (FSDP refuses ``deepcopy``, so its additions are lifted for the length of the copy),
   ``fully_shard`` with the source's policy, materialised on the device of the source's shards, then the source's
   local shards and buffers copied in. Full tensors are never materialised; the extra memory is the new shards.
3. The strategy places and scales the blocks as for an unsharded model: branch scales are in-place multiplications,
   which DTensor runs on each local shard, so the grown parameters equal those of the same weights grown unsharded,
   bit for bit.
4. The root's lazily initialised FSDP state is refreshed to take in the new blocks' states.

Old blocks keep their FSDP states and their parameter objects, so an optimizer keeps their state as it is; the
returned mapping holds each new parameter's source, whose state :func:`growres.rebuild_optimizer` copies (a DTensor
copy: shard to shard).

``shard_local=False`` keeps the earlier path, which every rank pays for with the full model: it gathers every
parameter to its full tensor, removes FSDP, grows the plain model and shards it again, every module with its own
settings. ``benchmarks/sharded_growth.py`` compares the two.

What relies on FSDP2's private state (torch 2.14.1) is in one section below, pinned by ``tests/test_fsdp.py``.
"""
import copy
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.distributed._composable.contract import REGISTRY_KEY, STATE_KEY
from torch.distributed._composable_state import _module_state_mapping
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, OffloadPolicy, fully_shard
from torch.distributed.tensor import Shard

from .errors import GrowresError
from .growth import get_adapter, grow, module_class, plan_growth, uncompiled

__all__ = ["ShardingPolicy", "check_shard_local", "grow_sharded", "sharding_policies"]


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


# -- FSDP2 internals (torch 2.14.1, torch/distributed/fsdp/_fully_shard/) ------------------------------------------
# Everything growres reads or writes of FSDP's private state is in this section; tests/test_fsdp.py pins it (the
# policies read back, the copies' shards, no collective during growth, the root's records after growth).


def _state(module: FSDPModule):
    return module._get_fsdp_state()


def _fsdp_params(module: FSDPModule) -> list:
    """FSDP's records (``FSDPParam``) of the parameters ``fully_shard(module)`` manages."""
    return [param for group in _state(module)._fsdp_param_groups for param in group.fsdp_params]


def _owners(fsdp_param) -> list[tuple[nn.Module, str]]:
    """Where a managed parameter is registered: (module, attribute name), tied registrations included."""
    info = fsdp_param._module_info
    return [(info.module, info.param_name), *zip(info.shared_modules, info.shared_param_names)]


def _policy(module: FSDPModule) -> ShardingPolicy:
    state = _state(module)
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


@contextmanager
def _fsdp_lifted(block: nn.Module):
    """For the length of the context, ``block`` and its submodules carry nothing of FSDP's, so ``copy.deepcopy``
    copies the plain module (an ``FSDP<Block>`` refuses deepcopy, and its hooks and state would drag FSDP's records of
    the whole model into the copy); everything is put back as it was, hook order included.

    Lifted from every ``fully_shard``-ed module inside: the ``FSDP<Block>`` class, the composable-API state and
    registry entries of its ``__dict__``, and the hooks FSDP registered (forward pre/post hooks of the state, each
    parameter's load-state-dict post hook, each group's state-dict pre hooks), by their handles.
    """
    sharded = [module for module in block.modules() if isinstance(module, FSDPModule)]
    handles = []
    for module in sharded:
        state = _state(module)
        handles += [state._pre_forward_hook_handle, state._post_forward_hook_handle]
        for group in state._fsdp_param_groups:
            handles += [*group._module_to_pre_save_state_dict_hook_handle.values(),
                        *group._module_to_pre_load_state_dict_hook_handle.values()]
            handles += [param._post_load_hook_handle for param in group.fsdp_params]
    hook_dicts = {}  # every dict a handle removes from, as it was: restored whole, so the hooks keep their order
    for handle in handles:
        for ref in (handle.hooks_dict_ref, *handle.extra_dict_ref):
            if (hooks := ref()) is not None:
                hook_dicts[id(hooks)] = (hooks, OrderedDict(hooks))
    lifted = [(module, type(module), module.__dict__.pop(STATE_KEY), module.__dict__.pop(REGISTRY_KEY))
              for module in sharded]
    try:
        for handle in handles:
            handle.remove()
        for module in sharded:
            module.__class__ = module_class(module)  # FSDP<Block> -> Block
        yield
    finally:
        for module, fsdp_cls, states, registry in lifted:
            module.__class__ = fsdp_cls
            module.__dict__[STATE_KEY], module.__dict__[REGISTRY_KEY] = states, registry
        for hooks, saved in hook_dicts.values():
            hooks.clear()
            hooks.update(saved)


def _refresh_roots(model: nn.Module) -> None:
    """Make every root FSDP state under ``model`` see the FSDP states of the modules now under it.

    A root state's lazy init (``FSDPState._lazy_init``, at its first forward) records the states of every sharded
    module under it (``_state_ctx.all_states``, which the root's forward and backward iterate), marks them non-roots
    (``_is_root = False``), points them at its shared contexts (``_state_ctx``, ``_comm_ctx``) and names their groups
    (``_module_fqn``). It runs once: a block sharded later would initialise itself as a second root at its first
    forward, with contexts of its own (so what is set on the root, such as ``set_is_last_backward`` for gradient
    accumulation, would miss it) and, as FSDP does for a root, keeping its parameters gathered after forward. No
    public API re-runs it, so this undoes what it set (``_is_root`` of every state under the root, the groups'
    ``_module_fqn``, which it would otherwise extend, and the root's list of states, which it would otherwise extend
    with duplicates) and runs it again: at growth, between iterations, where no collective is in flight. A root not
    yet initialised (a model grown before its first forward, as on resume) is left alone: its first forward sees
    every block.
    """
    roots = [module for module in model.modules() if isinstance(module, FSDPModule) and _state(module)._is_root]
    for root in roots:
        for module in root.modules():
            if isinstance(module, FSDPModule):
                state = _state(module)
                state._is_root = None
                for group in state._fsdp_param_groups:
                    group._module_fqn = None
        root_state = _state(root)
        root_state._state_ctx.all_states.clear()  # the context object stays: it holds the user's is_last_backward
        root_state._lazy_init()


def _remove_fsdp(module: FSDPModule) -> dict[nn.Parameter, nn.Parameter]:
    """The gather path: replace each sharded parameter of ``module`` by its gathered full tensor and remove FSDP from
    the module, undoing what ``fully_shard`` installed (torch has no public inverse). Returns each full parameter's
    shard."""
    state = _state(module)
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


# -- policies and checks -----------------------------------------------------------------------------------------


def sharding_policies(model: nn.Module) -> dict[nn.Module, ShardingPolicy]:
    """How each sharded module of ``model`` was sharded, bottom-up (the order ``fully_shard`` needs)."""
    return {module: _policy(module) for module in reversed(list(model.modules())) if isinstance(module, FSDPModule)}


def _unmanaged(model: nn.Module, within: nn.Module) -> list[str]:
    """Names (in ``model``) of the parameters under ``within`` that no ``fully_shard``-ed module under ``within``
    manages: those sharded only as part of an ancestor's group, and ``ignored_params``."""
    sharded = [module for module in within.modules() if isinstance(module, FSDPModule)]
    managed = {owner for module in sharded for param in _fsdp_params(module) for owner in _owners(param)}
    inside = set(within.modules())
    return [f"{owner_name}.{name}".lstrip(".")
            for owner_name, owner in model.named_modules() if owner in inside
            for name, param in owner._parameters.items() if param is not None and (owner, name) not in managed]


def check_shard_local(model: nn.Module, strategy: str = "copy") -> list[list[nn.Module]]:
    """Refuse, with a GrowresError and before anything changes, a sharded model that shard-local growth cannot grow
    with ``strategy``; return, per stage, the block each new block copies.

    Each block a new block copies must be sharded on its own: every parameter of it managed by ``fully_shard`` of the
    block (or of modules inside it), each such call of one module, as FSDP's per-block wrapping does. A block whose
    parameters sit in an ancestor's FSDP group (a model sharded only at the root) has no shards of its own to copy.
    """
    model = uncompiled(model)
    plans = plan_growth(model, strategy)
    names = {module: name for name, module in model.named_modules()}
    for source in {block: None for plan in plans for block in plan}:
        unmanaged = _unmanaged(model, source)
        if unmanaged:
            raise GrowresError(
                f"Shard-local growth copies each block's own shards, but {unmanaged[:3]} of block "
                f"{names[source]!r} are not sharded by a fully_shard of that block (a block sharded only as part of "
                "the root, or fully_shard(..., ignored_params=...)): apply fully_shard to every block, then the "
                "root, or grow with growres.grow_sharded(model, shard_local=False), which gathers the full model "
                "on every rank."
            )
        for module in source.modules():
            if isinstance(module, FSDPModule):
                _policy(module)  # refuses what cannot be applied again
    return plans


# -- shard-local growth --------------------------------------------------------------------------------------------


def _meta_like(param: nn.Parameter) -> nn.Parameter:
    """An unallocated parameter of ``param``'s full (global) shape and dtype."""
    return nn.Parameter(torch.empty(param.shape, dtype=param.dtype, device="meta"), requires_grad=param.requires_grad)


def _copy_sharded_block(source: nn.Module) -> nn.Module:
    """A copy of ``source``, sharded as ``source`` is, made from this rank's shards alone (no collective): its
    parameters' local shards and its buffers equal ``source``'s."""
    sharded = [module for module in source.modules() if isinstance(module, FSDPModule)]
    policies = [_policy(module) for module in sharded]
    params = dict(source.named_parameters())
    # each parameter (a DTensor shard) is copied as an unallocated parameter of its full shape, which fully_shard
    # shards as it would a full one; buffers (whole on every rank) are copied as they are
    memo = {id(param): _meta_like(param) for param in params.values()}
    with _fsdp_lifted(source):
        new = copy.deepcopy(source, memo)
    counterpart = dict(zip(source.modules(), new.modules(), strict=True))
    for module, policy in reversed(list(zip(sharded, policies))):  # bottom-up, as fully_shard needs
        policy.apply(counterpart[module])
    # allocate the shards where the source's are (Module.to_empty would also empty the buffers); FSDPModule._apply
    # then lays each out as FSDP does (padded to the size of rank 0's shard)
    device = next(iter(params.values())).to_local().device if params else None
    new._apply(lambda tensor: torch.empty_like(tensor, device=device) if tensor.is_meta else tensor)
    with torch.no_grad():
        for (name, param), (source_name, source_param) in zip(new.named_parameters(), params.items(), strict=True):
            assert name == source_name, (name, source_name)
            param.to_local().copy_(source_param.to_local())  # to_local() is a view of the shard: this writes it
    return new


def _grow_shard_local(model: nn.Module, strategy: str) -> dict[nn.Parameter, nn.Parameter]:
    check_shard_local(model, strategy)  # refusals come while the model is as it was
    for module in model.modules():  # register the shards (not gathered parameters), which growth copies and scales
        if isinstance(module, FSDPModule):
            module.reshard()  # public, local: frees what a forward left gathered (reshard_after_forward=False)
    sources = grow(model, strategy, copy_block=_copy_sharded_block)
    _refresh_roots(model)
    return sources


# -- the gather path -----------------------------------------------------------------------------------------------


def _grow_gathering(model: nn.Module, strategy: str) -> dict[nn.Parameter, nn.Parameter]:
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


def grow_sharded(model: nn.Module, strategy: str = "copy", *, shard_local: bool = True
                 ) -> dict[nn.Parameter, nn.Parameter]:
    """Interpolate a model sharded with ``fully_shard``, in place; return, like :func:`growres.grow`, the parameter
    each new parameter continues, for :func:`growres.rebuild_optimizer` to carry the (sharded) optimizer state over.

    ``shard_local=True`` (the default, what :class:`growres.GrowthScheduler` uses): each new block is sharded as its
    source and copied from this rank's shards; no collective, and a rank's extra memory is the new blocks' shards and
    buffers. Old parameters stay the same objects; the mapping holds the new ones. Every block that is copied must be
    sharded on its own (see :func:`check_shard_local`). Call it on every rank, as every FSDP operation.

    ``shard_local=False``: gather every parameter, remove FSDP, grow the plain model and shard it again, every module
    with its own settings. Collective, and every rank holds the full model for the length of the growth; here the
    mapping also covers every re-sharded parameter (a new object standing for the one it replaces).
    """
    model = uncompiled(model)
    return _grow_shard_local(model, strategy) if shard_local else _grow_gathering(model, strategy)
