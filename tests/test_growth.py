"""Interpolation (paper Section 4.1, Appendix B) and the adapter registry."""
import copy
import re

import pytest
import timm
import torch
import torch.nn as nn
from timm.layers import DropPath

import growres
from growres import GrowresError, GrowthAdapter, interpolate, register_adapter, stage_layers


def randomize_norms(model: nn.Module) -> nn.Module:
    """Give every norm non-trivial statistics and affine, so that copies and identities are really tested."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(generator=gen)
                module.running_var.uniform_(0.5, 2.0, generator=gen)
            if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
                module.weight.normal_(generator=gen)
                module.bias.normal_(generator=gen)
        for name, param in model.named_parameters():
            if name.endswith("gamma"):  # layer-scale (ViT, ConvNeXt): timm starts it near zero
                param.normal_(generator=gen)
    return model


VIT = dict(img_size=32, patch_size=8, embed_dim=64, num_heads=2, num_classes=10)
# timm's drop-path rates from torch.linspace in float32 (rate, step, step * i, rate - step * k, each rounded to
# float32, u = eps/2): ≲ 6 u = 3 eps relative to each rate; growth derives its own in float64
LINSPACE_RTOL = 3 * torch.finfo(torch.float32).eps

# what one growth multiplies h by, per strategy (the README's table): the paper's copy halves it
STEP_FACTOR = {"copy": 0.5, "identity": 0.5, "stack": 1.0, "copy-unscaled": 1.0}

# (model, its args, interpolations, the directly built equivalent's args; a growres model's h: STEP_FACTOR's)
STRICT_EQUIVALENTS = [
    ("growres_resnet14", {}, 2, ("growres_resnet50", {})),
    ("growres_resnet32", {}, 2, ("growres_resnet122", {})),
    ("growres_wrn50i", {}, 1, ("growres_wrn50i", dict(layers=(4, 4, 4), interpolations=1))),
    ("resnet18", dict(num_classes=10), 1, ("resnet18", dict(num_classes=10, layers=(4, 4, 4, 4)))),
    ("resnet26", dict(num_classes=10), 1, ("resnet26", dict(num_classes=10, layers=(4, 4, 4, 4)))),
    ("resnet50", dict(num_classes=10), 1, ("resnet50", dict(num_classes=10, layers=(6, 8, 12, 6)))),
    ("vit_tiny_patch16_224", dict(VIT, depth=2), 1, ("vit_tiny_patch16_224", dict(VIT, depth=4))),
    ("convnext_atto", dict(num_classes=10), 1, ("convnext_atto", dict(num_classes=10, depths=(4, 4, 12, 4)))),
    ("convnextv2_atto", dict(num_classes=10), 1, ("convnextv2_atto", dict(num_classes=10, depths=(4, 4, 12, 4)))),
    ("resnetv2_50", dict(num_classes=10), 1, ("resnetv2_50", dict(num_classes=10, layers=(6, 8, 12, 6)))),
    ("resnetv2_18", dict(num_classes=10), 2, ("resnetv2_18", dict(num_classes=10, layers=(8, 8, 8, 8)))),
]


@pytest.mark.parametrize("strategy", ["copy", "stack"])  # the two layouts: identity and copy-unscaled are copy's
@pytest.mark.parametrize("name, args, times, target", STRICT_EQUIVALENTS)
def test_grown_model_loads_strictly_into_the_directly_built_one(name, args, times, target, strategy):
    model = timm.create_model(name, **args)
    for _ in range(times):
        interpolate(model, strategy)
    target_name, target_args = target
    if target_name.startswith("growres"):  # built with h = 1
        target_args = dict(target_args, step_size=STEP_FACTOR[strategy] ** times)
    direct = timm.create_model(target_name, **target_args)
    direct.load_state_dict(model.state_dict(), strict=True)
    assert stage_layers(model) == stage_layers(direct)
    assert getattr(model, "feature_info", None) == getattr(direct, "feature_info", None)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the same computation, not just the same tensors: transitions sit where timm puts them
        torch.testing.assert_close(model.eval()(x), direct.eval()(x), atol=0, rtol=0)
    # the args timm records (what export writes as model_args) describe the grown model
    rebuilt = timm.create_model(name, **timm.models._input.get_model_args(model))
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_new_blocks_copy_parameters_and_running_statistics():
    model = randomize_norms(timm.create_model("growres_resnet32"))
    old = [[copy.deepcopy(b.state_dict()) for b in stage] for stage in model.stages]
    interpolate(model)
    for stage_idx, (stage, old_blocks) in enumerate(zip(model.stages, old)):
        assert len(stage) == 2 * len(old_blocks)
        for idx, old_state in enumerate(old_blocks):
            kept, inserted = stage[2 * idx], stage[2 * idx + 1]
            # Appendix B: the block after a stage's downsampling block copies the next old block
            source = old_blocks[idx + 1] if (stage_idx > 0 and idx == 0) else old_state
            for key, value in inserted.state_dict().items():
                expected = source[key] * (0.5 if key == "h" else 1.0)
                assert torch.equal(value, expected), (stage_idx, idx, key)
            assert torch.equal(kept.conv1.weight, old_state["conv1.weight"])
            assert torch.equal(kept.norm1.running_var, old_state["norm1.running_var"])
    # the parameters are copies, not shared
    assert stage[1].conv1.weight.data_ptr() != stage[0].conv1.weight.data_ptr()


def test_new_blocks_are_made_by_the_copy_block_given():
    """grow(copy_block=...) is how sharded growth makes its new blocks (growres.sharding); everything else is the
    strategy's, as for blocks made by deepcopy."""
    made = []

    def copy_block(source):
        made.append(source)
        return copy.deepcopy(source)

    model, reference = timm.create_model("growres_resnet32"), timm.create_model("growres_resnet32")
    reference.load_state_dict(model.state_dict())
    sources = [block for plan in growres.growth.plan_growth(model, "identity") for block in plan]
    growres.grow(model, "identity", copy_block=copy_block)
    growres.grow(reference, "identity")
    assert sorted(map(id, made)) == sorted(map(id, sources))  # once per new block, its source
    assert model.state_dict().keys() == reference.state_dict().keys()
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("strategy", STEP_FACTOR)
def test_step_size_follows_the_strategy_and_transitions_keep_h_one(strategy):
    model = timm.create_model("growres_resnet50i")
    interpolate(model, strategy)
    h = STEP_FACTOR[strategy]  # exact: 1 * 0.5 or 1 * 1
    assert model.step_size == h
    assert [[float(block.h) for block in stage] for stage in model.stages] == [
        [h] * 4, [1.0] + [h] * 3, [1.0] + [h] * 3]
    assert model.growth_plan.interpolations == 1 and model.growth_plan.final_layers == (8, 8, 8)


