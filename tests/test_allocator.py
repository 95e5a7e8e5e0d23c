"""growres.keep_freed_cpu_memory: a training step's freed buffers are re-used, not page-faulted back in.

Each case runs in a fresh process (malloc settings are per process and cannot be undone) and counts the minor
page faults of a step-like pattern: 48 MiB of buffers written, then freed, five times over after a warm-up.

glibc tunes its thresholds from what the process freed before (imports, compiling, data loading), so whether
the pattern trims in a fresh process depends on that history: the same script trimmed on one machine and not
on another. Each case therefore starts from the state glibc tunes itself to after freeing a 4 MiB block (mmap
threshold 4 MiB, trim threshold twice that), set explicitly; the step's 48 MiB then always exceed it.
"""
import os
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's malloc")

BUFFERS, BUFFER_PAGES, STEPS = 12, 1024, 5  # 12 buffers of 4 MiB a step
PAGES_TOUCHED = BUFFERS * BUFFER_PAGES * STEPS

SCRIPT = textwrap.dedent(f"""
    import ctypes, resource, sys
    import torch
    import growres
    from growres.allocator import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD

    how = sys.argv[1]
    if how != "users":  # glibc's own tuning after a freed 4 MiB block (the users' case sets theirs instead)
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 4 * 2**20)
        ctypes.CDLL(None).mallopt(M_TRIM_THRESHOLD, 8 * 2**20)
    if how in ("function", "users"):
        print("applied", growres.keep_freed_cpu_memory())
    elif how == "scheduler":  # a CPU model under GrowthScheduler sets it on its own
        model = growres.interpolate(__import__("timm").create_model("growres_resnet50i"))
        growres.GrowthScheduler(model, torch.optim.SGD(model.parameters(), lr=0.1), steps_per_epoch=1)

    def step():  # activations of a step: written (every page touched), then freed
        buffers = [torch.ones({BUFFER_PAGES} * 1024) for _ in range({BUFFERS})]
        del buffers

    for _ in range(3):  # warm-up
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range({STEPS}):
        step()
    print("faults", resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def run(how: str, **env: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    result = subprocess.run([sys.executable, "-c", SCRIPT, how], capture_output=True, text=True,
                            env=dict(environ, **env), check=True)
    return dict(line.split() for line in result.stdout.splitlines())


def test_without_it_glibc_faults_freed_memory_back_every_step():
    # the control: the pattern the setting exists for really happens here, so the tests below can fail
    assert int(run("none")["faults"]) > PAGES_TOUCHED // 2


@pytest.mark.parametrize("how", ["function", "scheduler"])
def test_freed_memory_is_reused_without_page_faults(how):
    out = run(how)
    assert out.get("applied", "True") == "True"
    assert int(out["faults"]) < PAGES_TOUCHED // 100


def test_the_users_own_malloc_settings_win():
    out = run("users", MALLOC_TRIM_THRESHOLD_="1048576")
    assert out["applied"] == "False"
    assert int(out["faults"]) > PAGES_TOUCHED // 2  # their threshold (1 MiB) trims, as they asked


PEAK_SCRIPT = textwrap.dedent("""
    import torch
    import growres
    from growres.allocator import peak_resident_memory

    growres.keep_freed_cpu_memory()
    kept = [torch.ones(2**20) for _ in range(32)]  # 128 MiB written, then freed: malloc keeps it resident
    del kept
    with peak_resident_memory() as idle:
        pass
    with peak_resident_memory() as used:
        block = torch.ones(6 * 2**20)  # 24 MiB, in memory malloc had kept: counted all the same
        del block
    print("idle", idle["extra"], "used", used["extra"])
""")


def test_peak_resident_memory_counts_what_a_block_touches_also_in_memory_malloc_kept():
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT], capture_output=True, text=True, check=True).stdout
    values = out.split()
    idle, used = int(values[1]), int(values[3])
    assert idle < 2**20
    assert 24 * 2**20 <= used < 26 * 2**20
