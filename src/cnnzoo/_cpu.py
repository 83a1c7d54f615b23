"""What the CPU can do natively, for choices that depend on it (bf16 autocast, benchmarks)."""

from __future__ import annotations

import torch


def cpu_bf16_hardware() -> str | None:
    """The CPU feature that runs bf16 convolutions and matmuls natively ("AMX" or "avx512_bf16"),
    or None: then oneDNN falls back to reference kernels, measured 7-11x slower than fp32 on an
    AVX2-only Zen 3 (issue 18)."""
    cpu = getattr(torch, "cpu", None)
    for name, probe in (("AMX", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported")):
        check = getattr(cpu, probe, None)
        if check is not None and check():
            return name
    return None
