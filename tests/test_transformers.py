"""Growing stock Hugging Face transformers models (growres[transformers]): one tiny config per family."""
import copy
import math
import re

import pytest
import torch

import growres
from growres import GrowresError, GrowthPlan, GrowthScheduler, interpolate

transformers = pytest.importorskip("transformers")

TINY = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, vocab_size=64)
DECODER_TINY = dict(TINY, num_key_value_heads=1, bos_token_id=0, eos_token_id=0, pad_token_id=0)
EPS = torch.finfo(torch.float32).eps  # 2^-23: the spacing of float32 numbers at 1 (twice the unit roundoff u)


def build(family: str, layers: int = 2) -> "transformers.PreTrainedModel":
    """A tiny model of ``family`` with ``layers`` layers, in eval mode. Qwen2/3 alternate full and sliding-window
    attention (window 4, shorter than the generated sequences) so that per-layer attention types matter."""
    t = transformers
    sliding = dict(use_sliding_window=True, sliding_window=4, max_window_layers=1)
    configs = {
        "gpt2": lambda: t.GPT2LMHeadModel(t.GPT2Config(
            n_layer=layers, n_embd=32, n_head=2, vocab_size=64, n_positions=64, bos_token_id=0, eos_token_id=0)),
        "llama": lambda: t.LlamaForCausalLM(t.LlamaConfig(num_hidden_layers=layers, **DECODER_TINY)),
        "mistral": lambda: t.MistralForCausalLM(t.MistralConfig(num_hidden_layers=layers, sliding_window=4,
                                                                **DECODER_TINY)),
        "qwen2": lambda: t.Qwen2ForCausalLM(t.Qwen2Config(num_hidden_layers=layers, **sliding, **DECODER_TINY)),
        "qwen3": lambda: t.Qwen3ForCausalLM(t.Qwen3Config(num_hidden_layers=layers, head_dim=16, **sliding,
                                                          **DECODER_TINY)),
        "bert": lambda: t.BertModel(t.BertConfig(num_hidden_layers=layers, **TINY)),
        "roberta": lambda: t.RobertaModel(t.RobertaConfig(num_hidden_layers=layers, **TINY)),
        "vit": lambda: t.ViTForImageClassification(t.ViTConfig(
            num_hidden_layers=layers, hidden_size=32, intermediate_size=64, num_attention_heads=2, image_size=16,
            patch_size=8, num_labels=3)),
    }
    torch.manual_seed(0)
    return configs[family]().eval()


FAMILIES = ["gpt2", "llama", "mistral", "qwen2", "qwen3", "bert", "roberta", "vit"]
DECODERS = ["gpt2", "llama", "mistral", "qwen2", "qwen3"]
PRE_NORM = ["gpt2", "llama", "mistral", "qwen2", "qwen3", "vit"]

# the parameters that end a residual sub-branch (attention output projection, MLP down projection), per layer
BRANCH_ENDS = {
    "gpt2": {"attn.c_proj.weight", "attn.c_proj.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"},
    "llama": {"self_attn.o_proj.weight", "mlp.down_proj.weight"},
    "bert": {"attention.output.dense.weight", "attention.output.dense.bias", "output.dense.weight",
             "output.dense.bias"},
    "vit": {"attention.o_proj.weight", "attention.o_proj.bias", "mlp.fc2.weight", "mlp.fc2.bias"},
}
BRANCH_ENDS.update(mistral=BRANCH_ENDS["llama"], qwen2=BRANCH_ENDS["llama"], qwen3=BRANCH_ENDS["llama"],
                   roberta=BRANCH_ENDS["bert"])
LAYERS = {"gpt2": "transformer.h", "bert": "encoder.layer", "roberta": "encoder.layer", "vit": "vit.layers"}


def layers_of(family, model):
    return model.get_submodule(LAYERS.get(family, "model.layers"))


