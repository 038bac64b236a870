"""What this machine computes natively, and the precision `model.dtype: auto` picks from it.

bf16 pays only where the hardware has it: on a CPU without AVX512-BF16 or AMX, PyTorch emulates bf16 and a
Gemma-3-270M LoRA step was measured many times slower than in float32; with AVX512-BF16 a 2048x2048 matmul ran 4.3x
faster in bf16 than in float32 on 2 cores (bench/results/train_speed.md). `torch.backends.cpu.get_cpu_capability()`
says only "AVX512" on such a CPU, so the CPU's own flags are read.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from tooltune.errors import ToolTuneError

DTYPES = ("float32", "bfloat16", "float16")
"""The weight dtypes tooltune loads and saves by name (and `auto`, resolved by `resolve_dtype`)."""

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""/proc/cpuinfo flags of x86 CPUs that run bf16 matmuls natively (AVX512-BF16, AMX)."""


def _cpuinfo_field(names: tuple[str, ...], cpuinfo: str | None) -> str | None:
    """The first /proc/cpuinfo line's value whose key is one of `names` (None where there is none or no file)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in names:
            return value.strip()
    return None


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty where it cannot be read)."""
    return set((_cpuinfo_field(("flags", "Features"), cpuinfo) or "").split())


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU's model name, for benchmark reports (/proc/cpuinfo, else what the platform module says)."""
    import platform

    return _cpuinfo_field(("model name",), cpuinfo) or platform.processor() or platform.machine() or "CPU"


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether bf16 runs natively here: a CUDA GPU, or a CPU with AVX512-BF16 or AMX."""
    import torch

    if torch.cuda.is_available():
        return True
    if any(flag in cpu_flags() for flag in BF16_CPU_FLAGS):
        return True
    capability = torch.backends.cpu.get_cpu_capability()
    return "BF16" in capability or "AMX" in capability


def resolve_dtype(name: str) -> str:
    """A dtype name as loaded: `auto` becomes bfloat16 where bf16 is native, else float32; others pass through."""
    if name != "auto":
        return name
    return "bfloat16" if native_bf16() else "float32"


def torch_dtype(name: Any) -> Any:
    """The torch dtype of a dtype name, `auto` resolved for this machine (`resolve_dtype`); a torch dtype or None
    passes through. The one place a dtype name becomes a torch dtype."""
    import torch

    if name is None or isinstance(name, torch.dtype):
        return name
    resolved = resolve_dtype(name)
    if resolved not in DTYPES:
        raise ToolTuneError(f"unknown dtype {name!r}: use one of {', '.join(DTYPES)} or 'auto'")
    return getattr(torch, resolved)


def describe(name: str) -> str:
    """What `name` resolves to here, and why, for the run's log and run.json."""
    resolved = resolve_dtype(name)
    if name != "auto":
        return resolved
    return f"{resolved} (auto: {'native bf16 here' if resolved == 'bfloat16' else 'no native bf16 here'})"
