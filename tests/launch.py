"""Launching scripts under real 2-process DDP on CPU (gloo), as the README documents."""
import os
import re
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_launch(script_args: list[str], num_processes: int = 2, timeout: int = 600, env=None):
    """``accelerate launch --multi_gpu`` with ACCELERATE_USE_CPU=1: real DDP across processes on CPU.

    (``--cpu --num_processes 2`` would silently run a single process.)"""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), *script_args,
    ]
    env = dict(env or os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def torchrun(script_args: list[str], num_processes: int = 2, timeout: int = 600, env=None):
    """``torchrun --standalone --nproc-per-node N`` (it picks a free port): the launcher for torch's own APIs,
    such as FSDP2's ``fully_shard``, which accelerate does not shard with on CPU."""
    # --tee 3 prefixes each rank's lines "[defaultN]:", so that rank_tails can tell them apart; the fault handler
    # prints where a rank aborted (SIGABRT, as from a C++ exception), which it otherwise dies without saying
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(num_processes),
               "--tee", "3", *script_args]
    env = dict(env or os.environ, OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def rank_tails(result: subprocess.CompletedProcess, lines: int = 40) -> str:
    """The last ``lines`` of each rank's stderr, and of the launcher's own, from a ``torchrun`` run.

    The rank that fails first is the root cause; the others then fail too (a reset connection in a collective),
    and whichever fails last would fill the tail of the interleaved stream."""
    by_rank: dict[str, list[str]] = {}
    for line in result.stderr.splitlines():
        match = re.match(r"\[default(\d+)\]:(.*)", line)
        rank, text = (f"rank {match[1]}", match[2]) if match else ("launcher", line)
        by_rank.setdefault(rank, []).append(text)
    return "\n".join(f"--- {rank} ---\n" + "\n".join(text[-lines:]) for rank, text in sorted(by_rank.items()))
