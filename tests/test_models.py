"""The paper's networks in timm: Table 5, the explicit step size, the timm model interface."""
import subprocess
import sys

import pytest
import timm
import torch

import growres
from growres.cli import main
from growres.multilevel_resnet import MultilevelResNet
from growres.runs import model_args

MODELS = [
    "growres_resnet14", "growres_resnet32", "growres_resnet50", "growres_resnet122",
    "growres_wrn14", "growres_wrn32", "growres_wrn50", "growres_wrn122",
    "growres_resnet50i", "growres_resnet122i", "growres_wrn50i", "growres_wrn122i",
]

# Table 5 of the paper, as printed: (model, CIFAR-10, CIFAR-100, STL-10)
TABLE_5 = [
    ("growres_resnet14", 172_506, 178_356, 172_506),
    ("growres_resnet50", 755_802, 761_652, 755_802),
    ("growres_resnet32", 464_154, 470_004, 464_154),
    ("growres_resnet122", 1_922_394, 1_928_244, 1_922_394),
    ("growres_wrn14", 685_994, 697_604, 685_994),
    ("growres_wrn50", 3_013_802, 3_025_412, 3_013_802),
    ("growres_wrn32", 1_849_898, 1_861_508, 1_849_898),
    ("growres_wrn122", 7_669_418, 7_681_028, 7_669_418),
]
TABLE_5_CELLS = [
    (name, dataset, num_classes, count)
    for name, c10, c100, stl in TABLE_5
    for dataset, num_classes, count in (("cifar10", 10, c10), ("cifar100", 100, c100), ("stl10", 10, stl))
]


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, dataset, num_classes, expected", TABLE_5_CELLS)
def test_parameter_counts_equal_table_5(name, dataset, num_classes, expected):
    model = timm.create_model(name, num_classes=num_classes)
    if dataset == "stl10":  # 96x96 inputs: same weights, global pooling
        assert model(torch.randn(1, 3, 96, 96)).shape == (1, num_classes)
    assert num_params(model) == expected


def test_registry_lists_all_twelve():
    assert sorted(timm.list_models("growres_*")) == sorted(MODELS)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("size", [32, 96])
def test_forward_backward(name, size):
    model = timm.create_model(name, num_classes=7)
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 7)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name, first, final, interpolations", [
    ("growres_resnet50i", (2, 2, 2), (8, 8, 8), 2),
    ("growres_resnet122i", (5, 5, 5), (20, 20, 20), 2),
    ("growres_wrn50i", (2, 2, 2), (8, 8, 8), 2),
    ("growres_wrn122i", (5, 5, 5), (20, 20, 20), 2),
    ("growres_resnet50", (8, 8, 8), (8, 8, 8), 0),
])
def test_multilevel_models_carry_their_plan(name, first, final, interpolations):
    model = timm.create_model(name)
    assert model.layers == first and model.step_size == 1.0
    plan = model.growth_plan
    assert plan.interpolations == interpolations
    assert plan.final_layers == final
    assert plan.final_step_size == 1.0 / 2 ** interpolations


def test_step_size_is_a_real_saved_attribute():
    model = timm.create_model("growres_resnet14", step_size=0.5)
    assert model.step_size == 0.5
    blocks = [b for stage in model.stages for b in stage]
    # transitions (first block of stages 2, 3) are not time steps: h stays 1
    assert [float(b.h) for b in blocks] == [0.5, 0.5, 1.0, 0.5, 1.0, 0.5]
    model.step_size = 0.125
    state = model.state_dict()
    assert float(state["stages.0.0.h"]) == 0.125 and float(state["stages.1.0.h"]) == 1.0
    other = timm.create_model("growres_resnet14")
    other.load_state_dict(state)
    assert other.step_size == 0.125


def test_step_size_scales_the_residual():
    """Y + h G(Y): with G fixed, the block's output moves linearly in h."""
    torch.manual_seed(0)
    block = timm.create_model("growres_resnet14").eval().stages[0][1]
    x = torch.randn(2, 16, 8, 8)
    block.h.fill_(1.0)
    full = block(x)
    block.h.fill_(0.25)
    y, expected = block(x), x + 0.25 * (full - x)
    # Rounding, elementwise (u = eps/2; scaling by 0.25 is exact): the block rounds x + 0.25 G once; the reference
    # rounds full = x + G, full - x and the final sum; so |y - expected| <= u (|y| + |expected| + 0.25 (|full| +
    # |full - x|)), about 2 ulps of the outputs
    u = torch.finfo(torch.float32).eps / 2
    bound = u * (y.abs() + expected.abs() + 0.25 * (full.abs() + (full - x).abs()))
    assert ((y - expected).abs() <= bound).all(), ((y - expected).abs() / bound).max()