def perturb(model, keep_norms_uniform=False):
    """Move every parameter away from its initialisation (zero biases, unit norms), so that copies and
    identities are really tested. ``keep_norms_uniform``: LayerNorms get a uniform weight and bias instead."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if keep_norms_uniform and "LayerNorm" in name:
                param.fill_(1.5 if name.endswith("weight") else 0.2)
            else:
                param.add_(0.2 * torch.randn(param.shape, generator=gen))
    return model


def inputs(family, batch=2, length=6):
    gen = torch.Generator().manual_seed(2)
    if family == "vit":
        return {"pixel_values": torch.rand(batch, 3, 16, 16, generator=gen)}
    return {"input_ids": torch.randint(3, 64, (batch, length), generator=gen)}


def outputs(model, family):
    with torch.no_grad():
        return model(**inputs(family))[0]  # logits, or the last hidden state of a bare encoder


@pytest.mark.parametrize("family", PRE_NORM)
def test_identity_growth_keeps_eval_outputs(family):
    model = perturb(build(family))
    before = outputs(model, family)
    interpolate(model, strategy="identity")
    interpolate(model, strategy="identity")
    assert len(layers_of(family, model)) == 8
    # exact: each new layer's branches end in a zero linear (0 * anything + 0 is 0), so it adds exactly 0 to the
    # residual stream, and each old layer's last linears were scaled by 2 then 0.5 (powers of two: the same weights)
    torch.testing.assert_close(outputs(model, family), before, atol=0, rtol=0)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_post_norm_identity_growth_is_exact_only_while_layer_norms_are_uniform(family):
    """BERT computes LayerNorm(x + branch): a new layer with zero branches computes LN_out(LN_attn(x)), which is x
    when x comes out of a LayerNorm of uniform weight and bias (as at initialisation), and not otherwise."""
    model = perturb(build(family), keep_norms_uniform=True)
    before = outputs(model, family)
    interpolate(model, strategy="identity")
    # Not exact in float32: LN(x) of an already-normalised x of hidden size H sums H terms for the mean and H for
    # the variance (≲ log2(H) u each, u = eps/2, pairwise and vectorised), then rsqrt, the subtraction, scale and
    # shift (≲ 4 u): ≲ (1.5 log2(H) + 5) u ≈ 6 eps of its output's magnitude M for H = 32. The grown model has four
    # new LayerNorms (two per new layer); the first two's error also goes through old layer 1, which amplifies an
    # input change ≲ 2.5x (max norm, measured in float64): ≲ (2 + 2 * 2.5) * 6 eps M ≈ 45 eps M, 2.6e-5 at M ≈ 4.9.
    # Observed: ≤ 3 eps M (1.4e-6, 1.7e-6) under the AVX-512, AVX2 and default kernels.
    per_layer_norm = (1.5 * math.log2(model.config.hidden_size) + 5) * EPS / 2
    torch.testing.assert_close(outputs(model, family), before, rtol=0,
                               atol=(2 + 2 * 2.5) * per_layer_norm * before.abs().max().item())

    model = perturb(build(family))
    before = outputs(model, family)
    interpolate(model, strategy="identity")
    seen = {}
    new_layer = layers_of(family, model)[1]
    new_layer.register_forward_hook(lambda module, args, output: seen.update(x=args[0], y=output))
    after = outputs(model, family)
    x = seen["x"]
    expected = new_layer.output.LayerNorm(new_layer.attention.output.LayerNorm(x))
    # exact: the layer computes LN_out(0 + LN_attn(0 + x)), the same LayerNorms on the same input
    torch.testing.assert_close(seen["y"], expected, atol=0, rtol=0)
    assert (after - before).abs().max() > 1e-2  # trained LayerNorms: the function changes


@pytest.mark.parametrize("family", FAMILIES)
def test_copy_growth_follows_each_layer_by_its_copy_with_halved_branches(family):
    model = perturb(build(family))
    old = [copy.deepcopy(layer.state_dict()) for layer in layers_of(family, model)]
    interpolate(model)
    grown = layers_of(family, model)
    assert len(grown) == 2 * len(old)
    for idx, old_state in enumerate(old):
        for layer in (grown[2 * idx], grown[2 * idx + 1]):
            state = layer.state_dict()
            assert state.keys() == old_state.keys()
            for key, value in state.items():
                expected = old_state[key] * (0.5 if key in BRANCH_ENDS[family] else 1.0)
                assert torch.equal(value, expected), (idx, key)
    assert grown[1].state_dict()[next(iter(BRANCH_ENDS[family]))].data_ptr() != \
        grown[0].state_dict()[next(iter(BRANCH_ENDS[family]))].data_ptr()  # copies, not shared


@pytest.mark.parametrize("family", FAMILIES)
def test_stack_growth_repeats_the_layers_after_themselves_unscaled(family):
    """G_stack: layers 0, 1 become 0, 1, 0', 1', every tensor its source's (no branch is scaled)."""
    model = perturb(build(family))
    old = [copy.deepcopy(layer.state_dict()) for layer in layers_of(family, model)]
    interpolate(model, strategy="stack")
    grown = layers_of(family, model)
    assert len(grown) == 2 * len(old)
    for idx, layer in enumerate(grown):
        state, source = layer.state_dict(), old[idx % len(old)]
        assert state.keys() == source.keys()
        for key, value in state.items():
            assert torch.equal(value, source[key]), (idx, key)  # exact: nothing is rescaled
    params = [p.data_ptr() for p in grown.parameters()]
    assert len(set(params)) == len(params)  # copies, not shared


