"""GrowthScheduler: plans, the cyclic cosine LR of Eq. 9, optimizer/EMA through growth, resumption."""
import copy
import math
import re
import time

import pytest
import timm
import timm.optim
import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch.utils.flop_counter import FlopCounterMode

import growres
from growres import (
    GrowresError,
    GrowthPlan,
    GrowthScheduler,
    cyclic_cosine_lr,
    get_adapter,
    rebuild_optimizer,
    stage_layers,
    theoretical_time_saved,
)

STEP_PLAN = GrowthPlan(cycles=(3, 6), total=9, unit="step")


VIT = dict(img_size=32, patch_size=8, embed_dim=64, num_heads=2)


def make(name="growres_resnet50i", plan=STEP_PLAN, model_args=None, **kwargs):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, **(model_args or {}))
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
    assert GrowthPlan.paper(total=16) == GrowthPlan(cycles=(6, 11), total=16)
    assert GrowthPlan.paper(total=3).cycles == (1, 2)  # the shortest run that holds three cycles
    assert GrowthPlan(cycles=[1, 2], total=3).cycles == (1, 2)  # a list becomes a tuple: plans compare and hash
    assert GrowthPlan.paper(interpolations=3, total=40).cycles == (10, 20, 30)
    assert GrowthPlan().to_steps(500) == ((30_000, 55_000), 80_000)
    assert GrowthPlan.paper(total=1, grow=False).cycles == ()  # too short to restart: one cycle
    with pytest.raises(GrowresError, match="2 epochs cannot hold the 3 cycles of 2 interpolations"):
        GrowthPlan.paper(total=2)
    assert GrowthPlan.paper(total=16, unit="step") == GrowthPlan(cycles=(6, 11), total=16, unit="step")
    with pytest.raises(GrowresError, match="2 steps cannot hold the 3 cycles .* at least 3 steps"):
        GrowthPlan.paper(total=2, unit="step")