@pytest.mark.parametrize("name, args", [
    ("growres_resnet14", {}),
    ("growres_wrn50i", {}),
    ("resnet18", dict(num_classes=10)),
    ("resnet50", dict(num_classes=10)),
    ("vit_tiny_patch16_224", dict(VIT, depth=2)),
    ("vit_tiny_patch16_224", dict(VIT, depth=2, init_values=0.1)),  # layer-scale branches
    ("convnext_atto", dict(num_classes=10)),  # layer-scale gamma
    ("convnextv2_atto", dict(num_classes=10)),  # no gamma (timm cannot pass ls_init_value=None), GRN in the MLP
    ("resnetv2_50", dict(num_classes=10)),
    ("resnetv2_18", dict(num_classes=10)),
])
def test_identity_strategy_keeps_eval_outputs(name, args):
    torch.manual_seed(0)
    model = randomize_norms(timm.create_model(name, **args)).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        interpolate(model, strategy="identity")
        interpolate(model, strategy="identity")
        after = model(x)
    assert stage_layers(model) == tuple(4 * n for n in stage_layers(timm.create_model(name, **args)))
    # exact, under any kernels: a new block's branch ends in a zeroed layer (0 * anything + 0 is 0), so the block
    # adds exactly 0 (a post-activation ResNet's ReLU then sees a non-negative input); an old block's branch was
    # scaled by 2 and its step by 0.5, powers of two, so it computes what it computed
    torch.testing.assert_close(after, before, atol=0, rtol=0)


# (model, args, the tensor that scales a block's branch)
BRANCH_SCALES = [
    ("convnext_atto", dict(num_classes=10), lambda block: block.gamma),
    ("convnextv2_atto", dict(num_classes=10), lambda block: block.mlp.fc2.weight),  # no gamma: the MLP's fc2
    ("resnetv2_50", dict(num_classes=10), lambda block: block.conv3.weight),
    ("resnetv2_18", dict(num_classes=10), lambda block: block.conv2.weight),
]