def attention_layer_indices(model):
    return [module.layer_idx for module in model.modules() if hasattr(module, "layer_idx")]


# layers 0, 1 were full and sliding attention; each copy keeps its source's type, where the strategy puts it
GROWN_LAYER_TYPES = {"copy": ["full_attention", "full_attention", "sliding_attention", "sliding_attention"],
                     "stack": ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]}


@pytest.mark.parametrize("strategy", GROWN_LAYER_TYPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_grown_model_is_an_ordinary_deeper_model(family, strategy, tmp_path):
    """Config, cache indices and per-layer types describe the grown model: it strict-loads into a model built
    from the deeper config, and save_pretrained/from_pretrained round-trips it."""
    model = perturb(build(family))
    interpolate(model, strategy)
    config = model.config
    assert config.num_hidden_layers == 4
    if family == "gpt2":
        assert config.n_layer == 4
    if family in ("gpt2", "llama", "mistral", "qwen2", "qwen3", "bert", "roberta"):  # those with a KV cache
        assert attention_layer_indices(model) == [0, 1, 2, 3]
    if family in ("qwen2", "qwen3"):
        assert config.layer_types == GROWN_LAYER_TYPES[strategy]
        assert [layer.self_attn.sliding_window for layer in model.model.layers] == [
            4 if kind == "sliding_attention" else None for kind in GROWN_LAYER_TYPES[strategy]]

    # a model built directly at the deeper depth has exactly the grown model's parameters
    direct = build(family, layers=4)
    direct.load_state_dict(model.state_dict(), strict=True)
    assert {k: v for k, v in direct.config.to_dict().items() if k != "layer_types"} == \
        {k: v for k, v in config.to_dict().items() if k != "layer_types"}
    # the grown config rebuilds the grown model
    rebuilt = type(model)(copy.deepcopy(config)).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    # exact: the same weights in the same layers run the same ops
    torch.testing.assert_close(outputs(rebuilt, family), outputs(model, family), atol=0, rtol=0)

    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    assert {**reloaded.config.to_dict(), "_name_or_path": ""} == {**config.to_dict(), "_name_or_path": ""}
    torch.testing.assert_close(outputs(reloaded, family), outputs(model, family), atol=0, rtol=0)


# two growths, and how many of the 8 layers then compute (an identity-grown layer adds an exact 0)
GENERATE_GROWTHS = [pytest.param(("copy", "identity"), 4, id="copy-identity"),
                    pytest.param(("stack", "stack"), 8, id="stack-stack")]


@pytest.mark.parametrize("strategies, computing", GENERATE_GROWTHS)
@pytest.mark.parametrize("family", DECODERS)
def test_generate_with_the_kv_cache_matches_generate_without_it_after_growth(family, strategies, computing):
    model = perturb(build(family))
    for strategy in strategies:
        interpolate(model, strategy)
    prompt = inputs(family, batch=1)["input_ids"]
    kwargs = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False, output_scores=True,
                  return_dict_in_generate=True)
    cached = model.generate(prompt, use_cache=True, **kwargs)
    uncached = model.generate(prompt, use_cache=False, **kwargs)
    assert torch.equal(cached.sequences, uncached.sequences)
    assert cached.sequences.shape[1] == prompt.shape[1] + 12  # past the sliding window of 4
    # Not exact: with the cache a new token attends by a one-row matmul against the cached keys and values, without
    # it by a row of the full masked attention: other kernels, other orders of summation. A sum of n terms then
    # differs by ≲ 2 √n u of its terms' magnitude (typical; u = eps/2), n ≤ 64 here (head_dim 16, ≤ 18 positions,
    # hidden 32, MLP 64): ≲ 8 eps a sum, six sums a layer (q·k, softmax, its weighted sum, o_proj, MLP in and out),
    # in the layers that compute (4 after copy then identity; 8 after stack twice), and the head's:
    # ≲ (6 * layers + 1) * 8 eps of the scores' magnitude M (200 eps, 8.7e-5 at M ≈ 3.7, for 4 layers).
    # Observed: ≤ 16 eps M (qwen3, default kernels).
    # -inf (eos, held back by min_new_tokens) must sit at the same places: assert_close compares infinities exactly.
    scores, expected = torch.stack(cached.scores), torch.stack(uncached.scores)
    magnitude = expected[expected.isfinite()].abs().max().item()
    torch.testing.assert_close(scores, expected, rtol=0, atol=(6 * computing + 1) * 8 * EPS * magnitude)


