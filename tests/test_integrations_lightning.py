"""growres inside an unmodified lightning.Trainer: GrowthCallback (growth, optimizer, LR, resume, DDP, refusals)."""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

L = pytest.importorskip("lightning")
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import Logger  # noqa: E402
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy  # noqa: E402

from growres import GrowresError, GrowthPlan, cyclic_cosine_lr, stage_layers  # noqa: E402
from growres.integrations.lightning import GrowthCallback  # noqa: E402
from growres.multilevel_resnet import MultilevelResNet  # noqa: E402

pytestmark = [  # Lightning's advice about what these tiny runs leave out on purpose
    pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`"),
    pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`, callbacks used to create"),
]
SCRIPT = Path(__file__).parent / "scripts" / "lightning_ddp_growth.py"
BATCHES = 3  # per epoch: 24 samples, batches of 8
PLAN = GrowthPlan(cycles=(4, 7), total=9, unit="step")  # 3 epochs; growths mid-epoch
LR = {"decay": 1e-2, "no_decay": 4e-3}  # each group's lr: its η_max


def tiny_net(interpolations: int = 2, layers=(2, 2, 2)) -> MultilevelResNet:
    return MultilevelResNet(layers=layers, widths=(4, 8, 8), interpolations=interpolations, num_classes=3,
                            in_chans=1)


