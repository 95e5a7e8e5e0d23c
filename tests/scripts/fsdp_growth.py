"""Launched by tests/test_fsdp.py under ``torchrun --nproc-per-node N`` (gloo, CPU): grow models sharded with FSDP2.

Each model, sharded per block and at the root with ``fully_shard``, is grown by GrowthScheduler in a live run (with
the strategy a run names, ``MODEL:STRATEGY``, else the paper's copy), each rank training on its own data. Around each
growth (the ``scheduler.step()`` that grows: surgery and optimizer rebuild) every rank counts the collectives
(``CommDebugMode``) and measures how far its resident memory rises (``growres.allocator.peak_resident_memory``).
Right after each growth every rank checks what only a correct shard-local growth gives: no collective ran; the
memory rose by no more than the new blocks' shards, buffers and optimizer state (plus the constants below); the
gathered parameters equal those of the same weights grown unsharded (bit for bit) and, with the buffers, are identical
across ranks; every block and the root are sharded, the new blocks with their source's settings; the old parameters and
their optimizer state are the same objects as before; the root's FSDP state lists the new blocks' states; the
optimizer holds exactly the model's parameters, each in its source's group with its source's (sharded) momentum; and
the loss on a fixed batch is the unsharded grown model's. The step after, it checks that every new parameter received
a gradient and moved, and that no new block became an FSDP root. At the grown depth it saves a
torch.distributed.checkpoint, resumes it into a fresh model grown to that depth by the growth state, and checks that
the next step is the uninterrupted run's. Rank 0 writes the report; every rank's memory and collectives go in it.
"""
import json
import math
import sys
import weakref

import timm
import timm.optim
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, Shard
from torch.distributed.tensor.debug import CommDebugMode

import growres  # noqa: F401  (registers the growres models)
from growres import GrowresError, GrowthPlan, GrowthScheduler, get_adapter, grow
from growres.allocator import peak_resident_memory
from growres.growth import is_sharded
from growres.sharding import grow_sharded, sharding_policies

# What a rank may add during growth beyond the new blocks' local shards (as FSDP lays them out: padded to rank 0's
# size), buffers and optimizer state: the Python objects of the new modules, FSDP's records and DTensor specs, and
# glibc's heap growing by whole pages. Measured with 2 and 4 ranks: at most 0.7 MiB for growth itself (from 2 to 12
# new blocks, from 0.4 to 97 MiB of new shards and state), and at most 1.9 MiB with CommDebugMode recording the
# growth's operations, as here. Allowed: 3 MiB.
CONSTANT_BYTES = 3 * 2**20

# the blocks' fully_shard settings, which every block (old and new) must keep; the root takes the defaults
def shard_channels_in(param: torch.nn.Parameter) -> Shard | None:
    return Shard(1) if param.ndim > 1 else None  # conv weights by input channel, the rest by the default dim 0


BLOCK_SHARDING = {
    "vit": dict(reshard_after_forward=False),
    "growres": dict(mp_policy=MixedPrecisionPolicy(reduce_dtype=torch.float32), shard_placement_fn=shard_channels_in),
    "vit-wide": dict(),
}
MODELS = {  # a ViT (one stage, no explicit h) and a growres ResNet (transition blocks, explicit h, BatchNorm)
    # a width of 63 shards unevenly on 2 and 4 ranks: FSDP pads the last ranks' shards, which the copies must match
    "vit": dict(model_name="vit_tiny_patch16_224", depth=2, img_size=32, patch_size=8, embed_dim=63, num_heads=3),
    "growres": dict(model_name="growres_resnet50i"),  # 2-2-2, plans 8-8-8
    # sized for the memory bound: 25 MiB of parameters, which the gather path holds whole on every rank (and more)
    "vit-wide": dict(model_name="vit_tiny_patch16_224", depth=2, img_size=32, patch_size=8, embed_dim=512, num_heads=8),
}
PLANS = {"vit-wide": GrowthPlan(cycles=(1,), total=3, unit="step")}  # one growth; the others grow twice
DEFAULT_PLAN = GrowthPlan(cycles=(3, 6), total=10, unit="step")
# evaluate before growing, as a loop does at a cycle's end (it leaves the ViT's blocks and the root gathered); not for
# the model the memory bound is measured on: growth frees those gathered parameters, and reusing that memory would
# hide what growth allocates
EVAL_BEFORE_GROWTH = {"vit-wide": False}


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(**MODELS[name], num_classes=10)


def blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [block for stage in get_adapter(model).stages(model) for block in stage]


def plan_of(name: str) -> GrowthPlan:
    return PLANS.get(name, DEFAULT_PLAN)


