"""Keep freed CPU memory in the process, so a training step does not page-fault its activations back in.

Why growres does this (measured in ``benchmarks/README.md``): every CPU training step allocates its activations
and gradients, then frees them. glibc's malloc hands the freed top of its heap back to the OS once it exceeds a
*trim threshold*, which it tunes on its own to twice the largest block it last saw freed (a few MiB for these
models). Whether the freed memory sits at the top of the heap depends on what else the heap holds, and growth
changes that: a model grown from 2-2-2 to 8-8-8 blocks took 35,000-65,000 minor page faults per step (its
whole activation memory, faulted back in every step) where the same architecture built directly took none, and
stepped ~17% slower. Keeping freed memory removes the faults for both.

Two settings, both needed (``mallopt(3)``): ``M_TRIM_THRESHOLD = -1`` never gives the heap top back, and
``M_MMAP_THRESHOLD`` at glibc's maximum (32 MiB on 64-bit) serves blocks up to that size from the heap instead
of a fresh ``mmap`` that ``free`` unmaps. Setting either one alone switches off glibc's own tuning and leaves
the other at its 128 KiB default: the trim threshold alone made every activation an ``mmap``, 5x more faults.
The cost: the process keeps its peak heap rather than shrinking between steps, which a training run reaches
again at its next step anyway. Blocks above 32 MiB are still mapped and unmapped by the OS.

GPU memory is not affected (CUDA's caching allocator already keeps it); nor is anything on a non-glibc system.
Settings of the user's own (``MALLOC_*_`` variables or ``GLIBC_TUNABLES``) are left alone.
"""
import ctypes
import gc
import os
import platform
from contextlib import contextmanager
from pathlib import Path

__all__ = ["keep_freed_cpu_memory", "peak_resident_memory"]

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
NEVER_TRIM = -1  # mallopt(3): "Setting M_TRIM_THRESHOLD to -1 disables trimming completely"
MAX_MMAP_THRESHOLD = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)  # glibc's DEFAULT_MMAP_THRESHOLD_MAX

_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_applied = False


def keep_freed_cpu_memory() -> bool:
    """Make glibc keep freed memory for reuse (see the module docstring); once per process.

    Returns whether the settings are in force: False on a non-glibc system, when glibc refused them, or
    when the user configured malloc through the environment (their choice wins).
    """
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in _USER_SETTINGS) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; the mmap threshold first, so a refusal leaves trimming as it was
    _applied = mallopt(M_MMAP_THRESHOLD, MAX_MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1
    return _applied


def _status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == field:
            number, unit = value.split()
            assert unit == "kB", line
            return int(number) * 1024
    raise KeyError(field)


@contextmanager
def peak_resident_memory():
    """Measure how far the process's resident memory rises above its start within the ``with`` block (Linux).

    Yields a dict that holds, after the block, ``base`` (resident bytes at the start), ``peak`` (the highest resident
    bytes within the block) and ``extra`` (``peak - base``); it stays empty where the kernel does not let a process
    reset its peak (``/proc/self/clear_refs``) or malloc is not glibc's.

    Freed memory that malloc keeps (:func:`keep_freed_cpu_memory`) is resident, and allocations within the block
    would reuse it without raising the resident size: so at the start, garbage is collected and ``malloc_trim(0)``
    hands every free page back to the OS, and each page the block then touches raises the count. What
    it counts is what the OS sees: tensors and everything else (Python objects, allocator slack), to the page.
    """
    result = {}
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
        base = _status_bytes("VmRSS")
    except (OSError, AttributeError, KeyError):  # not Linux, not glibc, or a kernel that refuses the reset
        base = None
    yield result
    if base is not None:
        result.update(base=base, peak=_status_bytes("VmHWM"))
        result["extra"] = result["peak"] - base
