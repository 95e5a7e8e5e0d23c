"""What a benchmark ran on: the CPU model, the vector features torch's kernels depend on, and the kernels chosen.

Speeds differ by 2x between the CPUs this project runs on (AVX-512 with AVX512-BF16 against AVX2 only), and torch
picks its kernels by these features (ATen by ``ATEN_CPU_CAPABILITY``, oneDNN by ``ONEDNN_MAX_CPU_ISA``), so every
result records them beside its numbers.
"""
import os
import platform
from pathlib import Path

import torch

# the flags of /proc/cpuinfo that decide which kernels torch runs (and how fast bf16 is)
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """The CPU's model name and which of KERNEL_FLAGS it has (Linux; elsewhere platform's processor string)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return platform.processor() or platform.machine(), []
    model, flags = platform.processor(), set()
    for line in cpuinfo.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    return model, [flag for flag in KERNEL_FLAGS if flag in flags]


def describe() -> dict:
    """The machine as a JSON-ready dict."""
    model, flags = cpu_model_and_flags()
    return {
        "cpu": model, "cpu_flags": flags, "cores": os.cpu_count(), "arch": platform.machine(),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "native"),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def line(machine: dict) -> str:
    """One line for a Markdown report."""
    flags = ", ".join(machine["cpu_flags"]) or "none of " + ", ".join(KERNEL_FLAGS)
    gpu = f"{machine['gpu']} with " if machine.get("gpu") else ""
    return (f"{gpu}{machine['cpu']} ({machine['cores']} cores; {flags}) · "
            f"ATen kernels {machine['aten_cpu_capability']}, oneDNN ISA {machine['onednn_max_cpu_isa']}")