# per strategy: where the new blocks go, and what one growth multiplies a new block's branch by (against its
# source's) and an old time step's (in models without an explicit h, h is folded into the branches)
STRATEGY_EFFECTS = {
    "copy": ("interleave", 0.5, 0.5),
    "identity": ("interleave", 0.0, 1.0),  # the old branch x 2, then h x 0.5
    "stack": ("after the stage", 1.0, 1.0),
    "copy-unscaled": ("interleave", 1.0, 1.0),
}


def grown_positions(placement: str, idx: int, blocks: int) -> tuple[int, int]:
    """Where old block ``idx`` of a stage of ``blocks`` blocks, and the new block made for it, are after growth."""
    return (2 * idx, 2 * idx + 1) if placement == "interleave" else (idx, blocks + idx)


@pytest.mark.parametrize("strategy", STRATEGY_EFFECTS)
@pytest.mark.parametrize("name, args, branch_scale", BRANCH_SCALES)
def test_strategies_place_and_scale_blocks_and_keep_transitions(name, args, branch_scale, strategy):
    """No explicit h: h is each time step's branch; a transition's branch is never touched, it stays its stage's
    first block, and the new block made for it copies the next block (Appendix B), wherever the strategy puts it."""
    model = randomize_norms(timm.create_model(name, **args))
    adapter = growres.get_adapter(model)
    old = [[(branch_scale(b).clone(), adapter.is_transition(b)) for b in stage] for stage in adapter.stages(model)]
    assert any(transition for stage in old for _, transition in stage) == name.startswith("resnetv2")
    placement, new_factor, old_factor = STRATEGY_EFFECTS[strategy]
    interpolate(model, strategy)
    for stage, old_blocks in zip(adapter.stages(model), old):
        scales, transitions = [branch_scale(b) for b in stage], [adapter.is_transition(b) for b in stage]
        assert len(stage) == 2 * len(old_blocks)
        assert transitions == [idx == 0 and old_blocks[0][1] for idx in range(len(stage))]
        for idx, (value, transition) in enumerate(old_blocks):
            kept, new = grown_positions(placement, idx, len(old_blocks))
            # exact: multiplications by powers of two
            assert torch.equal(scales[kept], value if transition else value * old_factor), (idx, "old")
            source = old_blocks[idx + 1][0] if transition else value  # Appendix B
            assert torch.equal(scales[new], source * new_factor), (idx, "new")


def test_stack_repeats_each_stage_after_itself_with_the_sources_weights_and_h():
    """G_stack on a growres model (transitions, explicit h): stage 0 (no transition) becomes blocks 0..3, 0..3; a
    stage [T, b1, b2, b3, b4] becomes [T, b1, ..., b4, b1', b1', b2', b3', b4']: T is not repeated and the block made
    for it copies b1, as copy's does. Every tensor, running statistics and h included, is its source's."""
    model = randomize_norms(timm.create_model("growres_resnet32", layers=(4, 5, 5)))
    old_blocks = [list(stage) for stage in model.stages]
    old = [[copy.deepcopy(b.state_dict()) for b in stage] for stage in model.stages]
    sources = [[0, 1, 2, 3], [1, 1, 2, 3, 4], [1, 1, 2, 3, 4]]  # per stage, the old block each new block copies
    interpolate(model, strategy="stack")
    assert model.layers == (8, 10, 10) and model.step_size == 1.0
    for stage, kept, states, copied in zip(model.stages, old_blocks, old, sources):
        blocks = list(stage)
        assert blocks[:len(kept)] == kept  # the old blocks, first and in order
        assert [b.is_transition for b in blocks] == [kept[0].is_transition] + [False] * (len(blocks) - 1)
        for block, state in zip(blocks, states + [states[idx] for idx in copied], strict=True):
            assert block.state_dict().keys() == state.keys()
            for key, value in block.state_dict().items():
                assert torch.equal(value, state[key]), key  # exact: nothing is rescaled
        params = [p.data_ptr() for b in blocks for p in b.parameters()]
        assert len(set(params)) == len(params)  # copies, not shared


