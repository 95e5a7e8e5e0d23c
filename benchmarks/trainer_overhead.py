"""Trainer overhead: at the final depth, a trainer that grew its model with GrowthCallback steps as fast as the same
trainer on the same model built at that depth.

Two pairs, each measured in fresh processes (so neither inherits the other's allocator state), interleaved and
repeated, reported as min/median/max of optimizer steps per second over the steps after the last growth. On a CPU,
GrowthCallback sets glibc's malloc to keep freed memory (``growres.keep_freed_cpu_memory``), which speeds any model,
so the built model is measured with that setting too (the comparison), and also without it (what a plain trainer
runs at):

1. The Hugging Face ``Trainer``: a byte-level Llama (hidden 128, 128-byte sequences, batch 8) grown 2 -> 4 -> 8 layers
   by ``GrowthCallback`` at steps 1 and 2, against a plain ``Trainer`` of the 8-layer model.
2. ``lightning.Trainer``: growres_resnet50i grown 2-2-2 -> 4-4-4 -> 8-8-8 by the Lightning ``GrowthCallback`` at
   steps 1 and 2, against growres_resnet50 built at 8-8-8 (28x28 images, batch 32).

The data are random (speed does not depend on them). The issue's target: a ratio of medians >= 0.97.

    python benchmarks/trainer_overhead.py               # 5 repeats, ~10 min on a 2-core CPU
    python benchmarks/trainer_overhead.py --repeats 1   # smoke test

Results go to benchmarks/results/trainer_overhead.json and .md.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import machine
import torch
from speed import spread

import growres

RESULTS = Path(__file__).parent / "results"
GROWTH_STEPS = (1, 2)  # the model reaches its final depth after step 2
WARMUP = 10  # steps after the last growth before timing (allocator and kernel warm-up)


# -- workers: one measurement per process --------------------------------------------------------------------


def step_times_callback(base):
    """A callback class of the trainer's framework recording the wall time at the end of every optimizer step."""
    class StepTimes(base):
        def __init__(self):
            self.times: list[float] = []

        def on_step_end(self, *args, **kwargs):  # transformers
            self.times.append(time.perf_counter())

        def on_train_batch_end(self, *args, **kwargs):  # lightning (one optimizer step per batch here)
            self.times.append(time.perf_counter())
    return StepTimes()


def steps_per_second(times: list[float]) -> float:
    timed = times[GROWTH_STEPS[-1] + WARMUP - 1:]  # from the end of the first timed step's predecessor
    return (len(timed) - 1) / (timed[-1] - timed[0])


def transformers_worker(grown: bool, steps: int) -> float:
    import transformers

    from growres.integrations.transformers import GrowthCallback

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=512, num_attention_heads=4,
                                      num_key_value_heads=4, num_hidden_layers=2 if grown else 8,
                                      max_position_embeddings=128)
    model = transformers.LlamaForCausalLM(config)
    tokens = torch.randint(0, 256, (steps * 8, 128), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": row, "labels": row} for row in tokens]
    args = transformers.TrainingArguments("/tmp/growres-trainer-overhead", max_steps=steps, report_to=[],
                                          per_device_train_batch_size=8, save_strategy="no", logging_strategy="no",
                                          use_cpu=True, disable_tqdm=True)
    timer = step_times_callback(transformers.TrainerCallback)
    callbacks = [timer]
    if grown:
        plan = growres.GrowthPlan(cycles=GROWTH_STEPS, total=steps, unit="step")
        callbacks.insert(0, GrowthCallback(plan))
    transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks).train()
    assert model.config.num_hidden_layers == 8
    return steps_per_second(timer.times)


