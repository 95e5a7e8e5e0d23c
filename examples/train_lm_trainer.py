"""Grow a byte-level Llama inside the Hugging Face Trainer (multi-level training with GrowthCallback).

    python examples/train_lm_trainer.py --output-dir runs/lm-trainer             # 2 -> 4 -> 8 layers
    python examples/train_lm_trainer.py --output-dir runs/lm-trainer --resume    # from its last checkpoint
    torchrun --nproc-per-node 2 examples/train_lm_trainer.py --output-dir runs/lm-trainer-ddp

The model is a stock ``LlamaForCausalLM`` built from a config, with no downloaded weights; the text is the English
of the Debian package ``fortunes`` read as bytes (see ``examples/train_lm.py``, which grows the same model in an
accelerate loop). The Trainer is ``GrowthTrainer``: ``transformers.Trainer`` with growres' mixin, which keeps DDP
replicas right through growth and grows a freshly built model to a checkpoint's depth before resuming. In a single
process, a plain ``Trainer(..., callbacks=[GrowthCallback()])`` grows the same way; resume it after
``grow_to_checkpoint(model, checkpoint)``.
"""
import argparse
import sys
from pathlib import Path

import torch
import transformers
from train_lm import FORTUNES, chunks, load_fortunes

import growres
from growres.integrations.transformers import GrowthCallback, GrowthTrainer


def byte_datasets(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """Windows of the text, shuffled once with the seed, the first ``eval_windows`` held out."""
    windows = chunks(load_fortunes(args.text_dir), args.block_size)
    windows = windows[torch.randperm(len(windows), generator=torch.Generator().manual_seed(args.seed))]
    as_examples = lambda rows: [{"input_ids": row, "labels": row} for row in rows]  # noqa: E731
    return as_examples(windows[args.eval_windows:]), as_examples(windows[:args.eval_windows])


def training_function(args: argparse.Namespace) -> dict:
    # 1. the text, as bytes: the tokenizer is the identity on 0..255
    train_set, eval_set = byte_datasets(args)

    # 2. a Llama at the starting depth, from a config
    transformers.set_seed(args.seed)
    config = transformers.LlamaConfig(vocab_size=256, num_hidden_layers=args.layers, hidden_size=args.hidden_size,
                                      intermediate_size=4 * args.hidden_size, num_attention_heads=args.heads,
                                      num_key_value_heads=args.heads, max_position_embeddings=args.block_size)
    model = transformers.LlamaForCausalLM(config)

    # 3. the Trainer, with the callback that grows the model at the paper's proportions of the run (60/160 and
    # 110/160 of max_steps) and sets the learning rate of Eq. 9 (restarting at each growth)
    training_args = transformers.TrainingArguments(
        args.output_dir, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, weight_decay=args.weight_decay, eval_strategy="steps",
        eval_steps=args.eval_every, logging_steps=args.eval_every, save_steps=args.save_every,
        report_to=[], use_cpu=not torch.cuda.is_available(), seed=args.seed, disable_tqdm=True,
    )
    trainer = GrowthTrainer(model=model, args=training_args, train_dataset=train_set, eval_dataset=eval_set,
                            callbacks=[GrowthCallback()])

    # 4. train (from the last checkpoint with --resume: GrowthTrainer grows the fresh model to its depth first)
    trainer.train(resume_from_checkpoint=True if args.resume else None)
    metrics = trainer.evaluate()
    trainer.save_model(str(Path(args.output_dir) / "final"))  # an ordinary save_pretrained folder, 8 layers
    if trainer.is_world_process_zero():
        print(f"{model.config.num_hidden_layers} layers, validation loss {metrics['eval_loss']:.3f} nats/byte")
    # 5. destroy the process group before exit (Trainer.end() in newer transformers): gloo's teardown at interpreter
    # exit can abort the process
    trainer.accelerator.end_training()
    return metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", required=True, help="The Trainer's output_dir (checkpoints, final/).")
    parser.add_argument("--resume", action="store_true", help="Resume from the last checkpoint in --output-dir.")
    parser.add_argument("--layers", type=int, default=2, help="Layers at the start (default 2; 8 at the end).")
    parser.add_argument("--steps", type=int, default=800, help="Optimizer steps (default 800: growth at 300, 550).")
    parser.add_argument("--batch-size", type=int, default=16, help="Sequences per process and step (default 16).")
    parser.add_argument("--block-size", type=int, default=64, help="Bytes per sequence (default 64).")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="η_max of Eq. 9 (default 2e-3).")
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--eval-every", type=int, default=100, help="Steps between validation losses (default 100).")
    parser.add_argument("--save-every", type=int, default=200, help="Steps between checkpoints (default 200).")
    parser.add_argument("--eval-windows", type=int, default=256, help="Held-out sequences (default 256).")
    parser.add_argument("--text-dir", type=Path, default=FORTUNES, help="The fortune files (Debian: fortunes).")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        training_function(parse_args(argv))
    except growres.GrowresError as err:
        print(f"train_lm_trainer.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
