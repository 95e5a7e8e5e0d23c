"""growres inside an unmodified Hugging Face Trainer: GrowthCallback, grow_to_checkpoint, GrowthTrainer under DDP."""
import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
from launch import rank_tails, torchrun  # noqa: E402
from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402
from transformers.training_args import FSDPOption  # noqa: E402

import growres  # noqa: E402
from growres.integrations.transformers import GrowthCallback, grow_to_checkpoint  # noqa: E402

STEPS = 16  # the paper's proportions put the growths at steps 6 and 11
GROWTHS = {6: 4, 11: 8}  # step -> layers after growing
SCRIPT = Path(__file__).parent / "scripts" / "trainer_ddp_growth.py"


def tiny_llama(layers: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16)
    return transformers.LlamaForCausalLM(config)


def byte_data(count: int = 64, length: int = 16):
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 256, (count, length), generator=generator)
    return [{"input_ids": row, "labels": row} for row in tokens]


def training_args(output_dir, **overrides):
    settings = dict(max_steps=STEPS, per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1,
                    report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0)
    return TrainingArguments(str(output_dir), **{**settings, **overrides})


class Spy(TrainerCallback):
    """Records, after GrowthCallback, what the optimizer uses and what each growth left."""

    def __init__(self):
        self.used_lr = {}  # step (1-based) -> LR of param group 0 when the optimizer stepped
        self.layers = {}  # step -> layers after it
        self.after_growth = {}  # step -> (parameters, group members, optimizer state) by name, right after growing

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.used_lr[state.global_step + 1] = [group["lr"] for group in optimizer.param_groups]

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.layers[state.global_step] = model.config.num_hidden_layers
        if state.global_step in GROWTHS:
            params = {name: p.detach().clone() for name, p in model.named_parameters()}
            names = {p: name for name, p in model.named_parameters()}
            groups = [[names[p] for p in group["params"]] for group in optimizer.param_groups]
            states = {names[p]: {k: v.clone() for k, v in s.items()} for p, s in optimizer.state.items()}
            self.after_growth[state.global_step] = (params, groups, states)


def train(tmp_path, model=None, callback=None, data=None, **overrides):
    model = model if model is not None else tiny_llama()
    spy = Spy()
    trainer = Trainer(model=model, args=training_args(tmp_path / "out", **overrides),
                      train_dataset=data or byte_data(),
                      callbacks=[callback or GrowthCallback(), spy])
    return trainer, spy


def test_grows_at_the_plans_steps_and_the_new_layers_train(tmp_path):
    trainer, spy = train(tmp_path)
    trainer.train()
    callback = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, GrowthCallback))
    assert [(r["step"], r["layers"]) for r in callback.records] == [(6, [4]), (11, [8])]
    assert trainer.model.config.num_hidden_layers == 8
    assert [layer.self_attn.layer_idx for layer in trainer.model.model.layers] == list(range(8))
    grown, _, _ = spy.after_growth[11]
    final = dict(trainer.model.named_parameters())
    new_layers = [name for name in grown if ".layers." in name and int(name.split(".")[2]) % 2 == 1]
    assert new_layers and all(not torch.equal(final[name], grown[name]) for name in new_layers)


def test_new_parameters_join_their_sources_group_with_a_copy_of_its_adamw_state(tmp_path):
    trainer, spy = train(tmp_path)
    trainer.train()
    for step, layers in GROWTHS.items():
        params, groups, states = spy.after_growth[step]
        # the groups the Trainer itself makes for a model of this depth: decay and no decay, in model order
        decay = set(trainer.get_decay_parameter_names(tiny_llama(layers)))
        assert groups == [[n for n in params if n in decay], [n for n in params if n not in decay]]
        for name in params:
            if ".layers." not in name or int(name.split(".")[2]) % 2 == 0:
                continue
            source = name.replace(f".layers.{name.split('.')[2]}.", f".layers.{int(name.split('.')[2]) - 1}.")
            assert torch.equal(params[name], params[source])  # copy growth: each new layer copies the one before
            for key in ("step", "exp_avg", "exp_avg_sq"):
                assert torch.equal(states[name][key], states[source][key]), (name, key)