class Classifier(L.LightningModule):
    """A growres ResNet under AdamW with decay / no-decay groups; records the LR each optimizer step used."""

    def __init__(self, net: nn.Module | None = None, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = net if net is not None else tiny_net()
        self.used_lr = {}  # optimizer step index (0-based) -> each group's lr when it stepped

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = F.cross_entropy(self.net(images), labels)
        self.log("train_lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        self.log("val_loss", F.cross_entropy(self.net(images), labels))

    def on_before_optimizer_step(self, optimizer):
        self.used_lr[self.trainer.global_step] = [group["lr"] for group in optimizer.param_groups]

    def configure_optimizers(self):
        decay = [p for p in self.parameters() if p.ndim > 1]
        no_decay = [p for p in self.parameters() if p.ndim <= 1]  # norms: kept out of weight decay
        return torch.optim.AdamW([
            {"params": decay, "weight_decay": 0.1, "lr": LR["decay"], "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "lr": LR["no_decay"], "name": "no_decay"},
        ])


class MemoryLogger(Logger):
    """Every metric Lightning logs, by step."""

    def __init__(self):
        super().__init__()
        self.rows = []

    name = "memory"
    version = 0

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


class Spy(L.Callback):
    """After GrowthCallback (callbacks run in list order): depth after every step, the optimizer right after growth."""

    def __init__(self, growth: GrowthCallback):
        self.growth = growth
        self.layers = {}  # global step -> blocks per stage after it
        self.after_growth = {}  # step -> what the optimizer held right after that step's growth

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        self.layers[step] = stage_layers(pl_module.net)
        if self.growth.records and self.growth.records[-1].step == step and step not in self.after_growth:
            optimizer = trainer.optimizers[0]
            names = {p: n for n, p in pl_module.net.named_parameters()}
            self.after_growth[step] = dict(
                optimizer=optimizer,
                groups=[(sorted(names[p] for p in g["params"]), g["weight_decay"]) for g in optimizer.param_groups],
                state={names[p]: copy.deepcopy(s) for p, s in optimizer.state.items()},
                shared={names[p] for p, s in optimizer.state.items()
                        for q, t in optimizer.state.items() if p is not q and s["exp_avg"] is t["exp_avg"]},
                params={n: p.detach().clone() for n, p in pl_module.net.named_parameters()},
            )


class Before(L.Callback):
    """Before GrowthCallback: the optimizer state right before a growth step's growth, by name."""

    def __init__(self):
        self.state = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        names = {p: n for n, p in pl_module.net.named_parameters()}
        self.state[trainer.global_step] = {names[p]: copy.deepcopy(s) for p, s in trainer.optimizers[0].state.items()}


def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    count = 8 * BATCHES
    data = TensorDataset(torch.randn(count, 1, 8, 8, generator=generator),
                         torch.randint(0, 3, (count,), generator=generator))
    return DataLoader(data, batch_size=8)  # in order: a resumed epoch sees the batches the uninterrupted one saw


def trainer(tmp_path, callbacks, **overrides) -> L.Trainer:
    settings = dict(accelerator="cpu", devices=1, max_epochs=PLAN.total // BATCHES, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    default_root_dir=str(tmp_path), num_sanity_val_steps=0)
    return L.Trainer(callbacks=callbacks, **{**settings, **overrides})


def source_name(name: str, net: MultilevelResNet) -> str:
    """The parameter of the grown ``net`` that a new block's parameter ``name`` was copied from (Appendix B: after a
    transition block, the next block's copy)."""
    _, stage, block, rest = name.split(".", 3)
    old = int(block) // 2  # old block i sits at 2i after growing, its copy at 2i + 1
    source = old + 1 if net.stages[int(stage)][2 * old].is_transition else old
    return f"stages.{stage}.{2 * source}.{rest}"


# -- growth at the plan's steps ------------------------------------------------------------------------------

@pytest.mark.parametrize("plan, overrides, starts", [
    (PLAN, {}, (4, 7)),
    (GrowthPlan(cycles=(1, 2), total=3), {}, (3, 6)),  # in epochs: 3 optimizer steps each
    (GrowthPlan(cycles=(1, 2), total=3), dict(accumulate_grad_batches=2), (2, 4)),  # 2 each: the last batch steps
    # the paper's proportions of the run's 8 optimizer steps (4 epochs, 2 steps each with accumulation): 3 and 6
    (None, dict(max_epochs=4, accumulate_grad_batches=2), (3, 6)),
], ids=["steps", "epochs", "epochs-accumulated", "default-accumulated"])
def test_grows_at_the_plans_steps_and_the_new_blocks_train(tmp_path, plan, overrides, starts):
    growth = GrowthCallback(plan)
    spy = Spy(growth)
    module = Classifier()
    fit = trainer(tmp_path, [growth, spy], **overrides)
    fit.fit(module, loader())

    total = fit.global_step
    assert [r.step for r in growth.records] == list(starts)
    assert [(r.layers, r.cycle, r.step_size) for r in growth.records] == [((4, 4, 4), 2, 0.5), ((8, 8, 8), 3, 0.25)]
    expected = {step: (2, 2, 2) if step < starts[0] else (4, 4, 4) if step < starts[1] else (8, 8, 8)
                for step in range(1, total + 1)}
    assert {step: layers for step, layers in spy.layers.items() if step > 0} == expected  # accumulating at step 0
    # the blocks the last growth inserted (odd positions) trained afterwards
    at_growth = spy.after_growth[starts[1]]["params"]
    final = dict(module.net.named_parameters())
    new = [n for n in final if _is_new(n)]
    assert new and all(not torch.equal(final[n], at_growth[n]) for n in new)


# -- the optimizer: regrouped in place, state and groups carried -----------------------------------------------

@pytest.mark.parametrize("reset", [False, True], ids=["carried", "reset"])
def test_optimizer_is_regrouped_in_place_with_its_groups_and_adamw_state(tmp_path, reset):
    growth = GrowthCallback(PLAN, reset_optimizer_state=reset)
    before, spy = Before(), Spy(growth)
    module = Classifier()
    fit = trainer(tmp_path, [before, growth, spy])
    fit.fit(module, loader())

    optimizer = fit.optimizers[0]
    assert module.optimizers().optimizer is optimizer
    for step in PLAN.cycles:
        seen = spy.after_growth[step]
        assert seen["optimizer"] is optimizer  # in place: Lightning's references stay valid
        grown = set(seen["params"])
        # the two groups as configured, every parameter in one: the new norms (1-D) also without weight decay
        (decay, wd), (no_decay, no_wd) = seen["groups"]
        assert (wd, no_wd) == (0.1, 0.0)
        assert sorted(decay + no_decay) == sorted(grown)
        assert all(seen["params"][n].ndim > 1 for n in decay) and all(seen["params"][n].ndim == 1 for n in no_decay)
        state, old_state = seen["state"], before.state[step]
        if reset:
            assert state == {}
            continue
        assert set(state) == grown and not seen["shared"]  # every parameter has moments of its own
        for name in grown:  # an old parameter keeps its AdamW state, a new one has a copy of its source's
            expected = old_state[_old_name(source_name(name, module.net) if _is_new(name) else name)]
            for key in ("step", "exp_avg", "exp_avg_sq"):
                assert torch.equal(state[name][key], expected[key]), (step, name, key)
        assert {float(s["step"]) for s in state.values()} == {float(step)}
    # at the end every parameter has taken every step (carried) or only those since the last growth (reset)
    assert len(optimizer.state) == len(list(module.parameters()))
    steps = {float(s["step"]) for s in optimizer.state.values()}
    assert steps == ({float(PLAN.total - PLAN.cycles[-1])} if reset else {float(PLAN.total)})


def _is_new(name: str) -> bool:
    """Whether a grown model's parameter is in a block the growth inserted (odd positions)."""
    return name.startswith("stages.") and int(name.split(".")[2]) % 2 == 1


def _old_name(name: str) -> str:
    """A grown model's name of an old block's parameter (old block i sits at 2i) -> its name before growing."""
    if not name.startswith("stages."):
        return name
    _, stage, block, rest = name.split(".", 3)
    return f"stages.{stage}.{int(block) // 2}.{rest}"


# -- the learning rate: Eq. 9, what Lightning logs is what the optimizer used ------------------------------------

@pytest.mark.parametrize("restart_lr", [True, False], ids=["restarts", "one-cosine"])
def test_logged_lr_is_the_lr_each_step_used_and_follows_eq_9(tmp_path, restart_lr):
    logger = MemoryLogger()
    module = Classifier()
    plan = GrowthPlan(PLAN.cycles, PLAN.total, "step", restart_lr=restart_lr)
    growth = GrowthCallback(plan, min_lr_ratio=0.1)
    fit = trainer(tmp_path, [LearningRateMonitor(logging_interval="step"), growth], logger=logger, log_every_n_steps=1)
    fit.fit(module, loader())

    restarts = PLAN.cycles if restart_lr else ()  # without restarts (Appendix D): one cosine over the run
    expected = {step: [cyclic_cosine_lr(step, restarts, PLAN.total, lr, 0.1 * lr) for lr in LR.values()]
                for step in range(PLAN.total)}  # η_max: each group's configured lr
    assert module.used_lr == expected
    monitored = {step: [m["lr-AdamW/decay"], m["lr-AdamW/no_decay"]] for step, m in logger.rows
                 if "lr-AdamW/decay" in m}
    assert monitored == expected
    # self.log in training_step (which keeps a float as a float32 tensor)
    logged = {step: m["train_lr"] for step, m in logger.rows if "train_lr" in m}
    assert logged == {step: torch.tensor(lrs[0], dtype=torch.float32).item() for step, lrs in expected.items()}
    decay = [lrs[0] for _, lrs in sorted(module.used_lr.items())]
    assert decay[0] == pytest.approx(LR["decay"])
    if restart_lr:  # back to η_max at each cycle start
        assert decay[0] == decay[4] == decay[7] and decay[3] < decay[2] < decay[1] < decay[0]
    else:
        assert decay == sorted(decay, reverse=True) and decay[4] < decay[3]
    assert [r.step for r in growth.records] == [4, 7]  # the model grows all the same


@pytest.mark.parametrize("interpolations, growths, restarts", [(1, [4], (4,)), (0, [], (3, 6))],
                         ids=["one-growth", "final-depth"])
def test_the_default_plan_follows_the_models_own_plan(tmp_path, interpolations, growths, restarts):
    # the paper's proportions of 9 steps: one growth halfway; a model at its final depth restarts the LR at 60/160
    # and 110/160 without growing (the last-cycle baseline)
    module = Classifier(tiny_net(interpolations=interpolations))
    growth = GrowthCallback()
    trainer(tmp_path, [growth]).fit(module, loader())
    assert [r.step for r in growth.records] == growths
    assert growth.plan.cycles == restarts and growth.plan.grow == bool(growths)
    lrs = [lrs[0] for _, lrs in sorted(module.used_lr.items())]
    assert [step for step in range(1, PLAN.total) if lrs[step] > lrs[step - 1]] == list(restarts)


# -- manual optimization ---------------------------------------------------------------------------------------

class ManualClassifier(Classifier):
    """The same steps written out (Lightning's manual optimization): training_step steps its one optimizer."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        images, labels = batch
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(F.cross_entropy(self.net(images), labels))
        optimizer.step()


def test_manual_optimization_grows_and_sets_the_lr_as_automatic_optimization_does(tmp_path):
    """The growth after a batch's step, the optimizer regrouped in place under training_step's own reference, and each
    step's lr: the manual run ends with the automatic run's weights and optimizer state, bit for bit."""
    ends = []
    for module in (Classifier(), ManualClassifier()):
        growth = GrowthCallback(PLAN)
        fit = trainer(tmp_path, [growth])
        fit.fit(module, loader())
        ends.append((module, [(r.step, r.layers) for r in growth.records], fit.optimizers[0].state_dict()))
    (automatic, growths, optimizer), (manual, manual_growths, manual_optimizer) = ends
    assert manual_growths == growths == [(4, (4, 4, 4)), (7, (8, 8, 8))]
    assert manual.used_lr == automatic.used_lr and len(manual.used_lr) == PLAN.total
    expected, got = automatic.state_dict(), manual.state_dict()
    assert list(got) == list(expected) and all(torch.equal(got[k], expected[k]) for k in expected)
    assert manual_optimizer["param_groups"] == optimizer["param_groups"]
    assert all(torch.equal(manual_optimizer["state"][i][k], optimizer["state"][i][k])
               for i in optimizer["state"] for k in optimizer["state"][i])


# -- resuming a checkpoint ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("resume_step", [3, 6], ids=["right-after-a-growth", "between-growths"])
def test_resume_from_a_checkpoint_of_a_grown_run_ends_with_the_uninterrupted_weights(tmp_path, resume_step):
    plan = GrowthPlan(cycles=(3, 7), total=9, unit="step")  # the first growth at the end of epoch 1
    checkpoints = tmp_path / "checkpoints"
    uninterrupted = Classifier(seed=0)
    growth = GrowthCallback(plan)
    run = trainer(tmp_path, [growth, ModelCheckpoint(checkpoints, "{step}", save_top_k=-1)], enable_checkpointing=True)
    run.fit(uninterrupted, loader())

    fresh = Classifier(seed=1)  # built anew at 2-2-2, with other initial weights
    resumed = GrowthCallback(plan)
    again = trainer(tmp_path, [resumed], enable_checkpointing=False)
    again.fit(fresh, loader(), ckpt_path=checkpoints / f"step={resume_step}.ckpt")

    assert stage_layers(fresh.net) == (8, 8, 8)
    expected, got = uninterrupted.state_dict(), fresh.state_dict()
    assert list(got) == list(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)  # bit-identical: CPU arithmetic is deterministic
    expected_opt, got_opt = run.optimizers[0].state_dict(), again.optimizers[0].state_dict()
    assert got_opt["param_groups"] == expected_opt["param_groups"]
    assert all(torch.equal(got_opt["state"][i][k], expected_opt["state"][i][k])
               for i in expected_opt["state"] for k in expected_opt["state"][i])
    assert [(r.step, r.layers) for r in resumed.records] == [(r.step, r.layers) for r in growth.records]


def test_evaluating_a_grown_checkpoint_grows_a_fresh_module_first(tmp_path):
    run = trainer(tmp_path, [GrowthCallback(PLAN), ModelCheckpoint(tmp_path / "ckpt", "{step}", save_top_k=-1)],
                  enable_checkpointing=True)
    grown = Classifier()
    run.fit(grown, loader())
    module = Classifier(seed=1)
    check = trainer(tmp_path, [GrowthCallback(PLAN)])
    check.validate(module, loader(), ckpt_path=tmp_path / "ckpt" / "step=9.ckpt", verbose=False)
    assert stage_layers(module.net) == (8, 8, 8)
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), grown.state_dict().values()))
    # the same, already grown, module: nothing to grow
    check.validate(module, loader(), ckpt_path=tmp_path / "ckpt" / "step=9.ckpt", verbose=False)
    assert stage_layers(module.net) == (8, 8, 8)


# -- DDP -------------------------------------------------------------------------------------------------------

@pytest.mark.slow  # a 2-process launch
def test_ddp_replicas_stay_identical_through_growth_and_resume_exactly(tmp_path):
    report_path = tmp_path / "report.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        filter(None, [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, str(SCRIPT), str(report_path), str(tmp_path / "run")], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(report_path.read_text())
    assert report["world_size"] == 2 and report["wrapped"] == "DistributedDataParallel"
    assert [(g["step"], g["layers"]) for g in report["growths"]] == [(4, [4, 4, 4]), (7, [8, 8, 8])]
    assert all(g["mismatch"] is None for g in report["growths"])  # parameters equal right after growth
    assert report["final_mismatch"] is None  # and parameters after training each rank on its own shard
    assert report["new_blocks_moved"]
    # resumed on both ranks from rank 0's checkpoint between the growths: each rank ends as it did uninterrupted
    assert report["resumed_growths"] == [[4, [4, 4, 4]], [7, [8, 8, 8]]]  # the checkpoint's growth and its own
    assert report["resume"] == [{"rank": rank, "module": None, "optimizer": None, "param_groups_equal": True}
                                for rank in (0, 1)]


# -- refusals: one GrowresError each, before anything changes ----------------------------------------------------

class TwoOptimizers(Classifier):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False  # Lightning itself refuses two optimizers otherwise

    def configure_optimizers(self):
        return [torch.optim.SGD(self.net.stem.parameters(), lr=0.1),
                torch.optim.SGD(self.net.stages.parameters(), lr=0.1)]


class WithScheduler(Classifier):
    def configure_optimizers(self):
        optimizer = super().configure_optimizers()
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, 2)]


class OutOfOrder(Classifier):
    def configure_optimizers(self):
        return torch.optim.SGD([*self.net.head.parameters(), *self.net.stem.parameters()], lr=0.1)


class TwoNets(Classifier):
    def __init__(self):
        super().__init__()
        self.teacher = tiny_net()


class NoNet(Classifier):
    def __init__(self):
        super().__init__(net=nn.Sequential(nn.Flatten(), nn.Linear(64, 3)))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Endless(IterableDataset):
    def __iter__(self):
        while True:
            yield torch.randn(1, 8, 8), torch.tensor(0)


REFUSALS = {
    "two optimizers": (TwoOptimizers, {}, {}, "one optimizer; configure_optimizers returned 2"),
    "an LR scheduler": (WithScheduler, {}, {}, "return no LR scheduler"),
    "groups out of module order": (OutOfOrder, {}, {}, "Param group 0 lists its parameters out of the module's order"),
    "a plan in steps of another length": (Classifier, dict(plan=GrowthPlan((4, 7), 10, "step")), {},
                                          r"covers 10 steps \(10 optimizer steps\) but this run takes 9"),
    "a plan in epochs of another length": (Classifier, dict(plan=GrowthPlan((1, 2), 4)), {},
                                           r"covers 4 epochs \(12 optimizer steps\) but this run takes 9"),
    "a run of unknown length": (Classifier, {}, dict(max_epochs=-1), "needs a run of known length"),
    "a plan in epochs over an unsized loader": (Classifier, dict(plan=GrowthPlan((1, 2), 3)),
                                                dict(max_steps=9, data=DataLoader(Endless(), batch_size=8)),
                                                "A plan in epochs needs a dataloader that has a length"),
    "a plan against the model's own": (Classifier, dict(plan=GrowthPlan((4,), 9, "step")), {},
                                       r"The model plans 2 interpolation\(s\) but the plan has 1"),
    "a model at its final depth": (lambda: Classifier(tiny_net(interpolations=0)), dict(plan=PLAN), {},
                                   "already at its final depth"),
    "a model that cannot grow": (lambda: Classifier(tiny_net(layers=(2, 1, 2))), dict(plan=PLAN), {},
                                 "Stage 1 has a shape-changing block with no block of its output shape after it"),
    "no growable module": (NoNet, {}, {}, "found 0 growable submodules in NoNet"),
    "two growable modules": (TwoNets, {}, {}, r"found 2 growable submodules in TwoNets: 'net' \(MultilevelResNet\), "
                                              r"'teacher' \(MultilevelResNet\); name the one to grow"),
    "a missing module": (Classifier, dict(module="backbone"), {}, "Classifier has no submodule 'backbone'"),
    "a module no adapter knows": (Classifier, dict(module="net.head"), {}, "No growth adapter matches"),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refusals_come_before_anything_changes(tmp_path, name):
    build, callback_args, trainer_args, message = REFUSALS[name]
    module = build()
    trainer_args = dict(trainer_args)
    data = trainer_args.pop("data") if "data" in trainer_args else loader()
    weights = copy.deepcopy(module.state_dict())
    fit = trainer(tmp_path, [GrowthCallback(**callback_args)], **trainer_args)
    with pytest.raises(GrowresError, match=message):
        fit.fit(module, data)
    assert fit.global_step == 0
    assert list(module.state_dict()) == list(weights)  # nothing grew
    assert all(torch.equal(module.state_dict()[k], v) for k, v in weights.items())  # nothing trained


@pytest.mark.parametrize("strategy", [FSDPStrategy, DeepSpeedStrategy, ModelParallelStrategy])
def test_sharding_strategies_are_refused_with_the_way_to_grow_a_sharded_model(strategy):
    # FSDP needs a GPU and DeepSpeed its package: the callback's first hook, with each strategy as it is
    stub = SimpleNamespace(strategy=strategy.__new__(strategy))
    module = Classifier()
    with pytest.raises(GrowresError, match=f"sharded by {strategy.__name__}.*growres.GrowthScheduler"):
        GrowthCallback().setup(stub, module, "fit")
    assert stage_layers(module.net) == (2, 2, 2)


@pytest.mark.parametrize("change, message", [
    (dict(plan=GrowthPlan((3, 6), 9, "step")), r"made with plan GrowthPlan\(cycles=\(4, 7\)"),
    (dict(plan=PLAN, strategy="identity"), "strategy 'copy'; this run has .* strategy 'identity'"),
], ids=["plan", "strategy"])
def test_a_checkpoint_of_another_plan_or_strategy_is_refused_before_the_module_grows(tmp_path, change, message):
    run = trainer(tmp_path, [GrowthCallback(PLAN), ModelCheckpoint(tmp_path / "ckpt", "{step}", save_top_k=-1)],
                  enable_checkpointing=True)
    run.fit(Classifier(), loader())
    module = Classifier()
    again = trainer(tmp_path, [GrowthCallback(**change)])
    with pytest.raises(GrowresError, match=message):
        again.fit(module, loader(), ckpt_path=tmp_path / "ckpt" / "step=6.ckpt")
    assert stage_layers(module.net) == (2, 2, 2)


def test_param_groups_that_change_during_training_are_refused(tmp_path):
    class AddsAGroup(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 2:
                trainer.optimizers[0].add_param_group({"params": [nn.Parameter(torch.zeros(1))]})

    fit = trainer(tmp_path, [AddsAGroup(), GrowthCallback(PLAN)])
    with pytest.raises(GrowresError, match="param groups changed from 2 to 3"):
        fit.fit(Classifier(), loader())


@pytest.mark.parametrize("kwargs, message", [
    (dict(strategy="zero"), "Unknown interpolation strategy 'zero'"),
    (dict(min_lr_ratio=1.5), r"min_lr_ratio .* must be in \[0, 1\]"),
    (dict(plan=(60, 110)), "plan must be a growres.GrowthPlan or None, got tuple"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(GrowresError, match=message):
        GrowthCallback(**kwargs)