def test_copy_strategy_keeps_the_function_close_as_h_shrinks():
    """Section 3.3/4.1: a finer discretisation of the same ODE. Each interpolation changes the features
    less than the one before, roughly halving like forward Euler's first-order error."""
    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    for name in ("growres_resnet14", "growres_wrn14"):
        model = timm.create_model(name).eval()
        with torch.no_grad():
            previous = model.forward_features(x)
            changes = []
            for _ in range(4):
                interpolate(model)
                current = model.forward_features(x)
                changes.append(((current - previous).norm() / previous.norm()).item())
                previous = current
        assert all(later < earlier for earlier, later in zip(changes, changes[1:])), changes
        assert changes[-1] / changes[-2] < 0.7, changes


def test_stochastic_depth_rates_are_rederived():
    model = timm.create_model("growres_resnet14", drop_path_rate=0.3)
    interpolate(model)
    blocks = [b for stage in model.stages for b in stage]
    rates = [b.drop_path.drop_prob if hasattr(b.drop_path, "drop_prob") else 0.0 for b in blocks]
    assert rates == [0.3 * i / (len(blocks) - 1) for i in range(len(blocks))]  # exact: the model's float64 rule

    resnet = timm.create_model("resnet18", num_classes=10, drop_path_rate=0.1)
    interpolate(resnet)
    blocks = [b for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4) for b in layer]
    rates = [b.drop_path.drop_prob if b.drop_path is not None else 0.0 for b in blocks]
    assert rates == [0.1 * i / 15 for i in range(16)]  # exact: timm's ResNet computes its rates this way too


@pytest.mark.parametrize("name, depth_arg", [("convnext_atto", "depths"), ("resnetv2_18", "layers")])
def test_stochastic_depth_rates_are_rederived_as_timm_builds_them(name, depth_arg):
    model = timm.create_model(name, num_classes=10, drop_path_rate=0.2)
    interpolate(model)
    direct = timm.create_model(name, num_classes=10, drop_path_rate=0.2, **{depth_arg: stage_layers(model)})

    def rates(m):
        return [getattr(b.drop_path, "drop_prob", 0.0) for stage in m.stages for b in stage.blocks]
    assert rates(model) == pytest.approx(rates(direct), rel=LINSPACE_RTOL)
    assert rates(model)[-1] == pytest.approx(0.2, rel=torch.finfo(torch.float64).eps)  # 0.2 * k / k: two roundings


def test_vit_feature_info_describes_the_new_depth():
    vit = timm.create_model("vit_tiny_patch16_224", **VIT, depth=2)
    before = vit.feature_info[0]
    interpolate(vit)
    assert vit.feature_info == [dict(module=f"blocks.{i}", num_chs=before["num_chs"], reduction=before["reduction"])
                                for i in range(4)]
    assert timm.models._input.get_model_args(vit)["depth"] == 4


def test_vit_drop_path_rates_are_rederived():
    vit = timm.create_model("vit_tiny_patch16_224", **VIT, depth=2, drop_path_rate=0.2)
    interpolate(vit)
    for path in ("drop_path1", "drop_path2"):
        rates = [getattr(b, path).drop_prob if isinstance(getattr(b, path), DropPath) else 0.0 for b in vit.blocks]
        assert rates == [0.2 * i / 3 for i in range(4)], path  # exact: the same float64 rule
        assert isinstance(getattr(vit.blocks[0], path), nn.Identity)  # rate 0: no DropPath at all
    plain = timm.create_model("vit_tiny_patch16_224", **VIT, depth=2)
    interpolate(plain)
    assert all(isinstance(b.drop_path1, nn.Identity) and isinstance(b.drop_path2, nn.Identity) for b in plain.blocks)


def test_vit_layer_scale_carries_the_branch_scale():
    """With layer-scale, h is folded into its gamma; the attention and MLP weights stay the copied ones."""
    vit = timm.create_model("vit_tiny_patch16_224", **VIT, depth=2, init_values=0.1)
    old = copy.deepcopy(vit.blocks)
    interpolate(vit)
    for new, source in zip(vit.blocks, [old[0], old[0], old[1], old[1]]):
        assert torch.equal(new.ls1.gamma, 0.5 * source.ls1.gamma) and torch.equal(new.ls2.gamma, 0.5 * source.ls2.gamma)
        assert torch.equal(new.attn.proj.weight, source.attn.proj.weight)
        assert torch.equal(new.mlp.fc2.weight, source.mlp.fc2.weight)