def test_the_lr_follows_eq9_with_restarts_and_the_logged_lr_is_the_used_one(tmp_path):
    trainer, spy = train(tmp_path)
    trainer.train()
    expected = {step: 1e-3 * growres.cyclic_cosine_lr(step - 1, (6, 11), STEPS, 1.0, 0.002)
                for step in range(1, STEPS + 1)}
    assert {step: lrs[0] for step, lrs in spy.used_lr.items()} == expected
    assert all(len(set(lrs)) == 1 for lrs in spy.used_lr.values())  # decay and no-decay groups alike
    assert spy.used_lr[7][0] == spy.used_lr[12][0] == 1e-3  # the restarts
    logged = {log["step"]: log["learning_rate"] for log in trainer.state.log_history if "learning_rate" in log}
    assert logged == expected


def test_a_plan_in_epochs_and_a_plan_without_restarts(tmp_path):
    plan = growres.GrowthPlan(cycles=(1, 2), total=4, unit="epoch", restart_lr=False)
    trainer, spy = train(tmp_path, callback=GrowthCallback(plan), data=byte_data(16),  # 4 steps per epoch
                         max_steps=-1, num_train_epochs=4)
    trainer.train()
    assert spy.layers == {s: 2 if s < 4 else 4 if s < 8 else 8 for s in range(1, STEPS + 1)}
    assert spy.used_lr == {s: [1e-3 * growres.cyclic_cosine_lr(s - 1, (), STEPS, 1.0, 0.002)] * 2
                           for s in range(1, STEPS + 1)}


def test_a_plan_in_epochs_counts_an_epochs_last_partial_accumulation_as_a_step(tmp_path):
    plan = growres.GrowthPlan(cycles=(1, 2), total=3, unit="epoch")
    # 5 batches per epoch, stepping every 2: 3 optimizer steps per epoch, the third after a single batch
    trainer, spy = train(tmp_path, callback=GrowthCallback(plan), data=byte_data(20), max_steps=-1, num_train_epochs=3,
                         gradient_accumulation_steps=2)
    trainer.train()
    assert spy.layers == {s: 2 if s < 3 else 4 if s < 6 else 8 for s in range(1, 10)}


def run_with_checkpoints(tmp_path):
    trainer, _ = train(tmp_path, save_strategy="steps", save_steps=8)
    trainer.train()
    return trainer, tmp_path / "out" / "checkpoint-8"


def test_resume_from_a_mid_growth_checkpoint_ends_with_the_uninterrupted_weights(tmp_path):
    uninterrupted, checkpoint = run_with_checkpoints(tmp_path)
    assert json.loads((checkpoint / "config.json").read_text())["num_hidden_layers"] == 4

    model = grow_to_checkpoint(tiny_llama(), checkpoint)
    assert model.config.num_hidden_layers == 4
    resumed, _ = train(tmp_path / "resumed", model=model, save_strategy="steps", save_steps=8)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    expected = uninterrupted.model.state_dict()
    assert resumed.model.state_dict().keys() == expected.keys()
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, expected[name]), name


def test_resuming_a_model_not_grown_first_fails_before_loading_anything(tmp_path):
    _, checkpoint = run_with_checkpoints(tmp_path)
    model = tiny_llama()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    trainer, _ = train(tmp_path / "resumed", model=model)
    with pytest.raises(growres.GrowresError, match="grow_to_checkpoint"):
        trainer.train(resume_from_checkpoint=str(checkpoint))
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())


