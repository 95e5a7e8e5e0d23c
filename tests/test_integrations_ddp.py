"""growres.integrations.ddp.refresh_ddp: the private DDP methods it relies on (torch 2.14), pinned in one process.

A one-rank gloo group is enough to see which parameters the reducer buckets, through a communication hook; that the
replicas of a real 2-process run stay identical through growth is tested by the trainers' slow tests.
"""
import pytest
import torch
import torch.distributed as dist
import torch.nn as nn

from growres.integrations.ddp import refresh_ddp


@pytest.fixture
def one_rank_group():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def reduced_parameters(ddp, model) -> set[str]:
    """The names of the parameters whose gradients the next backward hands to the communication hook."""
    seen = []

    def recording_hook(state, bucket):
        seen.extend(bucket.parameters())
        future = torch.futures.Future()
        future.set_result(bucket.buffer())
        return future

    ddp.register_comm_hook(None, recording_hook)
    ddp(torch.randn(3, 4)).sum().backward()
    ddp._comm_hooks.clear()  # (the reducer keeps its hook; a test model is dropped afterwards)
    names = {id(p): name for name, p in model.named_parameters()}
    return {names[id(p)] for p in seen}


def test_refresh_makes_ddp_reduce_the_parameters_added_after_it_was_built(one_rank_group):
    model = nn.Sequential(nn.Linear(4, 4))
    ddp = nn.parallel.DistributedDataParallel(model)
    model.append(nn.Linear(4, 4))  # growth adds a block to the wrapped module
    stale = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(4, 4)))
    stale.module.append(nn.Linear(4, 4))
    assert reduced_parameters(stale, stale.module) == {"0.weight", "0.bias"}  # without: the new block is left out

    refresh_ddp(ddp)
    assert reduced_parameters(ddp, model) == {"0.weight", "0.bias", "1.weight", "1.bias"}


def test_refresh_keeps_the_users_communication_hook(one_rank_group):
    model = nn.Sequential(nn.Linear(4, 4))
    ddp = nn.parallel.DistributedDataParallel(model)
    calls = []

    def counting_hook(state, bucket):
        calls.append(len(bucket.parameters()))
        future = torch.futures.Future()
        future.set_result(bucket.buffer())
        return future

    ddp.register_comm_hook(None, counting_hook)
    model.append(nn.Linear(4, 4))
    refresh_ddp(ddp)
    ddp(torch.randn(3, 4)).sum().backward()
    assert sum(calls) == 4  # the hook saw every parameter, the new ones included