@pytest.mark.parametrize("strategy", growres.STRATEGIES)
def test_a_stage_with_only_a_transition_block_is_refused_untouched(strategy):
    model = timm.create_model("growres_resnet14", layers=(2, 1, 2))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(GrowresError, match="Stage 1 .* at least two blocks"):
        interpolate(model, strategy)
    assert model.layers == (2, 1, 2) and model.step_size == 1.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_single_block_first_stage_is_a_time_step_and_grows():
    model = timm.create_model("growres_resnet14", layers=(1, 2, 2))
    interpolate(model)
    assert model.layers == (2, 4, 4)


@pytest.mark.parametrize("bad, match", [
    (lambda: interpolate(timm.create_model("growres_resnet14"), strategy="random"), "Unknown interpolation strategy"),
    (lambda: interpolate(nn.Sequential(nn.Linear(2, 2))), "register_adapter"),
    (lambda: register_adapter("not an adapter"), "GrowthAdapter, got str"),
])
def test_bad_input(bad, match):
    with pytest.raises(GrowresError, match=match):
        bad()


class ToyResidual(nn.Module):
    """A model growres knows nothing about: x + scale * mlp(x), blocks in a ModuleList-free Sequential."""

    def __init__(self, depth: int = 2):
        super().__init__()
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 4)) for _ in range(depth)])

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return x


def test_register_adapter_makes_any_stage_of_blocks_model_growable():
    def scale(block, factor):
        block[2].weight.mul_(factor)
        block[2].bias.mul_(factor)

    register_adapter(GrowthAdapter(
        name="toy",
        matches=lambda model: isinstance(model, ToyResidual),
        stages=lambda model: [model.blocks],
        is_transition=lambda block: False,
        scale_branch=scale,
        refresh=lambda model: None,
    ))
    torch.manual_seed(0)
    model = ToyResidual()
    x = torch.randn(3, 4)
    before = model(x)
    interpolate(model, strategy="identity")
    assert len(model.blocks) == 4
    torch.testing.assert_close(model(x), before, atol=0, rtol=0)  # exact: see test_identity_strategy_keeps_eval_outputs
    assert growres.get_adapter(model).name == "toy"
    # a later registration takes precedence over the earlier ones
    register_adapter(GrowthAdapter(name="toy-2", matches=lambda model: isinstance(model, ToyResidual),
                                   stages=lambda model: [model.blocks], is_transition=lambda block: False,
                                   scale_branch=scale, refresh=lambda model: None))
    assert growres.get_adapter(model).name == "toy-2"


class Widen(nn.Module):
    """A toy residual block from ``chs`` to ``out`` features: a transition when they differ (its shortcut pads)."""

    def __init__(self, chs: int, out: int):
        super().__init__()
        self.is_transition = chs != out
        self.branch = nn.Linear(chs, out)

    def forward(self, x):
        return nn.functional.pad(x, (0, self.branch.out_features - x.shape[-1])) + self.branch(x)


