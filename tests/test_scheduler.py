"""GrowthScheduler: plans, the cyclic cosine LR of Eq. 9, optimizer/EMA through growth, resumption."""
import copy
import math

import pytest
import timm
import timm.optim
import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3

from growres import (
    GrowresError,
    GrowthPlan,
    GrowthScheduler,
    cyclic_cosine_lr,
    rebuild_optimizer,
    theoretical_time_saved,
)

STEP_PLAN = GrowthPlan(cycles=(3, 6), total=9, unit="step")


def make(name="growres_resnet50i", plan=STEP_PLAN, **kwargs):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10)
    optimizer = timm.optim.create_optimizer_v2(model, "sgd", lr=0.5, momentum=0.9, weight_decay=2e-4)
    return GrowthScheduler(model, optimizer, plan, **kwargs)


def batch(seed=0, n=8):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def train_steps(scheduler, steps, ema=None):
    records = []
    for _ in range(steps):
        x, y = batch(scheduler.step_count)
        loss = F.cross_entropy(scheduler.model(x), y)
        scheduler.optimizer.zero_grad()
        loss.backward()
        scheduler.optimizer.step()
        if ema is not None:
            ema.update(scheduler.model)
        record = scheduler.step()
        if record is not None:
            records.append(record)
    return records


@pytest.mark.parametrize("step, expected", [
    (0, 0.5),  # each cycle starts at lr_max
    (30, 0.001 + 0.5 * 0.499 * (1 + math.cos(math.pi * 30 / 60))),
    (59, 0.001 + 0.5 * 0.499 * (1 + math.cos(math.pi * 59 / 60))),
    (60, 0.5),  # restart at the first interpolation
    (85, 0.001 + 0.5 * 0.499 * (1 + math.cos(math.pi * 25 / 50))),
    (110, 0.5),
    (160, 0.001),  # the end of the last cycle
])
def test_cyclic_cosine_lr_is_eq_9(step, expected):
    assert cyclic_cosine_lr(step, (60, 110), 160, 0.5, 0.001) == pytest.approx(expected)


def test_paper_plan_and_scaling():
    assert GrowthPlan() == GrowthPlan.paper() == GrowthPlan(cycles=(60, 110), total=160)
    assert GrowthPlan.paper(total=16).cycles == (6, 11)
    assert GrowthPlan.paper(interpolations=3, total=40).cycles == (10, 20, 30)
    assert GrowthPlan().to_steps(500) == ((30_000, 55_000), 80_000)
    assert GrowthPlan.paper(total=1, grow=False).cycles == ()  # too short to restart: one cycle
    with pytest.raises(GrowresError, match="at least 3 epochs"):
        GrowthPlan.paper(total=2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(cycles=(110, 60)), "strictly increasing"),
    (dict(cycles=(60, 60)), "strictly increasing"),
    (dict(cycles=(60, 170)), "inside"),
    (dict(cycles=(0, 110)), "inside"),
    (dict(unit="hour"), "unit"),
    (dict(total=0), "positive integer"),
])
def test_bad_plans(kwargs, match):
    with pytest.raises(GrowresError, match=match):
        GrowthPlan(**kwargs)


def test_models_supply_their_own_plan():
    assert make(plan=None, steps_per_epoch=10).plan == GrowthPlan()  # growres_resnet50i: two interpolations
    baseline = make("growres_resnet50", plan=None, steps_per_epoch=10)
    assert baseline.plan == GrowthPlan(grow=False)  # final depth: LR restarts at 60 and 110 only


@pytest.mark.parametrize("name, plan, kwargs, match", [
    ("growres_resnet50", STEP_PLAN, {}, "already at its final depth"),
    ("growres_resnet50i", GrowthPlan(cycles=(3,), total=9, unit="step"), {}, "exactly 2"),
    ("growres_resnet50i", GrowthPlan(), {}, "steps_per_epoch"),
    ("growres_resnet50i", STEP_PLAN, dict(strategy="random"), "strategy"),
    ("growres_resnet50i", STEP_PLAN, dict(lr_max=0.001, lr_min=0.5), "lr_min"),
])
def test_bad_scheduler_arguments(name, plan, kwargs, match):
    with pytest.raises(GrowresError, match=match):
        make(name, plan, **kwargs)


def test_unsupported_model_is_refused():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(GrowresError, match="register_adapter"):
        GrowthScheduler(model, torch.optim.SGD(model.parameters(), lr=0.1), STEP_PLAN)