@pytest.mark.parametrize("kwargs, match", [
    (dict(cycles=(110, 60)), "strictly increasing"),
    (dict(cycles=(60, 60)), "strictly increasing"),
    (dict(cycles=(60, 170)), "inside"),
    (dict(cycles=(0, 110)), "inside"),
    (dict(unit="hour"), "unit"),
    (dict(total=0), "positive integer"),
    (dict(cycles=(1.5,), total=3), "whole epochs"),
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


def test_without_lr_restarts_one_cosine_spans_the_run_and_the_model_still_grows():
    """The paper's ablation (Appendix D, Figure 10): Eq. 9 over the whole run, growth at the same cycle starts."""
    scheduler = make(plan=GrowthPlan(cycles=(3, 6), total=9, unit="step", restart_lr=False))
    lrs, records = [], []
    for _ in range(9):
        lrs.append(scheduler.optimizer.param_groups[0]["lr"])
        records += train_steps(scheduler, 1)
    assert lrs == pytest.approx([0.001 + 0.5 * 0.499 * (1 + math.cos(math.pi * step / 9)) for step in range(9)])
    assert [(r.step, r.layers, r.step_size) for r in records] == [(3, (4, 4, 4), 0.5), (6, (8, 8, 8), 0.25)]


def test_baseline_restarts_lr_without_growing():
    scheduler = make("growres_resnet14", GrowthPlan(cycles=(3, 6), total=9, unit="step", grow=False))
    lrs = [scheduler.lr]
    assert train_steps(scheduler, 3) == []
    lrs.append(scheduler.lr)
    assert lrs == [0.5, 0.5] and scheduler.layers == (2, 2, 2) and scheduler.cycle == 1


def block_sources(model, strategy="copy") -> dict[str, tuple[str, bool]]:
    """For the model as it is now, each block's module path after one interpolation -> (the path of the block it
    is or copies, whether it is new): the block made for a transition copies the next block (Appendix B), and is
    placed right after its old block (copy) or after the stage's old blocks, in order (stack)."""
    adapter = get_adapter(model)
    names = {module: name for name, module in model.named_modules()}
    sources = {}
    for stage in adapter.stages(model):
        blocks = list(stage)
        prefix = names[stage]
        for idx, block in enumerate(blocks):
            copied = blocks[idx + 1] if adapter.is_transition(block) else block
            kept, new = (idx, len(blocks) + idx) if strategy == "stack" else (2 * idx, 2 * idx + 1)
            sources[f"{prefix}.{kept}"] = (names[block], False)
            sources[f"{prefix}.{new}"] = (names[copied], True)
    return sources


def source_of(name: str, sources: dict[str, tuple[str, bool]]) -> str:
    """The pre-growth name of a parameter or buffer of the grown model."""
    for block, (source, _) in sources.items():
        if name.startswith(block + "."):
            return source + name[len(block):]
    return name  # outside the stages: stem, head


def step_then_grow(scheduler, strategy="copy"):
    """One training step that ends a cycle, with snapshots taken between the optimizer step and the growth."""
    x, y = batch(scheduler.step_count)
    loss = F.cross_entropy(scheduler.model(x), y)
    scheduler.optimizer.zero_grad()
    loss.backward()
    scheduler.optimizer.step()
    momentum = {name: scheduler.optimizer.state[p]["momentum_buffer"].clone()
                for name, p in scheduler.model.named_parameters()}
    sources = block_sources(scheduler.model, strategy)
    record = scheduler.step()
    assert record is not None, "the step was meant to end a cycle"
    return momentum, sources


@pytest.mark.parametrize("strategy", ["copy", "stack"])
def test_optimizer_rebuild_keeps_groups_hyperparameters_and_momentum(strategy):
    scheduler = make(strategy=strategy)
    old_optimizer = scheduler.optimizer
    train_steps(scheduler, 2)
    before, sources = step_then_grow(scheduler, strategy)
    optimizer, model = scheduler.optimizer, scheduler.model
    assert optimizer is not old_optimizer and type(optimizer) is type(old_optimizer)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0, 2e-4]
    assert all(g["momentum"] == 0.9 and g["nesterov"] for g in optimizer.param_groups)  # make() asks for 'sgd'
    named = dict(model.named_parameters())
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in named.values()}
    decay = {id(p) for p in optimizer.param_groups[1]["params"]}
    assert all((p.ndim > 1) == (id(p) in decay) for p in named.values())  # norms and biases: no decay
    # momentum: every kept parameter has the buffer it had before growth, every new one its source's
    buffers = {name: optimizer.state[p]["momentum_buffer"] for name, p in named.items()}
    assert len(named) > len(before)
    for name, buffer in buffers.items():
        assert torch.equal(buffer, before[source_of(name, sources)]), name
    # and its own copy: the next step must move a new block's momentum independently of its source's
    assert len({buffer.data_ptr() for buffer in buffers.values()}) == len(buffers)


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


# per strategy, h after each of two growths of a model made with h = 1 (exact: powers of two)
STEP_SIZES = {"copy": (0.5, 0.25), "stack": (1.0, 1.0)}


@pytest.mark.parametrize("strategy", STEP_SIZES)
def test_ema_grows_in_step(strategy):
    scheduler = make(strategy=strategy)
    ema = ModelEmaV3(scheduler.model, decay=0.9)
    scheduler.ema = ema
    train_steps(scheduler, 2, ema=ema)
    sources = block_sources(ema.module, strategy)
    train_steps(scheduler, 1, ema=ema)  # grows
    assert ema.module.layers == scheduler.model.layers == (4, 4, 4)
    assert ema.module.step_size == scheduler.model.step_size == STEP_SIZES[strategy][0]
    ema_state, live = ema.module.state_dict(), scheduler.model.state_dict()
    assert ema_state.keys() == live.keys()
    now_at = {source: block for block, (source, new) in sources.items() if not new}  # old path -> new path
    for block, (source, new) in sources.items():
        if not new:
            continue
        # a new EMA block is a copy of the EMA's own source block (both at the new h), not of the live model's
        keys = [k for k in ema_state if k.startswith(block + ".")]
        for key in keys:
            assert torch.equal(ema_state[key], ema_state[now_at[source] + key[len(block):]]), key
        weights = [k for k in keys if k.endswith(".weight")]
        assert weights and not any(torch.equal(ema_state[k], live[k]) for k in weights), block
    train_steps(scheduler, 6, ema=ema)
    assert ema.module.layers == scheduler.model.layers == (8, 8, 8)
    assert ema.module.step_size == scheduler.model.step_size == STEP_SIZES[strategy][1]