def renamed(name, layers_path, index):
    """``name`` with its layer index ``i`` under ``layers_path`` replaced by ``index(i)``."""
    return re.sub(rf"^{re.escape(layers_path)}\.(\d+)\.", lambda m: f"{layers_path}.{index(int(m.group(1)))}.", name)


# per strategy, where old layer i of 2 and the new layer made for it sit after growth
GROWN_INDEX = {"copy": (lambda i: 2 * i, lambda i: 2 * i + 1), "stack": (lambda i: i, lambda i: 2 + i)}


@pytest.mark.parametrize("strategy", GROWN_INDEX)
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_adamw_state_is_transplanted_to_new_parameters(family, strategy):
    model = build(family).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    scheduler = GrowthScheduler(model, optimizer, GrowthPlan(cycles=(2,), total=4, unit="step"), lr_max=1e-3,
                                strategy=strategy)
    batch = inputs(family, batch=4, length=8)["input_ids"]
    for step in range(2):
        loss = scheduler.model(input_ids=batch, labels=batch).loss
        scheduler.optimizer.zero_grad()
        loss.backward()
        scheduler.optimizer.step()
        if step == 1:  # the step that grows: snapshot the state just before
            snapshot = {name: copy.deepcopy(optimizer.state[param]) for name, param in model.named_parameters()}
        record = scheduler.step()
    assert record is not None and len(layers_of(family, scheduler.model)) == 4

    layers_path = LAYERS.get(family, "model.layers")
    state = scheduler.optimizer.state
    named = dict(scheduler.model.named_parameters())
    assert set(state) == set(named.values())
    kept_at, new_at = GROWN_INDEX[strategy]
    kept = {renamed(name, layers_path, kept_at): name for name in snapshot}
    new = {renamed(name, layers_path, new_at): name for name in snapshot if name.startswith(layers_path)}
    assert set(kept) | set(new) == set(named)
    for grown_name, source_name in [*kept.items(), *new.items()]:
        expected = snapshot[source_name]
        assert set(state[named[grown_name]]) == {"exp_avg", "exp_avg_sq", "step"}
        assert float(expected["step"]) == 2.0
        for key, value in expected.items():
            assert torch.equal(state[named[grown_name]][key], value), (grown_name, key)

    # and training goes on with the grown model
    loss = scheduler.model(input_ids=batch, labels=batch).loss
    scheduler.optimizer.zero_grad()
    loss.backward()
    scheduler.optimizer.step()
    assert all(float(state[p]["step"]) == 3.0 for p in named.values())


@pytest.mark.parametrize("config, match", [
    (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
    (dict(add_cross_attention=True), "cross-attention"),
])
def test_layouts_growth_would_break_are_refused_untouched(config, match):
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64,
                                                                 **config))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(GrowresError, match=match):
        interpolate(model)
    with pytest.raises(GrowresError, match=match):
        GrowthScheduler(model, torch.optim.AdamW(model.parameters()))
    assert model.config.n_layer == 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_every_family_is_registered_under_its_name():
    names = {family: growres.get_adapter(build(family)).name for family in FAMILIES}
    assert names == {
        "gpt2": "transformers-gpt2", "llama": "transformers-llama", "mistral": "transformers-llama",
        "qwen2": "transformers-llama", "qwen3": "transformers-llama", "bert": "transformers-bert",
        "roberta": "transformers-bert", "vit": "transformers-vit",
    }


def test_growres_list_families_names_each_family_with_real_transformers_classes(capsys):
    from growres.cli import main
    from growres.transformers_adapters import FAMILIES

    assert main(["list", "--families"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    for family in FAMILIES:
        assert family.description in rows[family.name]
        assert family.examples and all(name in rows[family.name] for name in family.examples)
        # each example is a transformers class whose config belongs to the family
        for name in family.examples:
            assert getattr(transformers, name).config_class.model_type in family.model_types, name