def test_grows_at_cycle_starts_and_restarts_the_lr():
    scheduler = make()
    lrs = []
    records = []
    for _ in range(9):
        lrs.append(scheduler.optimizer.param_groups[0]["lr"])
        records += train_steps(scheduler, 1)
    assert lrs[0] == lrs[3] == lrs[6] == 0.5 and lrs[2] < lrs[1] < lrs[0]
    assert [(r.step, r.cycle, r.layers, r.step_size) for r in records] == [
        (3, 2, (4, 4, 4), 0.5), (6, 3, (8, 8, 8), 0.25)]
    assert records[-1].num_params == 755_802 and all(r.seconds > 0 for r in records)


def test_baseline_restarts_lr_without_growing():
    scheduler = make("growres_resnet14", GrowthPlan(cycles=(3, 6), total=9, unit="step", grow=False))
    lrs = [scheduler.lr]
    assert train_steps(scheduler, 3) == []
    lrs.append(scheduler.lr)
    assert lrs == [0.5, 0.5] and scheduler.layers == (2, 2, 2) and scheduler.cycle == 1


def test_optimizer_rebuild_keeps_groups_hyperparameters_and_momentum():
    scheduler = make()
    old_optimizer = scheduler.optimizer
    train_steps(scheduler, 2)
    momentum = {name: old_optimizer.state[p]["momentum_buffer"].clone()
                for name, p in scheduler.model.named_parameters()}
    train_steps(scheduler, 1)  # grows
    optimizer, model = scheduler.optimizer, scheduler.model
    assert optimizer is not old_optimizer and type(optimizer) is type(old_optimizer)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0, 2e-4]
    assert all(g["momentum"] == 0.9 for g in optimizer.param_groups)
    named = dict(model.named_parameters())
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in named.values()}
    decay = {id(p) for p in optimizer.param_groups[1]["params"]}
    assert all((p.ndim > 1) == (id(p) in decay) for p in named.values())  # norms and biases: no decay
    # momentum: old parameters keep theirs (the momentum buffer was updated by the third step, so compare
    # the new block's state with its source's, and the old block's state object with the old optimizer's)
    assert optimizer.state[named["stages.1.1.conv1.weight"]]["momentum_buffer"].equal(
        optimizer.state[named["stages.1.2.conv1.weight"]]["momentum_buffer"])  # copy of old stages.1.1
    assert optimizer.state[named["stages.0.1.conv1.weight"]]["momentum_buffer"].equal(
        optimizer.state[named["stages.0.0.conv1.weight"]]["momentum_buffer"])
    assert len(optimizer.state) == len(named)
    assert "stages.0.0.conv1.weight" in momentum


@pytest.mark.parametrize("optimizer_class", [torch.optim.AdamW, torch.optim.Adam, torch.optim.RMSprop])
def test_growth_rebuilds_torch_optimizers_with_their_hyperparameters(optimizer_class):
    """torch's AdamW records a default (decoupled_weight_decay) its constructor does not take."""
    torch.manual_seed(0)
    model = timm.create_model("growres_resnet50i", num_classes=10)
    scheduler = GrowthScheduler(model, optimizer_class(model.parameters(), weight_decay=0.05), STEP_PLAN)
    old_groups = [{k: v for k, v in g.items() if k not in ("params", "lr")} for g in scheduler.optimizer.param_groups]
    train_steps(scheduler, 3)  # grows
    optimizer = scheduler.optimizer
    assert type(optimizer) is optimizer_class and scheduler.layers == (4, 4, 4)
    assert [{k: v for k, v in g.items() if k not in ("params", "lr")} for g in optimizer.param_groups] == old_groups
    assert len(optimizer.state) == len(list(scheduler.model.parameters()))


def test_reset_optimizer_state_option():
    scheduler = make(reset_optimizer_state=True)
    train_steps(scheduler, 3)
    assert len(scheduler.optimizer.state) == 0


def test_ema_grows_in_step():
    scheduler = make()
    ema = ModelEmaV3(scheduler.model, decay=0.9)
    scheduler.ema = ema
    train_steps(scheduler, 9, ema=ema)
    assert ema.module.layers == scheduler.model.layers == (8, 8, 8)
    assert ema.module.step_size == 0.25
    ema_state, state = ema.module.state_dict(), scheduler.model.state_dict()
    assert ema_state.keys() == state.keys()
    assert all(ema_state[k].shape == v.shape for k, v in state.items())