@pytest.mark.parametrize("strategy", STEP_SIZES)
def test_resume_from_the_scheduler_state_gives_the_same_run(strategy):
    reference = make(strategy=strategy)
    train_steps(reference, 9)

    first = make(strategy=strategy)
    train_steps(first, 4)  # one step after the first growth
    checkpoint = copy.deepcopy({
        "growth": first.state_dict(),
        "model": first.model.state_dict(),
        "optimizer": first.optimizer.state_dict(),
    })
    resumed = make(strategy=strategy)
    resumed.load_state_dict(checkpoint["growth"])  # rebuilds the depth before the weights are loaded
    assert resumed.layers == (4, 4, 4) and resumed.step_size == STEP_SIZES[strategy][0]
    resumed.model.load_state_dict(checkpoint["model"])
    resumed.optimizer.load_state_dict(checkpoint["optimizer"])
    train_steps(resumed, 5)
    assert resumed.layers == (8, 8, 8)
    # exact: the resumed run repeats the reference's last 5 steps, the same ops on the same weights and batches
    for (name, value), expected in zip(resumed.model.state_dict().items(), reference.model.state_dict().values()):
        torch.testing.assert_close(value, expected, atol=0, rtol=0, msg=name)


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
    # the definition: 60, 50 and 50 epochs of the 2-2-2, 4-4-4 and 8-8-8 models against 160 of the 8-8-8 one,
    # each epoch costing its model's forward FLOPs (counted here on the directly built models)
    flops = []
    for layers in ((2, 2, 2), (4, 4, 4), (8, 8, 8)):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            timm.create_model("growres_resnet50", layers=layers).eval()(torch.zeros(1, 3, 32, 32))
        flops.append(counter.get_total_flops())
    expected = 1 - (60 * flops[0] + 50 * flops[1] + 50 * flops[2]) / (160 * flops[2])
    assert theoretical_time_saved(GrowthPlan(), model) == pytest.approx(expected, rel=1e-12)
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


# -- the scheduler on timm's own models ------------------------------------------------------------


TIMM_MODELS = [
    # (name, its args, blocks per stage before growth)
    # narrow, and without the zero-initialised last norm, so its branches are not the identity from the start
    ("resnet18", dict(channels=(8, 16, 32, 64), stem_width=8, zero_init_last=False), (2, 2, 2, 2)),
    ("vit_tiny_patch16_224", dict(VIT, depth=2), (2,)),
]


@pytest.mark.parametrize("strategy", STEP_SIZES)
@pytest.mark.parametrize("name, args, layers", TIMM_MODELS)
def test_timm_models_grow_by_the_papers_plan_with_a_rebuilt_optimizer(name, args, layers, strategy):
    """No explicit h: the scheduler reports h relative to the start, the strategy's factor per growth."""
    assert make(name, plan=None, model_args=args, steps_per_epoch=10).plan == GrowthPlan()  # no plan of their own
    scheduler = make(name, model_args=args, strategy=strategy)
    first, second = STEP_SIZES[strategy]
    new_blocks = [block for block, (_, new) in block_sources(scheduler.model, strategy).items() if new]
    records = train_steps(scheduler, 3)
    assert [(r.step, r.layers, r.step_size) for r in records] == [(3, tuple(2 * n for n in layers), first)]
    assert scheduler.step_size == first and scheduler.lr == 0.5
    assert scheduler.state_dict()["step_size"] == first
    optimizer, model = scheduler.optimizer, scheduler.model
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}
    inserted = {name: p.detach().clone() for name, p in model.named_parameters()
                if any(name.startswith(block + ".") for block in new_blocks)}
    train_steps(scheduler, 2)  # the new blocks are in the optimizer: they train
    assert inserted and all(not torch.equal(p, scheduler.model.get_parameter(name)) for name, p in inserted.items())
    records = train_steps(scheduler, 1)
    assert [(r.step, r.layers, r.step_size) for r in records] == [(6, tuple(4 * n for n in layers), second)]
    assert stage_layers(scheduler.model) == tuple(4 * n for n in layers)