class ToyMidStageTransition(nn.Module):
    """One stage whose transition is its second block, [4 -> 4, 4 -> 8, 8 -> 8]: no built-in adapter has one."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(Widen(4, 4), Widen(4, 8), Widen(8, 8))

    def forward(self, x):
        return self.blocks(x)


@pytest.fixture
def mid_stage_transition_adapter(monkeypatch):
    monkeypatch.setattr(growres.growth, "_ADAPTERS", list(growres.growth._ADAPTERS))  # this test's only
    register_adapter(GrowthAdapter(
        name="toy-mid-stage-transition", matches=lambda model: isinstance(model, ToyMidStageTransition),
        stages=lambda model: [model.blocks], is_transition=lambda block: block.is_transition,
        scale_branch=lambda block, factor: growres.growth.scale_layer(block.branch, factor),
        refresh=lambda model: None))


def test_stack_refuses_a_transition_after_a_stages_first_block_untouched(mid_stage_transition_adapter):
    """stack would put the copy of the 4 -> 4 block after the 8 -> 8 one, where its input has 8 features; copy puts
    every new block beside its source, where it fits."""
    torch.manual_seed(0)
    model = ToyMidStageTransition()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(GrowresError, match=r"^Stage 0 has a shape-changing block after its first block, so strategy "
                                           r"'stack' would place a new block where its input has another shape than "
                                           r"its source's: .* beside its source \(copy, identity, copy-unscaled\)\.$"):
        interpolate(model, strategy="stack")
    assert model.state_dict().keys() == before.keys() and all(torch.equal(before[k], v)
                                                               for k, v in model.state_dict().items())
    interpolate(model, strategy="copy")
    assert [b.is_transition for b in model.blocks] == [False, False, True, False, False, False]
    assert model(torch.randn(2, 4)).shape == (2, 8)


FAMILIES = ("growres", "timm-resnet", "timm-vit", "timm-convnext", "timm-resnetv2")


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_example_is_grown_by_its_own_adapter(family):
    adapter = next(a for a in growres.registered_adapters() if a.name == family)
    assert adapter.description and adapter.examples
    for name in adapter.examples:
        assert growres.get_adapter(timm.create_model(name, pretrained=False)).name == family, name


def test_growres_list_families_reads_the_registry(monkeypatch, capsys):
    from growres import growth
    from growres.cli import main
    monkeypatch.setattr(growth, "_ADAPTERS", list(growth._ADAPTERS))  # the toy family below is this test's only
    register_adapter(GrowthAdapter(name="toy", matches=lambda model: False, stages=lambda model: [],
                                   is_transition=lambda block: False, scale_branch=lambda block, factor: None,
                                   refresh=lambda model: None, description="a toy family", examples=("toy_1",)))
    assert main(["list", "--families"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert {*FAMILIES, "toy"} <= set(rows)  # and any family registered elsewhere
    assert "toy_1" in rows["toy"] and "a toy family" in rows["toy"]
    assert "convnext_atto" in rows["timm-convnext"] and "resnetv2_50" in rows["timm-resnetv2"]


def test_growres_list_strategies_shows_each_strategys_row(capsys):
    from growres.cli import main
    assert main(["list", "--strategies"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"strategy +new blocks +new branch x +old branch x +h x +what", lines[0])
    rows = {line.split()[0]: line for line in lines[1:]}
    expected = {  # placement, new branch x, old branch x, h x, the start of the description
        "copy": r"copy +interleave +1 +1 +0\.5 +the paper's interpolation",
        "identity": r"identity +interleave +0 +2 +0\.5 +copy's layout with each new branch zeroed",
        "stack": r"stack +after stage +1 +1 +1 +G_stack \(Du et al\., 2024\)",
        "copy-unscaled": r"copy-unscaled +interleave +1 +1 +1 +copy's layout, nothing rescaled",
    }
    assert rows.keys() == expected.keys()
    assert all(re.match(pattern, rows[name]) for name, pattern in expected.items()), rows


@pytest.mark.parametrize("name", ["convnext_atto", "resnetv2_50", "resnetv2_18"])
def test_shortcut_is_what_a_block_computes_without_its_branch(name):
    """The analyses' identity path, transitions (ResNetV2's projection of the pre-activated input) included."""
    model = randomize_norms(timm.create_model(name, num_classes=10)).eval()
    adapter = growres.get_adapter(model)
    blocks = [b for stage in adapter.stages(model) for b in stage]
    inputs = {}
    hooks = [b.register_forward_pre_hook(lambda block, args: inputs.setdefault(block, args[0])) for b in blocks]
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
        for hook in hooks:
            hook.remove()
        for block in blocks:
            adapter.scale_branch(block, 0.0)
            torch.testing.assert_close(block(inputs[block]), adapter.shortcut(block, inputs[block]), atol=0, rtol=0)
    assert any(adapter.is_transition(b) for b in blocks) == name.startswith("resnetv2")


def assert_same_drop_paths(blocks, expected_blocks, path="drop_path"):
    """The same stochastic-depth module in each block as timm builds (None, Identity or DropPath), at the same rate."""
    modules, expected = [getattr(b, path) for b in blocks], [getattr(b, path) for b in expected_blocks]
    assert [type(m) for m in modules] == [type(m) for m in expected]
    assert [getattr(m, "drop_prob", 0.0) for m in modules] == pytest.approx(
        [getattr(m, "drop_prob", 0.0) for m in expected], rel=LINSPACE_RTOL)  # timm's may come from a linspace


def resnet_blocks(model):
    return [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]


@pytest.mark.parametrize("rate", [0.0, 0.1])
def test_timm_resnet_drop_paths_are_what_timm_builds_at_the_grown_depth(rate):
    """timm leaves ``drop_path`` None where the rate is 0 (no DropPath(0.0) module at all)."""
    model = timm.create_model("resnet18", num_classes=10, drop_path_rate=rate)
    interpolate(model)
    direct = timm.create_model("resnet18", num_classes=10, drop_path_rate=rate, layers=stage_layers(model))
    assert_same_drop_paths(resnet_blocks(model), resnet_blocks(direct))
    assert resnet_blocks(model)[0].drop_path is None


def test_vit_of_depth_one_grows_to_what_timm_builds_at_depth_two():
    """Two blocks after growth: timm's rates run from 0 to the full rate over them."""
    vit = timm.create_model("vit_tiny_patch16_224", **VIT, depth=1, drop_path_rate=0.2)
    interpolate(vit)
    direct = timm.create_model("vit_tiny_patch16_224", **VIT, depth=2, drop_path_rate=0.2)
    for path in ("drop_path1", "drop_path2"):
        assert_same_drop_paths(vit.blocks, direct.blocks, path)
        assert getattr(vit.blocks[-1], path).drop_prob == 0.2  # 0.2 * 1 / 1: exact
    assert vit.feature_info == direct.feature_info


