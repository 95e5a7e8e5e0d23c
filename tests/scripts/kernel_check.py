"""Check that a narrower CPU capability really runs other kernels, and print the settings that select it.

CI runs the numerically sensitive tests a second time under narrower kernels than the machine's own (torch's
``ATEN_CPU_CAPABILITY``, oneDNN's ``ONEDNN_MAX_CPU_ISA``), so that a tolerance set on one machine's kernels fails
here rather than on someone else's machine. That second pass only proves something if the settings took effect:
this script computes a few float32 operations the tests depend on (matmul, linear, conv2d, layer_norm, softmax,
gelu, a sum over 2^20 terms) on fixed inputs, once under the machine's own kernels and once under the narrowed
settings (each in a fresh interpreter, since both are read when torch loads), and fails unless the narrowed run
reports a narrower ``torch.backends.cpu.get_cpu_capability()`` and at least one result differs in its bits.

Narrowing: AVX512 -> avx2 (oneDNN AVX2), AVX2 -> default (oneDNN SSE41), another capability (ARM's SVE, ...) ->
default (oneDNN untouched); or the capability given as the one argument (``avx2``: oneDNN AVX2, ``default``: oneDNN
SSE41). When the machine has nothing narrower (its own capability is already DEFAULT, or no wider than the one asked
for) the script says so on stderr, prints nothing and exits 0: the narrowed pass is skipped, not failed.

stdout: the settings, ``NAME=value`` words for ``env`` (e.g. ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``),
or nothing. Messages go to stderr. Exit status 1 when the narrowing did not take effect.

    narrowed=$(python tests/scripts/kernel_check.py)
    [ -z "$narrowed" ] || env $narrowed python -m pytest tests/test_growth.py ...
"""
import json
import os
import subprocess
import sys

SETTINGS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
KERNELS = {  # the settings of each narrower x86 capability, torch's and oneDNN's
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}
# what each capability is narrowed to; any other capability but DEFAULT is narrowed to default, oneDNN untouched
NARROWER = {"AVX512": KERNELS["avx2"], "AVX2": KERNELS["default"]}
RANK = {"DEFAULT": 0, "AVX2": 1, "AVX512": 2}  # x86; other architectures: DEFAULT is below all of them

PROBE = r"""
import hashlib, json
import torch
import torch.nn.functional as F

torch.set_num_threads(1)  # the same split of every reduction in both runs
gen = torch.Generator().manual_seed(0)
a, b = torch.randn(64, 256, generator=gen), torch.randn(256, 96, generator=gen)
x, w = torch.randn(2, 16, 16, 16, generator=gen), torch.randn(32, 16, 3, 3, generator=gen)
t = 1.5 * torch.randn(8, 6, 32, generator=gen) + 0.2
results = {
    "matmul": a @ b,
    "linear": F.linear(a, b.t().contiguous(), torch.randn(96, generator=gen)),
    "conv2d": F.conv2d(x, w, padding=1),
    "layer_norm": F.layer_norm(t, (32,)),
    "softmax": torch.softmax(3 * t, dim=-1),
    "gelu": F.gelu(t),
    "sum": torch.randn(1 << 20, generator=gen).sum().reshape(1),
}
bits = {name: hashlib.sha256(value.contiguous().numpy().tobytes()).hexdigest() for name, value in results.items()}
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "bits": bits}))
"""


def probe(settings: dict[str, str]) -> dict:
    """The probe's capability and result bits in a fresh interpreter with ``settings`` (and none inherited)."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    env.update(settings)
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def narrower_settings(capability: str, wanted: str | None) -> dict[str, str] | None:
    """The settings of a capability narrower than ``capability`` (``wanted``'s, if given), or None."""
    if wanted is not None:
        return KERNELS[wanted] if RANK[wanted.upper()] < RANK.get(capability, len(RANK)) else None
    if capability == "DEFAULT":
        return None
    return NARROWER.get(capability, {"ATEN_CPU_CAPABILITY": "default"})


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0] not in KERNELS):
        print(f"usage: kernel_check.py [{'|'.join(KERNELS)}]", file=sys.stderr)
        return 2
    native = probe({})
    settings = narrower_settings(native["capability"], argv[0] if argv else None)
    if settings is None:
        what = f"kernels narrower than {argv[0]}" if argv else "narrower kernels"
        print(f"kernel_check: this machine's own CPU capability is {native['capability']}: there are no {what} "
              "to test with; skipping the narrowed pass.", file=sys.stderr)
        return 0
    words = " ".join(f"{k}={v}" for k, v in settings.items())
    narrowed = probe(settings)
    differ = [name for name, bits in narrowed["bits"].items() if bits != native["bits"][name]]
    rank = (RANK.get(native["capability"], len(RANK)), RANK.get(narrowed["capability"], len(RANK)))
    if not rank[1] < rank[0]:
        print(f"kernel_check: FAILED: under {words} torch reports capability {narrowed['capability']}, not one "
              f"narrower than the machine's own {native['capability']}: the narrowing did not take effect.",
              file=sys.stderr)
        return 1
    if not differ:
        print(f"kernel_check: FAILED: under {words} (capability {narrowed['capability']}, the machine's own "
              f"{native['capability']}) every probe result is bit-identical to the machine's own: no other kernel "
              "is shown to have run.", file=sys.stderr)
        return 1
    same = [name for name in native["bits"] if name not in differ]
    print(f"kernel_check: {native['capability']} -> {narrowed['capability']} under {words}: other bits from "
          f"{', '.join(differ)}" + (f" (the same from {', '.join(same)})" if same else ""), file=sys.stderr)
    print(words)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