@pytest.mark.parametrize("name, args", [("growres_resnet50i", {}), *[(n, a) for n, a, _ in TIMM_MODELS]])
def test_identity_strategy_under_the_scheduler_keeps_the_function(name, args):
    scheduler = make(name, model_args=args, strategy="identity")
    train_steps(scheduler, 2)
    x, _ = batch(99)
    scheduler.model.eval()
    with torch.no_grad():
        before = scheduler.model(x)
    scheduler.model.train()
    train_steps_without_update(scheduler)  # the step that grows, with no parameter change around it
    scheduler.model.eval()
    with torch.no_grad():
        after = scheduler.model(x)
    assert len(scheduler.records) == 1
    # exact: new blocks add 0 * G = 0, old ones compute what they did (see test_growth's identity test)
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    # the copy strategy, at the same point, does change the function: the check above has teeth
    copied = make(name, model_args=args)
    train_steps(copied, 2)
    copied.model.eval()
    with torch.no_grad():
        copy_before = copied.model(x)
    copied.model.train()
    train_steps_without_update(copied)
    copied.model.eval()
    with torch.no_grad():
        assert not torch.allclose(copied.model(x), copy_before, atol=1e-3)


def train_steps_without_update(scheduler):
    """Advance the scheduler one step (growing at a cycle start) without changing a parameter."""
    record = scheduler.step()
    assert record is not None


def test_growth_under_accelerate_re_prepares_everything_once():
    """Single-process accelerate: growth swaps the prepared model and optimizer for prepared grown ones, keeps the
    dataloader registered and the step counter, and save_state still writes one model and one optimizer."""
    from accelerate import Accelerator

    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    model = timm.create_model("growres_resnet50i", num_classes=10)
    optimizer = timm.optim.create_optimizer_v2(model, "momentum", lr=0.5, momentum=0.9, weight_decay=2e-4)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*batch(0, n=8)), batch_size=4)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    plan = GrowthPlan(cycles=(1, 2), total=3)  # in epochs, 2 steps each
    scheduler = GrowthScheduler(model, optimizer, plan, steps_per_epoch=len(loader), accelerator=accelerator)
    accelerator.step = 7  # accelerate's own counter (gradient accumulation) must survive growth
    for epoch in range(2):
        for x, y in loader:
            loss = F.cross_entropy(scheduler.model(x), y)
            scheduler.optimizer.zero_grad()
            accelerator.backward(loss)
            scheduler.optimizer.step()
            started = time.perf_counter()
            record = scheduler.step()
            elapsed = time.perf_counter() - started
        assert record is not None and record.epoch == epoch + 1.0 and 0 < record.seconds <= elapsed
    bare = accelerator.unwrap_model(scheduler.model)
    assert bare.layers == (8, 8, 8) and accelerator.step == 7
    assert accelerator._models == [scheduler.model] and accelerator._optimizers == [scheduler.optimizer]
    assert accelerator._dataloaders == [loader]
    assert "_is_accelerate_prepared" in bare.__dict__  # prepared again, not skipped as already prepared
    params = {id(p) for g in scheduler.optimizer.optimizer.param_groups for p in g["params"]}
    assert params == {id(p) for p in bare.parameters()}


def test_loading_an_earlier_growth_state_into_a_grown_model_is_refused():
    early = make().state_dict()
    grown = make()
    train_steps(grown, 3)
    with pytest.raises(GrowresError, match="earlier cycle"):
        grown.load_state_dict(early)
    assert grown.layers == (4, 4, 4) and grown.step_count == 3


def test_explicit_step_size_is_reported_and_saved():
    """A model made with h = 0.5: the scheduler reports the model's h, not 0.5 ** growths."""
    scheduler = make(model_args=dict(step_size=0.5))
    assert scheduler.step_size == 0.5 and scheduler.state_dict()["step_size"] == 0.5
    records = train_steps(scheduler, 3)
    assert records[0].step_size == scheduler.step_size == 0.25


def test_loading_a_state_of_the_same_cycle_is_allowed():
    scheduler = make()
    train_steps(scheduler, 1)
    fresh = make()
    fresh.load_state_dict(scheduler.state_dict())
    assert (fresh.step_count, fresh.cycle, fresh.layers) == (1, 0, (2, 2, 2))


