"""Growth inside the Hugging Face Trainer under real 2-process DDP (torchrun, gloo on CPU).

    torchrun --standalone --nproc-per-node 2 tests/scripts/trainer_ddp_growth.py OUT_DIR [--plain-trainer]

Trains a 2-layer Llama for 16 steps with GrowthTrainer + GrowthCallback (growth at steps 6 and 11), each rank on its
own shard of the data, saving a checkpoint at step 8; checks after each growth that every parameter is equal across
ranks and that the next step's gradients are (DDP reduced the new layers too), then that the replicas are equal after
training, and that a fresh model resumed from the step-8 checkpoint by GrowthTrainer ends with the same weights.
Destroys the process group before exit. Writes OUT_DIR/report.json. ``--plain-trainer`` uses transformers.Trainer
instead, which must be refused.
"""
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import transformers
from ddp_growth import first_differing  # this directory: the accelerate DDP script's check
from transformers import Trainer, TrainerCallback, TrainingArguments

from growres.integrations.transformers import GrowthCallback, GrowthTrainer

GROWTH_STEPS = (6, 11)


def tiny_llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16)
    return transformers.LlamaForCausalLM(config)


def byte_data():
    tokens = torch.randint(0, 256, (128, 16), generator=torch.Generator().manual_seed(1))
    return [{"input_ids": row, "labels": row} for row in tokens]


class Probe(TrainerCallback):
    """After GrowthCallback: replicas right after each growth, and the gradients of the step after it."""

    def __init__(self):
        self.mismatch_after_growth, self.grad_mismatch_after_growth = [], []  # None: equal on every rank

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in GROWTH_STEPS:
            self.mismatch_after_growth.append(first_differing(model.named_parameters()))

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step in GROWTH_STEPS:  # the first step after a growth, gradients all-reduced
            self.grad_mismatch_after_growth.append(first_differing((n, p.grad) for n, p in model.named_parameters()))


class RecordingTrainer(GrowthTrainer):
    """Records the first token of each rank's batches, to show the ranks trained on different data."""

    def compute_loss(self, model, inputs, *args, **kwargs):
        self.first_tokens = [*getattr(self, "first_tokens", []), inputs["input_ids"][0, 0].item()]
        return super().compute_loss(model, inputs, *args, **kwargs)


def training_args(output_dir: Path) -> TrainingArguments:
    return TrainingArguments(str(output_dir), max_steps=16, per_device_train_batch_size=4, learning_rate=1e-3,
                             report_to=[], save_strategy="steps", save_steps=8, use_cpu=True, disable_tqdm=True,
                             seed=0, logging_steps=100)


def main(out_dir: Path, plain_trainer: bool) -> None:
    if plain_trainer:  # must be refused when training begins
        Trainer(model=tiny_llama(), args=training_args(out_dir / "plain"), train_dataset=byte_data(),
                callbacks=[GrowthCallback()]).train()
        return
    probe, growth = Probe(), GrowthCallback()
    trainer = RecordingTrainer(model=tiny_llama(), args=training_args(out_dir / "run"), train_dataset=byte_data(),
                               callbacks=[growth, probe])
    trainer.train()
    final = {name: value.clone() for name, value in trainer.model.state_dict().items()}
    tokens = torch.tensor(trainer.first_tokens)
    gathered = [torch.empty_like(tokens) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tokens)

    resumed = GrowthTrainer(model=tiny_llama(), args=training_args(out_dir / "run"), train_dataset=byte_data(),
                            callbacks=[GrowthCallback()])
    resumed.train(resume_from_checkpoint=str(out_dir / "run" / "checkpoint-8"))  # grows the fresh model first
    resumed_state = resumed.model.state_dict()
    report = {
        "world_size": dist.get_world_size(),
        "growths": [{"step": r["step"], "layers": r["layers"]} for r in growth.records],
        "mismatch_after_growth": probe.mismatch_after_growth,
        "grad_mismatch_after_growth": probe.grad_mismatch_after_growth,
        "mismatch_after_training": first_differing(trainer.model.named_parameters()),
        "trained_on_different_data": not torch.equal(gathered[0], gathered[1]),
        "resumed_equals_uninterrupted": resumed_state.keys() == final.keys()
        and all(torch.equal(resumed_state[name], value) for name, value in final.items()),
    }
    rank = dist.get_rank()
    # destroy the process group while the interpreter is whole: left to its exit, gloo's teardown now and then aborts
    # the process ("terminate called without an active exception", pytorch/pytorch#190489). Trainer.end() of newer
    # transformers does this; the accelerator's works from transformers 5.10
    resumed.accelerator.end_training()
    report["process_group_destroyed"] = not dist.is_initialized()
    if rank == 0:
        (out_dir / "report.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]), "--plain-trainer" in sys.argv[2:])
