"""Launching scripts under real 2-process DDP on CPU (gloo), as the README documents."""
import os
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
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(num_processes),
               *script_args]
    env = dict(env or os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