def test_grow_to_checkpoint_takes_an_output_dir_and_refuses_what_it_cannot_grow_to(tmp_path):
    _, checkpoint = run_with_checkpoints(tmp_path)  # output_dir holds checkpoint-8 and checkpoint-16
    assert grow_to_checkpoint(tiny_llama(), tmp_path / "out").config.num_hidden_layers == 8
    with pytest.raises(growres.GrowresError, match="No checkpoint directory"):
        grow_to_checkpoint(tiny_llama(), tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(growres.GrowresError, match="holds no model weights"):
        grow_to_checkpoint(tiny_llama(), tmp_path / "empty")
    for start in (8, 3):  # deeper than the checkpoint; a depth that doubling cannot take to 4
        model = tiny_llama(start)
        with pytest.raises(growres.GrowresError, match="doubles every stage"):
            grow_to_checkpoint(model, checkpoint)
        assert model.config.num_hidden_layers == start


@pytest.mark.parametrize("overrides, callback, message", [
    (dict(warmup_steps=2), None, "no warmup"),
    ({}, growres.GrowthPlan(cycles=(4, 8), total=12, unit="step"), "trains for 16"),
])
def test_refusals_when_training_begins(tmp_path, overrides, callback, message):
    trainer, _ = train(tmp_path, callback=GrowthCallback(callback) if callback else None, **overrides)
    with pytest.raises(growres.GrowresError, match=message):
        trainer.train()
    assert trainer.model.config.num_hidden_layers == 2


@pytest.mark.parametrize("setting, message", [
    (dict(fsdp=[FSDPOption.FULL_SHARD]), "shards with FSDP"),
    (dict(deepspeed={"train_batch_size": 4}), "DeepSpeed"),
])
def test_fsdp_and_deepspeed_under_the_trainer_are_refused(tmp_path, setting, message):
    args = training_args(tmp_path)
    for key, value in setting.items():  # a single CPU process cannot build either, so only the flag is set
        object.__setattr__(args, key, value)
    callback = GrowthCallback()
    with pytest.raises(growres.GrowresError, match=message):
        callback.on_train_begin(args, transformers.TrainerState(max_steps=STEPS), None, model=tiny_llama())


def test_a_scheduler_other_than_a_lambdalr_is_refused(tmp_path):
    model = tiny_llama()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step_lr = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4)
    trainer = Trainer(model=model, args=training_args(tmp_path), train_dataset=byte_data(),
                      callbacks=[GrowthCallback()], optimizers=(optimizer, step_lr))
    with pytest.raises(growres.GrowresError, match="LambdaLR"):
        trainer.train()


def test_refusals_when_the_callback_or_trainer_is_built(tmp_path):
    with pytest.raises(growres.GrowresError, match="Unknown interpolation strategy"):
        GrowthCallback(strategy="stacked")
    with pytest.raises(growres.GrowresError, match="between 0 and 1"):
        GrowthCallback(min_lr_ratio=2.0)
    with pytest.raises(growres.GrowresError, match="No growth adapter matches"):
        Trainer(model=torch.nn.Linear(2, 2), args=training_args(tmp_path), callbacks=[GrowthCallback()])


@pytest.mark.slow  # two processes
def test_growth_trainer_keeps_ddp_replicas_identical_and_resumes_exactly(tmp_path):
    result = torchrun([str(SCRIPT), str(tmp_path)])
    assert result.returncode == 0, rank_tails(result)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["world_size"] == 2
    assert report["growths"] == [{"step": 6, "layers": [4]}, {"step": 11, "layers": [8]}]
    assert report["mismatch_after_growth"] == [None, None]  # every parameter equal, right after each growth
    assert report["grad_mismatch_after_growth"] == [None, None]  # DDP reduced the new layers' gradients too
    assert report["mismatch_after_training"] is None and report["trained_on_different_data"]
    assert report["resumed_equals_uninterrupted"]
    assert report["process_group_destroyed"]  # before exit, where gloo's teardown can abort a rank


@pytest.mark.slow  # two processes
def test_a_plain_trainer_under_ddp_is_refused(tmp_path):
    result = torchrun([str(SCRIPT), str(tmp_path), "--plain-trainer"])
    assert result.returncode != 0
    assert "GrowthTrainerMixin" in result.stderr