def test_create_model_overrides():
    model = timm.create_model("growres_wrn50i", num_classes=100, layers=(3, 4, 5), step_size=0.5, in_chans=1)
    assert model.layers == (3, 4, 5) and model.step_size == 0.5
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 100)


@pytest.mark.parametrize("kwargs, match", [
    (dict(layers=(2, 0, 2)), "positive integers"),
    (dict(layers=(2, 2.5, 2)), "positive integers"),
    (dict(layers=()), "one positive integer per stage"),
    (dict(layers="222"), "one positive integer per stage"),
    (dict(layers=(2, 2)), "same number of stages"),
    (dict(step_size=0.0), "positive finite"),
    (dict(step_size=-1.0), "positive finite"),
    (dict(step_size=float("nan")), "positive finite"),
    (dict(stochastic_depth=1.0), r"in \[0, 1\)"),
    (dict(stochastic_depth=-0.1), r"in \[0, 1\)"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(growres.GrowresError, match=match):
        timm.create_model("growres_resnet14", **kwargs)


def test_setting_a_bad_step_size_raises():
    model = timm.create_model("growres_resnet14")
    with pytest.raises(growres.GrowresError, match="positive finite"):
        model.step_size = 0


def test_unknown_model_is_a_clear_error():
    with pytest.raises(RuntimeError, match="Unknown model"):
        timm.create_model("growres_resnet15")


def test_timm_interface():
    model = timm.create_model("growres_resnet32", num_classes=10)
    groups = timm.models.group_parameters(model, model.group_matcher())
    assert len(groups) == 1 + sum(model.layers) + 1  # stem, each block (the final norm joins the last), head
    x = torch.randn(2, 3, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (2, 64, 8, 8)
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    assert model.get_classifier() is model.head.fc
    model.reset_classifier(5)
    assert model(x).shape == (2, 5) and model.num_classes == 5
    model.reset_classifier(0)
    assert model(x).shape == (2, 64)
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    assert model.pretrained_cfg["mean"] == growres.multilevel_resnet.CIFAR10_MEAN
    assert [f["reduction"] for f in model.feature_info] == [1, 1, 2, 4]


def test_grad_checkpointing_matches():
    torch.manual_seed(0)
    model = timm.create_model("growres_resnet14").eval()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    reference = model(x)
    model.set_grad_checkpointing(True)
    assert torch.equal(model(x), reference)  # exact: checkpointing runs the same ops, it only stores fewer of them


@pytest.mark.parametrize("size", [32, 96])
def test_features_only(size):
    model = timm.create_model("growres_wrn14", features_only=True)
    features = model(torch.randn(1, 3, size, size))
    assert [f.shape[1] for f in features] == [32, 32, 64, 128]
    assert [f.shape[-1] for f in features] == [size, size, size // 2, size // 4]
    assert model.feature_info.channels() == [32, 32, 64, 128]


def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    model = timm.create_model("growres_resnet14").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model)(x)
    # Not exact: inductor fuses the eval BatchNorms, ReLUs and each step's multiply-add into loops of its own (other
    # roundings than eager's kernels) and may run the convs in another memory layout (another summation order). A
    # conv sums K = 9 C terms, ≲ 2 √K u = √K eps of their magnitude each way (typical; u = eps/2), 24 eps at C = 64;
    # a block has two and ~6 pointwise roundings: ≲ 54 eps a block; with the stem, the final norm, the pooled sum
    # and the classifier (64 terms each, 8 eps): ≲ (6 * 54 + 25) eps ≈ 350 eps of the output's magnitude M
    # (activations and logits of one order). Observed: ≤ 0.5 eps M (AVX-512, AVX2 and default kernels).
    conv_sum = (9 * max(model.widths)) ** 0.5
    bound = (sum(model.layers) * (2 * conv_sum + 6) + 25) * torch.finfo(torch.float32).eps * eager.abs().max().item()
    torch.testing.assert_close(compiled, eager, rtol=0, atol=bound)


def test_import_and_print_in_a_fresh_interpreter():
    """The acceptance line: import growres, then timm builds and prints the model."""
    code = "import growres, timm; print(timm.create_model('growres_wrn122i'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "MultilevelResNet" in result.stdout and "PreActBasicBlock" in result.stdout


def test_growres_list_shows_the_twelve_models(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert sorted(line.split()[0] for line in lines) == sorted(MODELS)
    rows = {line.split()[0]: line for line in lines}
    assert "2x -> 20-20-20, h=0.25" in rows["growres_wrn122i"] and "1,849,898" in rows["growres_wrn122i"]
    assert rows["growres_wrn122"].split()[-1] == "7,669,418"


def test_model_class_is_exported():
    assert isinstance(timm.create_model("growres_resnet14"), MultilevelResNet)


# -- real-skip stochastic depth (Huang et al., 2016) --------------------------------------------------------


def huang_survival(num_blocks: int, skip_last: float) -> list[float]:
    """Huang et al.'s linear decay rule: block l of L survives with probability 1 - l / L * (1 - p_L)."""
    return [1 - block / num_blocks * skip_last for block in range(1, num_blocks + 1)]


def test_stochastic_depth_skips_whole_blocks_in_training_by_the_linear_decay_rule():
    model = timm.create_model("growres_resnet50", stochastic_depth=0.5).train()
    blocks = [b for stage in model.stages for b in stage]
    calls = [0] * len(blocks)
    for idx, block in enumerate(blocks):  # G's first conv runs once per block that is computed
        block.conv1.register_forward_hook(lambda *_, idx=idx: calls.__setitem__(idx, calls[idx] + 1))
    torch.manual_seed(0)
    x, passes = torch.randn(2, 3, 8, 8), 400
    with torch.no_grad():
        for _ in range(passes):
            model(x)
    expected = huang_survival(len(blocks), 0.5)
    assert expected[-1] == 0.5
    for count, p in zip(calls, expected):  # 5 binomial standard deviations: a wrong rule is far outside
        assert abs(count / passes - p) <= 5 * (p * (1 - p) / passes) ** 0.5 + 1e-9, (calls, expected)
    assert sum(calls) < 0.8 * passes * len(blocks)  # about a quarter of the blocks' compute is saved


def test_a_skipped_block_is_its_shortcut_and_gets_no_gradient():
    block = timm.create_model("growres_resnet50", stochastic_depth=0.5).stages[2][0].train()  # a transition
    block.survival_prob = 1e-9  # always skipped
    x = torch.randn(2, 32, 8, 8)
    out = block(x)
    assert torch.equal(out, block.shortcut(x))
    assert out.shape == (2, 64, 4, 4)
    x.requires_grad_(True)
    block(x).sum().backward()
    assert all(p.grad is None for p in block.parameters())


def test_stochastic_depth_eval_runs_every_block_scaled_by_its_survival_probability():
    torch.manual_seed(0)
    model = timm.create_model("growres_resnet50", stochastic_depth=0.5, step_size=0.25).eval()
    blocks = [b for stage in model.stages for b in stage]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = model.stem(x)
        for block, p in zip(blocks, huang_survival(len(blocks), 0.5)):  # Y + p_l * h * G(Y), by hand
            # in the block's one multiply-add: separate, the product would be rounded once more where the kernels
            # fuse it (AVX2, AVX-512) and not where they do not (default), a last bit that 24 blocks carry on
            y = torch.addcmul(block.shortcut(y), p * block.h, block.residual(y))
        by_hand = model.forward_head(model.norm(y))
        assert torch.equal(model(x), by_hand)  # exact: the same ops on the same inputs
        plain = timm.create_model("growres_resnet50", step_size=0.25).eval()
        plain.load_state_dict(model.state_dict())
        assert not torch.allclose(plain(x), by_hand, atol=1e-3)  # the scale is really applied
        assert torch.equal(model(x), model(x))  # and nothing is drawn in eval


def test_stochastic_depth_is_rederived_over_the_grown_depth_and_exported():
    model = timm.create_model("growres_resnet50i", stochastic_depth=0.5)
    first = [b.survival_prob for stage in model.stages for b in stage]
    assert first == huang_survival(6, 0.5)  # exact: the model computes the rule in the same float64 steps
    growres.interpolate(growres.interpolate(model))
    grown = [b.survival_prob for stage in model.stages for b in stage]
    assert grown == huang_survival(24, 0.5)
    assert model_args(model)["stochastic_depth"] == 0.5  # so a loaded model scales in eval too


# -- timm's feature API (forward_intermediates, prune_intermediate_layers) and TorchScript ----------------------


def seeded_model(grown: bool, name: str = "growres_resnet14") -> MultilevelResNet:
    """The same weights on every call (eval, real-skip stochastic depth so eval scales the residuals); grown: once
    interpolated, so each stage holds twice the blocks at half the step size."""
    torch.manual_seed(0)
    model = timm.create_model(name, stochastic_depth=0.3).eval()
    if grown:
        growres.interpolate(model)
    return model


def walk_through_the_stages(model: MultilevelResNet, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """forward_intermediates by hand: the stem's output, then each stage's, block by block; the final norm last."""
    y = model.stem(x)
    taps = [y]
    for stage in model.stages:
        for block in stage:
            y = block(y)
        taps.append(y)
    return model.norm(y), taps


@pytest.mark.parametrize("grown", [False, True])
def test_forward_intermediates_are_the_stem_and_each_stage(grown):
    model = seeded_model(grown)
    assert model.layers == ((4, 4, 4) if grown else (2, 2, 2))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        final, taps = model.forward_intermediates(x)
        expected_final, expected = walk_through_the_stages(model, x)
        assert len(taps) == len(model.feature_info) == 4
        assert all(torch.equal(tap, want) for tap, want in zip(taps, expected))
        assert torch.equal(final, expected_final) and torch.equal(final, model.forward_features(x))
        # the taps are what feature_info says: channels, reductions, and the modules they are the outputs of
        assert [(t.shape[1], 32 // t.shape[-1]) for t in taps] == [(f["num_chs"], f["reduction"])
                                                                   for f in model.feature_info]
        outputs = {}
        for info in model.feature_info:
            model.get_submodule(info["module"]).register_forward_hook(
                lambda m, i, o, name=info["module"]: outputs.setdefault(name, o))
        model(x)
        assert all(torch.equal(outputs[info["module"]], tap) for info, tap in zip(model.feature_info, taps))
        # norm=True puts the final norm on the last stage's tap, the only one it is sized for, and on no other
        _, normed = model.forward_intermediates(x, norm=True)
        assert all(torch.equal(a, b) for a, b in zip(normed[:-1], taps[:-1]))
        assert torch.equal(normed[-1], model.norm(taps[-1]))


def test_features_only_gives_the_intermediates():
    """timm's two feature wrappers: hooks on feature_info's modules (the default) and forward_intermediates."""
    from timm.models._features import FeatureGetterNet  # timm.models does not export it

    model = seeded_model(grown=False)
    torch.manual_seed(0)  # the same weights: timm builds the model as seeded_model does, then wraps it
    features = timm.create_model("growres_resnet14", stochastic_depth=0.3, features_only=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        taps = model.forward_intermediates(x, intermediates_only=True)
        assert all(torch.equal(f, t) for f, t in zip(features(x), taps, strict=True))
        grown = seeded_model(grown=True)  # a grown model is wrapped by forward_intermediates (FeatureGetterNet)
        getter = FeatureGetterNet(grown, out_indices=(0, 1, 2, 3)).eval()
        expected = walk_through_the_stages(grown, x)[1]
        assert all(torch.equal(f, t) for f, t in zip(getter(x), expected, strict=True))


@pytest.mark.parametrize("grown", [False, True])
def test_forward_intermediates_indices_as_timm_selects_them(grown):
    model = seeded_model(grown)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        final, taps = model.forward_intermediates(x)

        def take(**kwargs):
            return model.forward_intermediates(x, intermediates_only=True, **kwargs)

        def same(got, want):
            return len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))

        assert same(take(indices=2), taps[2:])  # an int: the last n taps
        assert same(take(indices=[0, 2]), [taps[0], taps[2]])
        assert same(take(indices=[-1]), [taps[3]]) and same(take(indices=[-4, -2]), [taps[0], taps[2]])
        for bad in (0, 5, [4], [-5]):
            with pytest.raises(AssertionError, match="out of range"):
                take(indices=bad)
        # intermediates_only=False: the final features come too, after the final norm once the last stage ran
        out, selected = model.forward_intermediates(x, indices=[1])
        assert torch.equal(out, final) and same(selected, [taps[1]])


@pytest.mark.parametrize("grown", [False, True])
def test_forward_intermediates_stop_early_skips_the_later_stages(grown):
    model = seeded_model(grown)
    x = torch.randn(2, 3, 32, 32)
    ran = []
    for idx, stage in enumerate(model.stages):
        stage.register_forward_hook(lambda *_, idx=idx: ran.append(idx))
    with torch.no_grad():
        taps = model.forward_intermediates(x, intermediates_only=True)
        ran.clear()
        out, selected = model.forward_intermediates(x, indices=[0, 2], stop_early=True)
        assert ran == [0, 1]
        assert len(selected) == 2 and torch.equal(selected[0], taps[0]) and torch.equal(selected[1], taps[2])
        assert torch.equal(out, taps[2])  # the final norm follows the last stage only
        ran.clear()
        out, _ = model.forward_intermediates(x, indices=[0], stop_early=True, norm=True)
        assert ran == [] and torch.equal(out, taps[0])


@pytest.mark.parametrize("grown", [False, True])
@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_prune_intermediate_layers_keeps_the_taps_and_drops_the_rest(grown, index):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        taps = seeded_model(grown).forward_intermediates(x, intermediates_only=True)
        model = seeded_model(grown)
        layers = model.layers
        assert model.prune_intermediate_layers([index]) == [index]
        assert len(model.stages) == index and model.layers == layers[:index]  # no stage after the tap
        assert model.num_classes == 0 and isinstance(model.get_classifier(), torch.nn.Identity)  # no head
        assert model.head.global_pool.pool_type == ""
        selected = model.forward_intermediates(x, indices=[index], intermediates_only=True)
        assert len(selected) == 1 and torch.equal(selected[0], taps[index])
        last = len(model.feature_info) - 1
        assert isinstance(model.norm, torch.nn.Identity) == (index < last)  # the final norm only follows the last
        assert model.num_features == model.head_hidden_size == model.feature_info[index]["num_chs"]
        features = model.forward_features(x)
        assert torch.equal(features, taps[index] if index < last else model.norm(taps[index]))
        assert torch.equal(model(x), features)  # no pooling, no classifier


def test_prune_intermediate_layers_keeps_what_is_asked_for():
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = seeded_model(grown=True)(x)
        model = seeded_model(grown=True)
        assert model.prune_intermediate_layers([-1], prune_head=False) == [3]  # nothing after the last tap to prune
        assert torch.equal(model(x), expected)
        model = seeded_model(grown=True)
        assert model.prune_intermediate_layers(2, prune_norm=True) == [2, 3]
        assert model.layers == (4, 4, 4) and isinstance(model.norm, torch.nn.Identity)
        assert torch.equal(model.forward_features(x), walk_through_the_stages(model, x)[1][-1])


def scripted_equals_eager(model: torch.nn.Module, x: torch.Tensor) -> bool:
    """TorchScript runs the same aten ops as eager, so on CPU (no fuser) the outputs are bit for bit the same; three
    calls, because the profiling executor optimises the graph after the first ones."""
    scripted = torch.jit.script(model)
    with torch.no_grad():
        eager = model(x)
        return all(torch.equal(scripted(x), eager) for _ in range(3))


@pytest.mark.parametrize("grown", [False, True])
def test_torchscript_matches_eager(grown):
    model = seeded_model(grown)
    model.step_size = 0.5 if not grown else 0.25  # h really enters the scripted graph: it is a buffer, not a constant
    assert scripted_equals_eager(model, torch.randn(2, 3, 32, 32))
    assert model.step_size == (0.5 if not grown else 0.25)  # the Python-only properties still work on the model


def test_torchscript_after_pruning_and_of_the_feature_getter():
    from timm.models._features import FeatureGetterNet  # timm.models does not export it

    x = torch.randn(2, 3, 32, 32)
    model = seeded_model(grown=True)
    model.prune_intermediate_layers([2])
    assert scripted_equals_eager(model, x)
    getter = FeatureGetterNet(seeded_model(grown=True), out_indices=(0, 1, 2, 3)).eval()
    scripted = torch.jit.script(getter)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(scripted(x), getter(x), strict=True))


def test_factory_device_and_dtype_reach_every_tensor_and_the_reset_classifier():
    """timm 1.0's factory kwargs: create_model(device=..., dtype=...) builds in place (no copy), h included."""
    model = timm.create_model("growres_resnet14", device="meta", dtype=torch.float64)
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    misplaced = [n for n, t in tensors.items() if t.device.type != "meta" or t.is_floating_point()
                 and t.dtype != torch.float64]
    assert not misplaced and "stages.0.0.h" in tensors
    model.reset_classifier(0)  # then the head has no parameter to take the device and dtype from: the model has
    model.reset_classifier(3)
    assert model.head.fc.weight.device.type == "meta" and model.head.fc.weight.dtype == torch.float64
