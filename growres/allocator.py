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
import os
import platform

__all__ = ["keep_freed_cpu_memory"]

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
