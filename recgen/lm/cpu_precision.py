"""Which precision vLLM's ``dtype: auto`` should mean on this CPU.

vLLM runs a float32 checkpoint in bfloat16 on CPU by default. Where the CPU has no native bf16 arithmetic
(AVX-512 BF16 or AMX on x86, the BF16 extension on Arm) the bf16 kernels are emulated: on an AMD EPYC with AVX2
only, 10 grammar-reason prompts took 28-31 s in bf16 and 4.5-4.9 s in float32 with SmolLM2-135M (session 33,
quiet; eval/results/serving/NOTES.md), and every served list under load ran into its deadline. So ``auto`` on
a CPU resolves to bfloat16 only where bf16 is native, float32 elsewhere.
"""

from __future__ import annotations

from pathlib import Path

#: CPU flags (Linux ``/proc/cpuinfo``: x86 ``flags``, Arm ``Features``) that mean native bf16 arithmetic.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The first processor's feature flags, or None where the kernel does not say (not Linux)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return None


def cpu_dtype(requested: str, flags: frozenset[str] | None) -> str:
    """``requested`` unless it is ``auto``: then bfloat16 with native bf16 flags, float32 without them, and
    ``auto`` (vLLM decides) when the flags are unknown."""
    if requested != "auto" or flags is None:
        return requested
    return "bfloat16" if flags & NATIVE_BF16_FLAGS else "float32"
