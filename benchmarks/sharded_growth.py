"""What growing a sharded (FSDP2) model costs each rank: shard-local growth against the gather path, measured, on paper.

Measured (CPU, gloo, ``torchrun`` on this machine): a ViT whose full model is 1, 2 and 4 times one rank's shard (world
sizes 1, 2, 4), sharded per block and at the root, trained one step with AdamW (so every parameter has its two
moments), then grown 4 -> 8 blocks the way ``GrowthScheduler`` does (``grow_sharded`` + ``rebuild_optimizer``), once
shard-locally and once through the gather path (``grow_sharded(..., shard_local=False)``: every parameter gathered
to its full tensor on every rank, FSDP removed, the plain model grown and sharded again). Per rank: the growth's wall
time, how far the resident memory rose during it (``growres.allocator.peak_resident_memory``: peak RSS above its
start, after freed heap memory went back to the OS), and the collectives it ran (``CommDebugMode``, on a second,
unmeasured growth). Each (world size, path) runs in fresh processes, interleaved over the repeats.

On paper: the same accounting for a Llama-3-8B-shaped model on 64 ranks (fp32 sharded parameters with AdamW, as FSDP2
with a bf16 ``MixedPrecisionPolicy`` keeps them), with the formulas the measured runs check:

* shard-local: the new blocks' shards and their optimizer state, ``new / W * bytes * (1 + states)``;
* gather: at least the grown model's full parameters on every rank and all of its new shards, made while the full
  tensors are alive, ``grown * bytes * (1 + 1 / W)`` (the new optimizer state is copied once they are freed, into
  memory they leave only in part).

    python benchmarks/sharded_growth.py            # 3 repeats x world sizes 1, 2, 4 x both paths (~10 min, 2 cores)
    python benchmarks/sharded_growth.py --quick    # a small model, one repeat: a smoke test
    python benchmarks/sharded_growth.py --report   # re-render the committed results only

Results: benchmarks/results/sharded_growth.{json,md}, with the machine (``machine.describe()``) and its load.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine

RESULTS = Path(__file__).parent / "results"
WORLD_SIZES = (1, 2, 4)
PATHS = ("shard-local", "gather")
REPEATS = 3
# 50.4 M parameters (202 MB in fp32), 101 M (403 MB) grown: several times a rank's shard on 2 and 4 ranks
MODEL = dict(model_name="vit_tiny_patch16_224", depth=4, img_size=32, patch_size=8, embed_dim=1024, num_heads=16)
QUICK_MODEL = dict(MODEL, embed_dim=256, num_heads=4)
FP32, ADAMW_STATES = 4, 2  # bytes per parameter; moments per parameter (AdamW's step is one scalar)
MiB, GB = 2**20, 10**9


def accounting(old: int, new: int, world: int, bytes_per_param: int = FP32, states: int = ADAMW_STATES) -> dict:
    """Bytes per rank, from parameter counts: before growth (shards and optimizer state), and what each path adds
    during growth (its extra peak), by the formulas of the module docstring."""
    grown = old + new
    return {
        "steady": old / world * bytes_per_param * (1 + states),
        "shard-local": new / world * bytes_per_param * (1 + states),
        "gather": grown * bytes_per_param * (1 + 1 / world),
    }


# -- Llama-3-8B, on paper ------------------------------------------------------------------------------------------

LLAMA3_8B = dict(layers=32, hidden=4096, intermediate=14336, heads=32, kv_heads=8, vocab=128256)


def llama_params(layers: int, hidden: int, intermediate: int, heads: int, kv_heads: int, vocab: int) -> dict:
    """Parameters of a Llama-3-shaped decoder: per layer (attention with grouped KV heads, SwiGLU MLP, two RMSNorms)
    and outside the layers (untied embedding and LM head, final norm)."""
    head_dim = hidden // heads
    per_layer = (hidden * hidden * 2 + hidden * kv_heads * head_dim * 2  # q, o; k, v
                 + hidden * intermediate * 3 + hidden * 2)  # gate, up, down; the two norms
    return {"per_layer": per_layer, "other": vocab * hidden * 2 + hidden, "total": per_layer * layers
            + vocab * hidden * 2 + hidden}


def on_paper(world: int = 64) -> list[dict]:
    """Growth to Llama-3-8B (16 -> 32 layers) and of it (32 -> 64), per rank on ``world`` ranks."""
    counts = llama_params(**LLAMA3_8B)
    rows = []
    for before in (16, 32):
        old = counts["per_layer"] * before + counts["other"]
        new = counts["per_layer"] * before  # copy: a new layer for each layer
        rows.append({"layers": [before, 2 * before], "params_before": old, "params_after": old + new,
                     "world_size": world, **accounting(old, new, world)})
    return rows


# -- measured: the worker (one process per rank, under torchrun) ---------------------------------------------------


def worker(path: str, out: str, model_kwargs: dict, count_collectives: bool) -> None:
    import timm
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor.debug import CommDebugMode

    import growres
    from growres import rebuild_optimizer
    from growres.allocator import peak_resident_memory
    from growres.sharding import grow_sharded

    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    mesh = init_device_mesh("cpu", (world,))
    growres.keep_freed_cpu_memory()  # as GrowthScheduler sets it on a CPU

    def local_bytes(tensor):
        tensor = tensor.to_local() if isinstance(tensor, DTensor) else tensor
        return tensor.numel() * tensor.element_size()

    def sharded_and_trained():
        torch.manual_seed(0)
        model = timm.create_model(**model_kwargs, num_classes=10)
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(rank)
        images, labels = torch.randn(2, 3, 32, 32, generator=gen), torch.randint(0, 10, (2,), generator=gen)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return model, optimizer

    def grow(model, optimizer):
        sources = grow_sharded(model, "copy", shard_local=path == "shard-local")
        return rebuild_optimizer(optimizer, model, sources)

    model, optimizer = sharded_and_trained()
    old_params = sum(p.numel() for p in model.parameters())
    steady = sum(local_bytes(p) for p in model.parameters()) + sum(
        local_bytes(t) for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor))
    dist.barrier()
    with peak_resident_memory() as memory:
        started = time.perf_counter()
        optimizer = grow(model, optimizer)
        seconds = time.perf_counter() - started
    record = {"rank": rank, "seconds": seconds, "extra": memory.get("extra"), "base": memory.get("base"),
              "steady": steady, "old_params": old_params,
              "grown_params": sum(p.numel() for p in model.parameters()), "blocks": len(model.blocks)}
    del model, optimizer
    if count_collectives:  # on a fresh model, so the measured growth ran without CommDebugMode's bookkeeping
        model, optimizer = sharded_and_trained()
        with CommDebugMode() as comms:
            grow(model, optimizer)
        record["collectives"] = {str(op): count for op, count in comms.get_comm_counts().items()}
    if rank == 0:
        record["machine"] = machine.describe()  # as the ranks ran: one thread each
    records = [None] * world
    dist.all_gather_object(records, record)
    if rank == 0:
        Path(out).write_text(json.dumps(records))
    dist.barrier()
    dist.destroy_process_group()


# -- measured: the launcher ----------------------------------------------------------------------------------------


def launch(world: int, path: str, model_kwargs: dict, count_collectives: bool, workdir: Path) -> dict:
    out = workdir / f"{world}-{path}-{time.monotonic_ns()}.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world),
               __file__, "--worker", path, str(out), json.dumps(model_kwargs), str(int(count_collectives))]
    load = os.getloadavg()[0]
    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if result.returncode:
        sys.exit(f"world size {world}, {path}: failed\n{result.stderr[-4000:]}")
    return {"world_size": world, "path": path, "load_average": [load, os.getloadavg()[0]],
            "ranks": json.loads(out.read_text())}


def summarize(runs: list[dict]) -> list[dict]:
    """Per (world size, path): over repeats, the slowest rank's seconds and the highest rank's extra memory."""
    rows = []
    for world in WORLD_SIZES:
        for path in PATHS:
            mine = [run for run in runs if run["world_size"] == world and run["path"] == path]
            if not mine:
                continue
            seconds = [max(rank["seconds"] for rank in run["ranks"]) for run in mine]
            extra = [max(rank["extra"] for rank in run["ranks"]) for run in mine]
            first = mine[0]["ranks"][0]
            old, grown = first["old_params"], first["grown_params"]
            counted = next((run["ranks"] for run in mine if "collectives" in run["ranks"][0]), None)
            rows.append({
                "world_size": world, "path": path, "repeats": len(mine),
                "seconds": [statistics.median(seconds), min(seconds), max(seconds)],
                "extra": [statistics.median(extra), min(extra), max(extra)],
                "predicted_extra": accounting(old, grown - old, world)[path],
                "steady": max(rank["steady"] for run in mine for rank in run["ranks"]),
                "old_params": old, "grown_params": grown,
                "collectives": None if counted is None else [sum(rank["collectives"].values()) for rank in counted],
                "load_average": [min(r["load_average"][0] for r in mine), max(r["load_average"][1] for r in mine)],
            })
    return rows


def markdown(result: dict) -> str:
    m = result["model"]
    rows = summarize(result["runs"])
    lines = [
        "# Growing a sharded model: shard-local growth against the gather path",
        "",
        f"{result['date']} · {machine.line(result['machine'])} · torch {result['torch']} · gloo on CPU, one thread "
        f"per rank · load average {result['load_average'][0]:.1f} at the start, {result['load_average'][1]:.1f} at "
        "the end (the machine's 2 cores were shared with other jobs: the seconds are noisy, the memory is not)",
        "",
        f"Model: timm `{m['model_name']}` with embed_dim {m['embed_dim']}, {m['num_heads']} heads, "
        f"{rows[0]['old_params'] / 1e6:.1f} M parameters at {m['depth']} blocks, "
        f"{rows[0]['grown_params'] / 1e6:.1f} M ({rows[0]['grown_params'] * FP32 / MiB:.0f} MiB in fp32) grown to "
        f"{2 * m['depth']}; each block and the root sharded with `fully_shard`, AdamW, one step, then one growth "
        "(`grow_sharded` + `rebuild_optimizer`, as `GrowthScheduler` does). Per rank, over "
        f"{result['repeats']} repeats (median, min–max; each the slowest rank's seconds and the highest rank's "
        "memory):",
        "",
        "| ranks | path | growth s | extra memory per rank during growth, MiB | predicted (gather: at least), MiB | "
        "shards + AdamW "
        "state per rank before, MiB | collectives during growth (per rank) | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        s, e = row["seconds"], row["extra"]
        comms = "—" if row["collectives"] is None else ", ".join(map(str, row["collectives"]))
        lines.append(f"| {row['world_size']} | {row['path']} | {s[0]:.3f} ({s[1]:.3f}–{s[2]:.3f}) | "
                     f"{e[0] / MiB:.1f} ({e[1] / MiB:.1f}–{e[2] / MiB:.1f}) | {row['predicted_extra'] / MiB:.1f} | "
                     f"{row['steady'] / MiB:.1f} | {comms} | {row['load_average'][0]:.1f}–"
                     f"{row['load_average'][1]:.1f} |")
    by = {(row["world_size"], row["path"]): row for row in rows}
    lines += ["", "Gather path / shard-local, per rank:", ""]
    for world in WORLD_SIZES:
        if (world, "gather") in by and (world, "shard-local") in by:
            g, s = by[world, "gather"], by[world, "shard-local"]
            lines.append(f"- {world} rank(s): memory {g['extra'][0] / s['extra'][0]:.1f}x, time "
                         f"{g['seconds'][0] / s['seconds'][0]:.1f}x")
    lines += [
        "",
        "Predicted: shard-local `new / W × 4 B × (1 + 2)` (the new blocks' fp32 shards and their two AdamW moments), "
        "gather at least `grown × 4 B × (1 + 1/W)` (the grown model's full parameters on every rank, plus all of "
        "its new shards, made while the full tensors are still alive; the new AdamW state, copied after they are "
        "freed, adds what it cannot fit into the memory they leave). The shard-local extra does not depend on the "
        "model outside the new blocks, and falls as 1/W; the gather path's never falls below the full grown model.",
        "",
        "## On paper: a Llama-3-8B-shaped model on 64 ranks",
        "",
        "32 layers, hidden 4096, MLP 14336, 32 heads with 8 KV heads, vocabulary 128256 (untied embedding and LM "
        f"head): {llama_params(**LLAMA3_8B)['total'] / 1e9:.2f} B parameters, "
        f"{llama_params(**LLAMA3_8B)['per_layer'] / 1e6:.1f} M per layer. fp32 sharded parameters and AdamW's two "
        "fp32 moments (what FSDP2 keeps under a bf16 `MixedPrecisionPolicy`); gradients and activations, which "
        "growth between steps does not touch, left out. Per rank, by the formulas above (which the measured rows "
        "check):",
        "",
        "| growth | parameters before → after | shards + AdamW state per rank before | shard-local: extra per rank "
        "during growth | gather path: extra per rank during growth (at least) |",
        "|---|---|---|---|---|",
    ]
    for row in result["on_paper"]:
        lines.append(f"| {row['layers'][0]} → {row['layers'][1]} layers on {row['world_size']} ranks | "
                     f"{row['params_before'] / 1e9:.2f} B → {row['params_after'] / 1e9:.2f} B | "
                     f"{row['steady'] / GB:.2f} GB | {row['shard-local'] / GB:.2f} GB | {row['gather'] / GB:.1f} GB |")
    into, of = result["on_paper"]
    lines += [
        "",
        f"The gather path needs at least the full grown model on every rank, whatever the number of ranks: "
        f"{into['gather'] / GB:.1f} GB per rank to grow into Llama-3-8B, {of['gather'] / GB:.1f} GB to grow it to "
        f"{of['layers'][1]} layers, next to {into['steady'] / GB:.2f} and {of['steady'] / GB:.2f} GB of shards and "
        f"state (on 80 GB accelerators that also hold activations). Shard-local growth needs "
        f"{into['shard-local'] / GB:.2f} and {of['shard-local'] / GB:.2f} GB, the new layers' share of one rank, "
        "and no communication.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small model, one repeat (a smoke test)")
    parser.add_argument("--report", action="store_true", help="re-render the committed results only")
    parser.add_argument("--output", type=Path, default=RESULTS / "sharded_growth")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        path, out, model_kwargs, count = args.worker
        worker(path, out, json.loads(model_kwargs), count == "1")
        return
    json_path, md_path = args.output.with_suffix(".json"), args.output.with_suffix(".md")
    if args.report:
        md_path.write_text(markdown(json.loads(json_path.read_text())))
        return
    import torch

    model_kwargs, repeats = (QUICK_MODEL, 1) if args.quick else (MODEL, REPEATS)
    runs, load_start = [], os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as workdir:
        for repeat in range(repeats):
            for world in WORLD_SIZES:
                order = PATHS if (repeat + world) % 2 == 0 else PATHS[::-1]  # which path goes first alternates
                for path in order:
                    run = launch(world, path, model_kwargs, count_collectives=repeat == 0, workdir=Path(workdir))
                    print(f"repeat {repeat}, {world} rank(s), {path}: "
                          f"{max(r['seconds'] for r in run['ranks']):.3f} s, "
                          f"{max(r['extra'] for r in run['ranks']) / MiB:.1f} MiB", flush=True)
                    runs.append(run)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": runs[0]["ranks"][0]["machine"], "torch": torch.__version__,
              "model": model_kwargs, "repeats": repeats, "load_average": [load_start, os.getloadavg()[0]],
              "runs": runs, "summary": summarize(runs), "on_paper": on_paper()}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1))
    md_path.write_text(markdown(result))
    print(md_path.read_text())


if __name__ == "__main__":
    main()