def test_rebuild_optimizer_carries_state_by_default_in_model_order():
    scheduler = make()
    train_steps(scheduler, 1)
    optimizer, model = scheduler.optimizer, scheduler.model
    sources = growres.grow(model)
    rebuilt = growres.rebuild_optimizer(optimizer, model, sources)
    assert len(rebuilt.state) == len(list(model.parameters()))
    order = {p: i for i, p in enumerate(model.parameters())}
    for group in rebuilt.param_groups:
        positions = [order[p] for p in group["params"]]
        assert positions == sorted(positions)


def test_ema_grows_with_the_schedulers_strategy():
    scheduler = make(strategy="identity")
    ema = ModelEmaV3(scheduler.model, decay=0.9)
    scheduler.ema = ema
    train_steps(scheduler, 2, ema=ema)
    x, _ = batch(99)
    with torch.no_grad():
        before = ema.module.eval()(x)
        train_steps_without_update(scheduler)
        after = ema.module.eval()(x)
    assert ema.module.layers == (4, 4, 4)
    torch.testing.assert_close(after, before, atol=0, rtol=0)  # identity growth: the EMA computes exactly the same


@pytest.mark.parametrize("lr_max, lr_min", [(0.5, 0.0), (0.1, 0.1)])
def test_lr_bounds_may_meet_and_lr_min_may_be_zero(lr_max, lr_min):
    scheduler = make(lr_max=lr_max, lr_min=lr_min)
    lrs = [scheduler.lr]
    for _ in range(STEP_PLAN.total):
        scheduler.step()
        lrs.append(scheduler.optimizer.param_groups[0]["lr"])
    assert lrs[0] == lrs[3] == lrs[6] == lr_max and lrs[-1] == pytest.approx(lr_min)
    assert all(lr_min <= lr <= lr_max for lr in lrs)


@pytest.mark.parametrize("lr_max, lr_min", [(0.0, 0.0), (-0.1, 0.0), (0.5, -0.1)])
def test_lr_max_must_be_positive_and_lr_min_not_negative(lr_max, lr_min):
    with pytest.raises(GrowresError, match="Need 0 <= lr_min <= lr_max and lr_max > 0"):
        make(lr_max=lr_max, lr_min=lr_min)


def test_param_group_lr_scale_multiplies_the_schedules_lr():
    """timm's layer-wise decay gives groups an ``lr_scale``: each group's LR is the schedule's LR times it."""
    torch.manual_seed(0)
    model = timm.create_model("growres_resnet50i", num_classes=10)
    params = list(model.parameters())
    optimizer = torch.optim.SGD([{"params": params[:2], "lr_scale": 0.1}, {"params": params[2:]}], lr=0.5)
    scheduler = GrowthScheduler(model, optimizer, STEP_PLAN, lr_max=0.5)
    for _ in range(4):  # through a growth, which rebuilds the groups
        assert [g["lr"] for g in scheduler.optimizer.param_groups] == pytest.approx([0.1 * scheduler.lr, scheduler.lr])
        scheduler.step()


def test_a_plan_in_epochs_of_one_step_each():
    assert GrowthPlan(cycles=(1, 2), total=3).to_steps(1) == ((1, 2), 3)
    for steps_per_epoch in (None, 0):
        with pytest.raises(GrowresError, match="^A plan in epochs needs steps_per_epoch"):
            GrowthPlan().to_steps(steps_per_epoch)


def test_lr_stays_at_lr_min_past_the_end():
    for step in (160, 161, 400, 1000):
        assert cyclic_cosine_lr(step, (60, 110), 160, 0.5, 0.001) == pytest.approx(0.001)


def test_rebuild_optimizer_keeps_parameters_outside_the_model_and_the_defaults():
    """An optimizer may hold parameters the model does not (a learned loss temperature): they stay, last in their
    group; and the rebuilt optimizer has the same defaults, for groups added later (add_param_group)."""
    torch.manual_seed(0)
    model = timm.create_model("growres_resnet14", num_classes=10)
    temperature = torch.nn.Parameter(torch.ones(()))
    optimizer = torch.optim.SGD([*model.parameters(), temperature], lr=0.3, momentum=0.9, weight_decay=1e-4)
    rebuilt = rebuild_optimizer(optimizer, model, growres.grow(model))
    assert rebuilt.param_groups[0]["params"][-1] is temperature
    assert len(rebuilt.param_groups[0]["params"]) == len(list(model.parameters())) + 1
    assert rebuilt.defaults == optimizer.defaults