def test_resume_from_the_scheduler_state_gives_the_same_run():
    reference = make()
    train_steps(reference, 9)

    first = make()
    train_steps(first, 4)  # one step after the first growth
    checkpoint = copy.deepcopy({
        "growth": first.state_dict(),
        "model": first.model.state_dict(),
        "optimizer": first.optimizer.state_dict(),
    })
    resumed = make()
    resumed.load_state_dict(checkpoint["growth"])  # rebuilds the depth before the weights are loaded
    assert resumed.layers == (4, 4, 4) and resumed.step_size == 0.5
    resumed.model.load_state_dict(checkpoint["model"])
    resumed.optimizer.load_state_dict(checkpoint["optimizer"])
    train_steps(resumed, 5)
    assert resumed.layers == (8, 8, 8)
    for (name, value), expected in zip(resumed.model.state_dict().items(), reference.model.state_dict().values()):
        torch.testing.assert_close(value, expected, atol=1e-6, rtol=0, msg=name)


def test_loading_a_state_with_another_plan_is_refused():
    state = make().state_dict()
    other = make(plan=GrowthPlan(cycles=(2, 6), total=9, unit="step"))
    with pytest.raises(GrowresError, match="plan"):
        other.load_state_dict(state)


@pytest.mark.parametrize("k, expected", [(0, 0.0), (1, 0.25), (2, 0.4167), (3, 0.5313), (4, 0.6125), (5, 0.6719)])
def test_table_2(k, expected):
    assert theoretical_time_saved(k) == pytest.approx(expected, abs=1e-4)


def test_time_saved_from_flops():
    model = timm.create_model("growres_resnet50i")
    equal = GrowthPlan(cycles=(10, 20), total=30, unit="step")
    assert theoretical_time_saved(equal) == pytest.approx(theoretical_time_saved(2))
    by_flops = theoretical_time_saved(GrowthPlan(), model)
    assert 0.40 < by_flops < 0.47
    assert model.layers == (2, 2, 2)  # the model itself is not grown
    assert theoretical_time_saved(GrowthPlan(grow=False), model) == 0.0


def test_rebuild_optimizer_moves_the_state_of_replaced_parameters():
    """Re-sharding (growres.sharding) makes a new object of every parameter: each takes the group and the state of
    the one it replaces, a copy takes a copy, the replaced ones leave, and parameters outside the model stay."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    outside = torch.nn.Parameter(torch.ones(2))  # optimized, but not part of the model
    optimizer = torch.optim.SGD([
        {"params": [model[0].weight, outside], "weight_decay": 0.1},
        {"params": [model[0].bias, *model[1].parameters()], "weight_decay": 0.0},
    ], lr=0.1, momentum=0.9)
    (model(torch.randn(4, 3)).square().sum() + outside.sum()).backward()
    optimizer.step()
    old = dict(model.named_parameters())

    model.append(copy.deepcopy(model[0]))  # a copied block, as growth makes
    sources = {param: old[f"0.{name}"] for name, param in model[2].named_parameters()}
    for name, param in old.items():  # every old parameter re-made, as re-sharding does
        module, attr = model.get_submodule(name.split(".")[0]), name.split(".")[1]
        setattr(module, attr, torch.nn.Parameter(param.detach().clone()))
        sources[getattr(module, attr)] = param
    rebuilt = rebuild_optimizer(optimizer, model, sources)

    new = dict(model.named_parameters())
    assert [[id(p) for p in g["params"]] for g in rebuilt.param_groups] == [
        [id(new["0.weight"]), id(new["2.weight"]), id(outside)],
        [id(new[n]) for n in ("0.bias", "1.weight", "1.bias", "2.bias")],
    ]
    assert [g["weight_decay"] for g in rebuilt.param_groups] == [0.1, 0.0]
    assert set(map(id, rebuilt.state)) == {id(p) for p in (*new.values(), outside)}
    for param in new.values():
        assert rebuilt.state[param]["momentum_buffer"].equal(optimizer.state[sources[param]]["momentum_buffer"])
    buffers = [id(rebuilt.state[p]["momentum_buffer"]) for p in new.values()]
    assert len(set(buffers)) == len(buffers)  # no two parameters share a state
    # the old optimizer is dropped, so each replaced parameter's state moves on once instead of being copied
    old_states = {id(optimizer.state[p]) for p in old.values()}
    assert {id(rebuilt.state[p]) for p in new.values()} & old_states == old_states
    assert rebuilt.state[outside] is optimizer.state[outside]