def shard(name: str, mesh, strategy: str) -> GrowthScheduler:
    model = build(name)
    for block in blocks(model):
        fully_shard(block, mesh=mesh, **BLOCK_SHARDING[name])
    fully_shard(model, mesh=mesh)
    optimizer = timm.optim.create_optimizer_v2(model, "momentum", lr=0.05, momentum=0.9, weight_decay=1e-4)
    return GrowthScheduler(model, optimizer, plan_of(name), lr_max=0.05, strategy=strategy)


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(8, 3, 32, 32, generator=gen), torch.randint(0, 10, (8,), generator=gen)


@torch.no_grad()  # a gathered tensor with a graph would keep its parameter alive
def gathered(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.full_tensor() for name, p in model.named_parameters()}


def policies_by_name(model: torch.nn.Module) -> dict:
    name_of = {module: name for name, module in model.named_modules()}
    return {name_of[module]: policy for module, policy in sharding_policies(model).items()}


def optimizer_view(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, tuple[int, torch.Tensor]]:
    """Each parameter's (param group, gathered momentum), by name."""
    group_of = {p: idx for idx, group in enumerate(optimizer.param_groups) for p in group["params"]}
    return {name: (group_of[p], optimizer.state[p]["momentum_buffer"].full_tensor().detach())
            for name, p in model.named_parameters()}


def same_on_all_ranks(tensors: dict[str, torch.Tensor]) -> bool:
    flat = torch.cat([t.flatten() for t in tensors.values()])
    copies = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(copies, flat)
    return all(torch.equal(c, flat) for c in copies)


def every_rank(value):
    """``value`` from every rank, in rank order."""
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def on_all_ranks(result: dict) -> dict:
    """``result`` with each of its checks (booleans) true only where it holds on every rank."""
    flags = every_rank({key: value for key, value in result.items() if isinstance(value, bool)})
    return {**result, **{key: all(rank_flags[key] for rank_flags in flags) for key in flags[0]}}


