"""Grow a small transformers language model during training, with accelerate (multi-level training of a decoder).

    python examples/train_lm.py --output-dir runs/lm-grown                 # 2 -> 4 -> 8 layers
    python examples/train_lm.py --output-dir runs/lm-full --full-depth     # 8 layers throughout, same LR restarts
    python examples/plot_lm_runs.py runs/lm-grown runs/lm-full --output docs/train-lm-loss.png

The model is a stock Llama (or GPT-2, ``--family gpt2``) built from a config, with no downloaded weights; the
text is the English of the Debian package ``fortunes`` (``apt-get install fortunes``: about 2.5 MB of quotations
and literature under /usr/share/games/fortunes), read as bytes, so the tokenizer is the identity on 0..255.
``GrowthScheduler`` sets the cyclic cosine learning rate (Eq. 9 of the paper), grows the model at the cycle
starts (each layer followed by its copy, every residual branch halved; ``--strategy stack`` repeats the whole
stack instead, G_stack's operator) and carries AdamW's state over to the new layers. Each run writes
``metrics.jsonl`` (validation loss against training seconds) and the final model as an ordinary
``save_pretrained`` folder. ``accelerate launch examples/train_lm.py ...`` runs it under DDP
(checked with two CPU processes); ``--batch-size`` is per process.
"""
import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, TensorDataset

import growres

FORTUNES = Path("/usr/share/games/fortunes")


def load_fortunes(directory: Path = FORTUNES) -> torch.Tensor:
    """Every fortune file's bytes, concatenated in name order (the .dat indexes and .u8 links left out)."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.is_symlink() and p.suffix == "")
    if not files:
        raise growres.GrowresError(f"No text under {directory}: install the Debian package with "
                                   "`apt-get install fortunes`.")
    data = b"".join(p.read_bytes() for p in files)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def chunks(data: torch.Tensor, block_size: int) -> torch.Tensor:
    """Non-overlapping windows of ``block_size`` bytes: each is its own next-byte target (the model shifts)."""
    count = len(data) // block_size
    return data[: count * block_size].view(count, block_size)


def build_model(family: str, layers: int, args: argparse.Namespace):
    import transformers
    common = dict(vocab_size=256, num_hidden_layers=layers, hidden_size=args.hidden_size,
                  num_attention_heads=args.heads, max_position_embeddings=args.block_size)
    if family == "llama":
        config = transformers.LlamaConfig(intermediate_size=4 * args.hidden_size, **common)
        return transformers.LlamaForCausalLM(config)
    config = transformers.GPT2Config(n_inner=4 * args.hidden_size, **common)
    return transformers.GPT2LMHeadModel(config)


@torch.no_grad()
def validation_loss(model, batches: list[torch.Tensor]) -> float:
    model.eval()
    losses = [model(input_ids=batch, labels=batch).loss.item() for batch in batches]
    model.train()
    return sum(losses) / len(losses)


def training_function(args: argparse.Namespace) -> list[dict]:
    accelerator = Accelerator()
    set_seed(args.seed)
    windows = chunks(load_fortunes(args.text_dir), args.block_size)
    generator = torch.Generator().manual_seed(args.seed)
    windows = windows[torch.randperm(len(windows), generator=generator)]
    held_out = windows[: args.eval_batches * args.batch_size]
    train_loader = DataLoader(TensorDataset(windows[len(held_out):]), batch_size=args.batch_size, shuffle=True,
                              generator=generator, drop_last=True)
    eval_batches = [b.to(accelerator.device) for b in held_out.split(args.batch_size)]

    final_layers = args.layers * 2 ** args.growths
    model = build_model(args.family, final_layers if args.full_depth else args.layers, args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr_max, weight_decay=args.weight_decay)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    # the paper's schedule (growths at 60/160 and 110/160 of the run for two) in optimizer steps;
    # at full depth the same learning-rate restarts without growth
    paper = growres.GrowthPlan.paper(interpolations=args.growths, total=args.steps, grow=not args.full_depth)
    plan = dataclasses.replace(paper, unit="step")
    scheduler = growres.GrowthScheduler(model, optimizer, plan, lr_max=args.lr_max, lr_min=args.lr_min,
                                        strategy=args.strategy, accelerator=accelerator)

    metrics, seconds, step = [], 0.0, 0
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    log = (output / "metrics.jsonl").open("w") if accelerator.is_main_process else None
    while step < args.steps:
        for (batch,) in train_loader:
            started = time.perf_counter()
            loss = scheduler.model(input_ids=batch, labels=batch).loss
            scheduler.optimizer.zero_grad()
            accelerator.backward(loss)
            scheduler.optimizer.step()
            record = scheduler.step()  # grows at a cycle start
            seconds += time.perf_counter() - started
            step += 1
            if step % args.eval_every == 0 or step == args.steps or record is not None:
                row = dict(step=step, seconds=round(seconds, 3), train_loss=loss.item(),
                           val_loss=validation_loss(scheduler.model, eval_batches), lr=scheduler.lr,
                           layers=scheduler.layers[0], grew=record is not None)
                metrics.append(row)
                if log is not None:
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    print(f"step {step}: {row['layers']} layers, val loss {row['val_loss']:.3f}, {seconds:.1f}s")
            if step == args.steps:
                break
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        log.close()
        accelerator.unwrap_model(scheduler.model).save_pretrained(output / "final")
    accelerator.end_training()  # destroys the process group: gloo's teardown at interpreter exit can abort
    return metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", required=True, help="Where metrics.jsonl and final/ go.")
    parser.add_argument("--family", choices=("llama", "gpt2"), default="llama")
    parser.add_argument("--layers", type=int, default=2, help="Layers at the start (default 2).")
    parser.add_argument("--growths", type=int, default=2, help="Times the model doubles its layers (default 2).")
    parser.add_argument("--strategy", choices=growres.STRATEGIES, default="copy",
                        help="How to grow (default copy, the paper's; stack: G_stack's; growres list --strategies).")
    parser.add_argument("--full-depth", action="store_true",
                        help="Train the final depth from the start (the baseline), with the same LR restarts.")
    parser.add_argument("--steps", type=int, default=160, help="Optimizer steps (default 160; growth at 60 and 110).")
    parser.add_argument("--batch-size", type=int, default=16, help="Sequences per process and step (default 16).")
    parser.add_argument("--block-size", type=int, default=64, help="Bytes per sequence (default 64).")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--lr-max", type=float, default=2e-3)
    parser.add_argument("--lr-min", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--eval-every", type=int, default=10, help="Steps between validation losses (default 10).")
    parser.add_argument("--eval-batches", type=int, default=8, help="Held-out batches (default 8).")
    parser.add_argument("--text-dir", type=Path, default=FORTUNES, help="The fortune files (Debian: fortunes).")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        training_function(parse_args(argv))
    except growres.GrowresError as err:
        print(f"train_lm.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
