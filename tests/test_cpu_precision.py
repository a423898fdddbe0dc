"""vLLM's ``dtype: auto`` on CPU: bfloat16 only where bf16 is native (recgen.lm.cpu_precision)."""

from __future__ import annotations

from recgen.config import LMSettings
from recgen.lm import vllm_engine as ve
from recgen.lm.cpu_precision import cpu_dtype, cpu_flags

AMD_AVX2 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\n"
INTEL_AMX = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"


def test_auto_is_bfloat16_only_where_the_cpu_has_native_bf16(tmp_path):
    flags = {}
    for name, text in (("amd", AMD_AVX2), ("intel", INTEL_AMX), ("arm", ARM_BF16)):
        (tmp_path / name).write_text(text)
        flags[name] = cpu_flags(tmp_path / name)
    assert "avx2" in flags["amd"] and "avx512_bf16" not in flags["amd"]
    assert cpu_dtype("auto", flags["amd"]) == "float32"
    assert cpu_dtype("auto", flags["intel"]) == "bfloat16" and cpu_dtype("auto", flags["arm"]) == "bfloat16"
    assert cpu_dtype("bfloat16", flags["amd"]) == "bfloat16"  # asked for: kept
    assert cpu_flags(tmp_path / "missing") is None and cpu_dtype("auto", None) == "auto"  # unknown: vLLM decides


def test_engine_arguments_carry_the_resolved_dtype(tiny_lm_dir, monkeypatch):
    monkeypatch.setattr(ve, "cpu_flags", lambda: frozenset({"avx2"}))
    assert ve.engine_kwargs(LMSettings(backend="vllm", model=str(tiny_lm_dir)))["dtype"] == "float32"
    monkeypatch.setattr(ve, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert ve.engine_kwargs(LMSettings(backend="vllm", model=str(tiny_lm_dir)))["dtype"] == "bfloat16"
    assert ve.engine_kwargs(LMSettings(backend="vllm", model=str(tiny_lm_dir), dtype="float32"))["dtype"] == "float32"
    assert ve.engine_dtype(LMSettings(backend="vllm", device="cuda")) == "auto"