def test_growth_records_have_no_epoch_for_a_plan_in_steps():
    scheduler = make(steps_per_epoch=10)  # given but unused: the plan is in steps
    for _ in range(2):
        scheduler.step()
    record = scheduler.step()
    assert record is not None and record.step == 3 and record.epoch is None


def test_load_refuses_a_state_behind_in_growths_or_in_cycles():
    grown = make()
    for _ in range(3):
        grown.step()
    for behind in (dict(records=[]), dict(cycle=0)):  # each alone is an earlier state
        state = {**grown.state_dict(), **behind}
        with pytest.raises(GrowresError, match="^Cannot load a growth state from an earlier cycle"):
            grown.load_state_dict(state)


def test_load_refuses_a_state_whose_depth_does_not_match_its_growths():
    scheduler = make()
    for _ in range(3):
        scheduler.step()
    state = {**scheduler.state_dict(), "layers": [8, 8, 8]}  # edited: one growth recorded, two growths' depth
    expected = re.escape("Rebuilt depth (4, 4, 4) differs from the checkpoint's (8, 8, 8)")
    with pytest.raises(GrowresError, match=expected):
        make().load_state_dict(state)


def test_load_into_a_trained_scheduler_starts_the_grown_optimizer_without_state():
    """The checkpoint's optimizer state is loaded next: momentum of the run being replaced must not carry over."""
    source = make()
    for _ in range(3):
        source.step()
    target = make()
    train_steps(target, 1)
    assert len(target.optimizer.state) > 0
    target.load_state_dict(source.state_dict())
    assert target.layers == (4, 4, 4) and len(target.optimizer.state) == 0


def test_a_compiled_model_under_accelerate_is_seen_through():
    """accelerate's unwrap keeps torch.compile's wrapper by default: the scheduler must reach the model under it."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = timm.create_model("growres_resnet14", num_classes=10)
    compiled, optimizer = accelerator.prepare(torch.compile(model), torch.optim.SGD(model.parameters(), lr=0.1))
    scheduler = GrowthScheduler(compiled, optimizer, GrowthPlan(cycles=(3,), total=6, unit="step", grow=False),
                                accelerator=accelerator)
    assert scheduler._bare_model() is model and scheduler.layers == model.layers


def test_scheduler_messages_name_the_fix():
    with pytest.raises(GrowresError, match="^Unknown interpolation strategy 'random': choose one of copy, identity, "
                                           "stack, copy-unscaled.$"):
        make(strategy="random")
    with pytest.raises(GrowresError) as exc:
        make("growres_resnet50")
    assert "The model is already at its final depth" in str(exc.value)
    assert "left): train it with GrowthPlan(grow=False) to restart the LR" in str(exc.value)


def test_mixed_precision_survives_the_scheduler_and_growth():
    """accelerate's autocast forward stays on the live model: reading the model (depth, h) and growing it must
    not strip it, or bf16 training silently becomes fp32."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # a process-wide singleton: earlier tests set "no"
    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    model = timm.create_model("growres_resnet50i", num_classes=10)
    model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    scheduler = GrowthScheduler(model, optimizer, GrowthPlan(cycles=(1, 2), total=3, unit="step"),
                                accelerator=accelerator)

    def stem_output_dtype() -> torch.dtype:
        dtypes = []
        hook = growres.scheduler.unwrapped(scheduler.model, accelerator).stem.register_forward_hook(
            lambda module, args, out: dtypes.append(out.dtype))
        logits = scheduler.model(torch.randn(2, 3, 32, 32))
        hook.remove()
        assert logits.dtype == torch.float32  # accelerate hands fp32 outputs back
        return dtypes[0]

    assert stem_output_dtype() == torch.bfloat16
    for layers in ((4, 4, 4), (8, 8, 8)):
        assert scheduler.layers and scheduler.step_size  # reading the model must not unwrap it
        scheduler.step()
        assert scheduler.layers == layers and stem_output_dtype() == torch.bfloat16
    AcceleratorState._reset_state(reset_partial_state=True)  # later tests get their own precision