def test_a_timm_resnet_built_without_create_model_grows():
    """A model made from its class has no ``_model_args``: growth must not need them (rate 0)."""
    from timm.models.resnet import BasicBlock, ResNet
    model = ResNet(block=BasicBlock, layers=(2, 2, 2, 2), num_classes=10)
    interpolate(model)
    assert stage_layers(model) == (4, 4, 4, 4)
    assert all(b.drop_path is None for b in resnet_blocks(model))
    assert model._model_args["layers"] == (4, 4, 4, 4)


def test_a_timm_resnet_with_squeeze_excitation_is_refused():
    """An SE gate depends on its input's scale, so the ResNet adapter must not claim such a model."""
    model = timm.create_model("resnet18", num_classes=10, block_args=dict(attn_layer="se"))
    assert all(b.se is not None for b in resnet_blocks(model))
    with pytest.raises(GrowresError, match="No growth adapter matches ResNet"):
        growres.get_adapter(model)


@pytest.mark.parametrize("name", ["growres_resnet50i", "growres_resnet14"])
def test_growres_model_args_record_the_grown_model(name):
    """timm's export arguments after growth rebuild the grown model: its depth, h and the interpolations left."""
    model = timm.create_model(name, num_classes=10)
    planned = model.interpolations
    interpolate(model)
    assert model.interpolations == max(planned - 1, 0)  # growing past the plan leaves none to come, never fewer
    args = timm.models._input.get_model_args(model)
    assert (args["layers"], args["step_size"], args["interpolations"]) == (
        model.layers, model.step_size, model.interpolations)
    rebuilt = timm.create_model(name, **args)
    assert (rebuilt.layers, rebuilt.step_size, rebuilt.interpolations) == (
        model.layers, model.step_size, model.interpolations)
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_a_new_adapter_takes_precedence_over_the_first_registered(monkeypatch):
    monkeypatch.setattr(growres.growth, "_ADAPTERS", list(growres.growth._ADAPTERS))
    first = next(a for a in growres.registered_adapters() if a.name == "growres")  # growres.growth registers it first
    assert growres.registered_adapters()[0] is first
    model = timm.create_model(first.examples[0])
    register_adapter(GrowthAdapter(**{**first.__dict__, "name": "override"}))
    assert growres.get_adapter(model).name == "override"


def test_messages_name_the_fix():
    with pytest.raises(GrowresError) as exc:
        growres.get_adapter(nn.Sequential(nn.Linear(2, 2)))
    known = ", ".join(a.name for a in reversed(growres.registered_adapters()))
    assert f"No growth adapter matches Sequential (known: {known})." in str(exc.value)
    assert "Register one with growres.register_adapter(growres.GrowthAdapter(...))" in str(exc.value)
    assert "are, which blocks change shape" in str(exc.value)

    ddp = nn.parallel.DistributedDataParallel.__new__(nn.parallel.DistributedDataParallel)  # no process group
    with pytest.raises(GrowresError, match=r"DistributedDataParallel wrapper \(accelerator\.unwrap_model\(model\)\); "
                                           "GrowthScheduler re-prepares"):
        growres.get_adapter(ddp)

    with pytest.raises(GrowresError, match="^Unknown interpolation strategy 'random': choose one of copy, identity, "
                                           "stack, copy-unscaled.$"):
        interpolate(timm.create_model("growres_resnet14"), strategy="random")
    with pytest.raises(GrowresError, match="after it, so interpolation has nothing to copy"):
        interpolate(timm.create_model("growres_resnet14", layers=(2, 1, 2)))