def local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def padded_shard_bytes(param: DTensor) -> int:
    """This rank's shard as FSDP allocates it: every rank's is padded to rank 0's (torch.chunk's first chunk)."""
    dim = param.placements[-1].dim
    rows = math.ceil(param.shape[dim] / param.device_mesh.size())
    return rows * (param.numel() // param.shape[dim]) * param.element_size()


def memory_bound(model: torch.nn.Module, optimizer: torch.optim.Optimizer, new_params: list[str],
                 buffer_bytes_before: int) -> dict[str, int]:
    """What shard-local growth may add to this rank's memory: the new parameters' (padded) local shards and their
    optimizer state, the new buffers, the largest unpadded shard FSDP re-pads (it lays out a new block's shards one
    parameter at a time, on the ranks it pads), and the constants above."""
    params = dict(model.named_parameters())
    new = [params[name] for name in new_params]
    terms = {
        "new_shards": sum(padded_shard_bytes(p) for p in new),
        "new_optimizer_state": sum(nbytes(local(t)) for p in new for t in optimizer.state[p].values()
                                   if isinstance(t, torch.Tensor)),
        "new_buffers": sum(nbytes(b) for b in model.buffers()) - buffer_bytes_before,
        "repad": max((nbytes(p.to_local()) for p in new if nbytes(p.to_local()) < padded_shard_bytes(p)), default=0),
        "constant": CONSTANT_BYTES,
    }
    terms["bound"] = sum(terms.values())
    return terms


def root_sees_every_block(model: torch.nn.Module) -> bool:
    """The root's FSDP state is the one root, and lists the state of every sharded module, once each, in the model's
    order (FSDP2 internals: what growres.sharding._refresh_roots maintains)."""
    root = model._get_fsdp_state()
    states = [m._get_fsdp_state() for m in model.modules() if isinstance(m, FSDPModule)]
    return (root._is_root is True and root._state_ctx.all_states == states
            and all(state._is_root is False for state in states if state is not root)
            and all(state._state_ctx is root._state_ctx for state in states))


def loss_on(model: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    model.eval()  # BatchNorm from the running statistics, which the probe then leaves as they were
    with torch.no_grad():
        loss = F.cross_entropy(model(data[0]), data[1]).item()
    model.train()
    for module in model.modules():  # modules that do not reshard after forward stay unsharded without a backward
        if isinstance(module, FSDPModule):
            module.reshard()
    return loss


def train_step(scheduler: GrowthScheduler, data, inspect_grads=None, inspect_update=None, seen=None):
    """One step; the callbacks see the model between backward and the update, and between the update and
    ``scheduler.step()`` (which grows at a cycle start: then its collectives and memory go into ``seen``)."""
    loss = F.cross_entropy(scheduler.model(data[0]), data[1])
    scheduler.optimizer.zero_grad()
    loss.backward()
    if inspect_grads is not None:
        inspect_grads(scheduler.model)
    scheduler.optimizer.step()
    if inspect_update is not None:
        inspect_update(scheduler.model)
    if seen is None or scheduler.step_count + 1 not in scheduler.cycle_starts:
        return loss.item(), scheduler.step()
    with CommDebugMode() as comms, peak_resident_memory() as memory:
        record = scheduler.step()
    seen["comms"] = {str(op): count for op, count in comms.get_comm_counts().items()}
    seen["memory"] = memory
    return loss.item(), record


def first_block_name(model: torch.nn.Module) -> str:
    return next(n for n, m in model.named_modules() if m is blocks(model)[0])


def check_growth(name: str, scheduler: GrowthScheduler, before: dict, growths: int, probe) -> dict:
    """Compare the sharded model right after its growth number ``growths`` with the same weights grown unsharded."""
    model = scheduler.model
    reference = build(name)
    for _ in range(growths - 1):
        grow(reference, scheduler.strategy)
    reference.load_state_dict(before["weights"])
    name_before = {p: n for n, p in reference.named_parameters()}
    sources = grow(reference, scheduler.strategy)
    continues = {n: name_before[sources.get(p, p)] for n, p in reference.named_parameters()}
    new_params = sorted(n for n, p in reference.named_parameters() if p in sources)
    after = gathered(model)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    view = optimizer_view(model, scheduler.optimizer)
    policies, block_policy = policies_by_name(model), before["policies"][first_block_name(reference)]
    bound = memory_bound(model, scheduler.optimizer, new_params, before["buffer_bytes"])
    memory = before["memory"]
    kept = [(ref(), state_ref()) for ref, state_ref in before["old_params"]]
    state = scheduler.optimizer.state
    return on_all_ranks({
        "layers": list(scheduler.layers),
        "no_collectives": before["comms"] == {},
        "memory_within_bound": "extra" in memory and memory["extra"] <= bound["bound"],
        "memory": every_rank({"extra": memory.get("extra"), **bound}),
        "comms": every_rank(before["comms"]),
        "equals_unsharded_growth": after.keys() == continues.keys() and all(
            torch.equal(after[n], p) for n, p in reference.named_parameters()) and all(
            torch.equal(buffers[n], b) for n, b in reference.named_buffers()),
        "same_on_all_ranks": same_on_all_ranks(after),  # buffers (BatchNorm statistics) are each rank's own
        "all_sharded": all(isinstance(p, DTensor) for p in model.parameters())
        and all(isinstance(m, FSDPModule) for m in (model, *blocks(model))),
        "same_policy": policies.keys() == {"", *(n for n, m in reference.named_modules() if m in blocks(reference))}
        and policies[""] == before["policies"][""] and all(policies[n] == block_policy for n in policies if n),
        # old blocks keep their shards and optimizer state as they were: the same objects, nothing re-created
        "old_params_kept": set(map(id, model.parameters())) >= {id(p) for p, _ in kept} and all(
            p is not None and state[p]["momentum_buffer"] is momentum for p, momentum in kept),
        "root_sees_new_blocks": root_sees_every_block(model),
        "optimizer_holds_model": sorted(map(id, model.parameters())) == sorted(
            id(p) for group in scheduler.optimizer.param_groups for p in group["params"]),
        "groups_kept": all(view[n][0] == before["optimizer"][src][0] for n, src in continues.items()),
        "momentum_transplanted": all(torch.equal(view[n][1], before["optimizer"][src][1])
                                     for n, src in continues.items()),
        "loss_equals_unsharded": loss_on(model, probe) == loss_on(reference, probe),
        "new_params": new_params,
        "full_model_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
    })


def read_back(policy, block: torch.nn.Module, settings: dict) -> bool:
    """Whether ``policy`` holds the ``fully_shard`` settings the block was sharded with."""
    placement_fn = settings.get("shard_placement_fn", lambda param: None)
    placements = {name: placement_fn(param) or Shard(0) for name, param in block.named_parameters()}
    return policy.placements == placements and all(
        getattr(policy, key) == value for key, value in settings.items() if key != "shard_placement_fn")


def run(name: str, strategy: str, mesh, checkpoint_dir: str) -> dict:
    rank = dist.get_rank()
    probe = batch(seed=1000)
    scheduler = shard(name, mesh, strategy)
    save_at = plan_of(name).total - 1  # steps before the checkpoint; the last step is compared with the resumed run's

    settings = BLOCK_SHARDING[name]
    report = {"growths": [], "losses": [], "policy_read_back": all(  # what the new blocks will be sharded with
        read_back(policy, scheduler.model.get_submodule(block_name), settings)
        for block_name, policy in policies_by_name(scheduler.model).items() if block_name)}
    seen = {}  # what the callbacks of the latest step saw

    def record_grads(model):
        seen["grads"] = {n: p.grad.detach().full_tensor() if p.grad is not None else None
                         for n, p in model.named_parameters()}

    def record_update(model):
        if not scheduler.step_ends_cycle:
            return
        seen["weights"] = {**gathered(model), **{n: b.clone() for n, b in model.named_buffers()}}
        seen["optimizer"] = optimizer_view(model, scheduler.optimizer)
        seen["policies"] = policies_by_name(model)
        state = scheduler.optimizer.state
        seen["old_params"] = [(weakref.ref(p), weakref.ref(state[p]["momentum_buffer"])) for p in model.parameters()]
        seen["buffer_bytes"] = sum(nbytes(b) for b in model.buffers())
        if EVAL_BEFORE_GROWTH.get(name, True):  # the forward leaves the root's and the ViT's blocks' parameters
            model.eval()  # gathered, which growth must not copy or scale in place of the shards
            with torch.no_grad():
                model(probe[0])
            model.train()

    growth, at_growth = None, None
    for step in range(save_at):
        loss, record = train_step(scheduler, batch(seed=100 * step + rank), record_grads, record_update, seen)
        report["losses"].append(loss)
        if growth is not None:  # the step after a growth: every new parameter got a gradient and moved
            grads, moved = seen["grads"], gathered(scheduler.model)
            growth["new_params_got_gradients"] = all(
                grads[n] is not None and bool(grads[n].ne(0).any()) for n in growth["new_params"])
            growth["new_params_moved"] = all(not torch.equal(moved[n], at_growth[n]) for n in growth["new_params"])
            growth["no_new_roots"] = root_sees_every_block(scheduler.model)  # after a forward and backward
            growth.update(on_all_ranks(growth))
            growth = None
        if record is not None:
            growth = check_growth(name, scheduler, seen, growths=len(report["growths"]) + 1, probe=probe)
            growth["step"], growth["seconds"] = record.step, record.seconds
            at_growth = gathered(scheduler.model)
            report["growths"].append(growth)

    # checkpoint at the grown depth: weights and sharded optimizer state through DCP, the growth state beside them
    model_state, optim_state = get_state_dict(scheduler.model, scheduler.optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=checkpoint_dir)
    growth_state = scheduler.state_dict()
    next_data = batch(seed=12345 + rank)
    next_loss, _ = train_step(scheduler, next_data)
    after_next = gathered(scheduler.model)

    resumed = shard(name, mesh, strategy)
    resumed.load_state_dict(growth_state)  # grows to the checkpoint's depth first, then the weights load
    model_state, optim_state = get_state_dict(resumed.model, resumed.optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=checkpoint_dir)
    set_state_dict(resumed.model, resumed.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    resumed_loss, _ = train_step(resumed, next_data)
    report["resume"] = on_all_ranks({
        "layers": list(resumed.layers),
        "next_loss_equal": resumed_loss == next_loss,
        "next_params_equal": all(torch.equal(v, after_next[k]) for k, v in gathered(resumed.model).items()),
    })
    return report


def refusals(mesh) -> dict[str, bool]:
    """What sharded growth refuses, refused before the model changes (it stays sharded at its depth)."""
    def vit(shard_blocks: bool, ignored: bool = False) -> torch.nn.Module:
        model = build("vit")
        for block in blocks(model) if shard_blocks else ():
            # a parameter FSDP does not manage has no shard to copy, and sharding its block again would shard it
            fully_shard(block, mesh=mesh, ignored_params={block.norm1.weight} if ignored else None)
        fully_shard(model, mesh=mesh)
        return model

    refused = {}
    for case, model, strategy, message in (
            ("unmanaged", vit(shard_blocks=True, ignored=True), "copy", "blocks.0.norm1.weight"),
            ("strategy", vit(shard_blocks=True), "bogus", "bogus"),
            # its blocks' parameters are in the root's group: no block has shards of its own to copy
            ("root_only", vit(shard_blocks=False), "copy", "fully_shard to every block")):
        try:
            grow_sharded(model, strategy)
            refused[case] = False
        except GrowresError as error:
            refused[case] = message in str(error) and len(model.blocks) == 2 and is_sharded(model)
    try:  # the scheduler refuses it when it is built, not at its first growth
        GrowthScheduler(model, torch.optim.SGD(model.parameters(), lr=0.1), DEFAULT_PLAN, lr_max=0.05)
        refused["root_only_scheduler"] = False
    except GrowresError as error:
        refused["root_only_scheduler"] = message in str(error)
    return refused


def main(report_path: str, checkpoint_dir: str, *runs: str) -> None:
    """Each of ``runs`` is MODEL or MODEL:STRATEGY."""
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    report = {"world_size": dist.get_world_size(), "refused": on_all_ranks(refusals(mesh))}
    for key in runs:
        name, _, strategy = key.partition(":")
        report[key] = run(name, strategy or "copy", mesh, f"{checkpoint_dir}/{name}-{strategy or 'copy'}")
    if dist.get_rank() == 0:
        with open(report_path, "w") as f:
            json.dump(report, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