def lightning_worker(grown: bool, steps: int) -> float:
    import lightning
    import timm
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from growres.integrations.lightning import GrowthCallback

    class Classifier(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            name, kwargs = ("growres_resnet50i", {}) if grown else ("growres_resnet50", {"layers": (8, 8, 8)})
            self.model = timm.create_model(name, num_classes=10, in_chans=1, **kwargs)

        def training_step(self, batch, batch_idx):
            images, labels = batch
            return F.cross_entropy(self.model(images), labels)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    torch.manual_seed(0)
    module = Classifier()
    images = torch.randn(steps * 32, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (steps * 32,), generator=torch.Generator().manual_seed(1))
    loader = DataLoader(TensorDataset(images, labels), batch_size=32)
    timer = step_times_callback(lightning.Callback)
    callbacks = [timer]
    if grown:
        callbacks.insert(0, GrowthCallback(growres.GrowthPlan(cycles=GROWTH_STEPS, total=steps, unit="step")))
    trainer = lightning.Trainer(max_steps=steps, accelerator="cpu", devices=1, callbacks=callbacks, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loader)
    assert growres.stage_layers(module.model) == (8, 8, 8)
    return steps_per_second(timer.times)


WORKERS = {"transformers": transformers_worker, "lightning": lightning_worker}
VARIANTS = ("grown", "built", "built-default")  # built-default: without growres' malloc setting


# -- the driver ------------------------------------------------------------------------------------------------


def measure(trainer: str, variant: str, steps: int, threads: int) -> float:
    command = [sys.executable, __file__, "--worker", trainer, "--variant", variant, "--steps", str(steps)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TQDM_DISABLE="1", HF_HUB_OFFLINE="1")
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{trainer} {variant} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["steps_per_s"]


def markdown(result: dict) -> str:
    lines = [
        "# Trainer overhead: grown with GrowthCallback against built at the final depth",
        "",
        f"Machine: {result['machine']['cpu']} ({', '.join(result['machine']['cpu_flags'])}; ATen "
        f"{result['machine']['aten_cpu_capability']}), {result['threads']} thread(s) per process; "
        f"{result['conditions']}.",
        f"{result['repeats']} interleaved repeats of {result['steps']} optimizer steps, timed after step "
        f"{GROWTH_STEPS[-1] + WARMUP}; steps/s min / median / max.",
        "",
        "| trainer | model | grown with GrowthCallback | built at the final depth | grown / built (medians) "
        "| built, glibc's malloc defaults |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in result["trainers"].items():
        cells = [" / ".join(f"{row[v][k]:.2f}" for k in ("min", "median", "max")) for v in VARIANTS]
        lines.append(f"| {name} | {row['model']} | {cells[0]} | {cells[1]} | {row['ratio']:.3f} | {cells[2]} |")
    return "\n".join(lines) + "\n"


MODELS = {"transformers": "LlamaForCausalLM 2 -> 4 -> 8 layers, hidden 128",
          "lightning": "growres_resnet50i 2-2-2 -> 8-8-8"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60, help="Optimizer steps per run (default 60).")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--trainers", nargs="+", choices=tuple(WORKERS), default=list(WORKERS))
    parser.add_argument("--conditions", default="nothing else running",
                        help="What else ran on the machine meanwhile, for the report.")
    parser.add_argument("--output", type=Path, default=RESULTS / "trainer_overhead")
    parser.add_argument("--worker", choices=tuple(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.variant == "built":
            growres.keep_freed_cpu_memory()  # as GrowthCallback does for the grown model
        print(json.dumps({"steps_per_s": WORKERS[args.worker](args.variant == "grown", args.steps)}))
        return

    speeds = {name: {variant: [] for variant in VARIANTS} for name in args.trainers}
    for repeat in range(args.repeats):
        for name in args.trainers:
            for variant in VARIANTS[repeat % 3:] + VARIANTS[:repeat % 3]:  # interleaved, the order rotating
                speeds[name][variant].append(measure(name, variant, args.steps, args.threads))
                print(f"{name} {variant}: {speeds[name][variant][-1]:.2f} steps/s", flush=True)
    trainers = {}
    for name, runs in speeds.items():
        row = {variant: spread(values) for variant, values in runs.items()}
        trainers[name] = {"model": MODELS[name], **row, "ratio": row["grown"]["median"] / row["built"]["median"],
                          "raw": runs}
    result = {"date": datetime.date.today().isoformat(), "machine": machine.describe(), "threads": args.threads,
              "conditions": args.conditions, "repeats": args.repeats, "steps": args.steps, "trainers": trainers}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
