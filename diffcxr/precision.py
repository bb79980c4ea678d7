"""Which number format the denoiser and decoder run in, chosen once when a generator loads.

Why a rule and not a benchmark at load time: the choice changes every pixel, so it must be the same each
time the same model loads on the same machine (seeded requests give the same image). The rule asks the
hardware what it has:

- ``bf16`` runs where the hardware multiplies bfloat16 natively — a CUDA GPU that supports it, or a CPU with
  AVX512-BF16 or AMX tiles. Elsewhere bfloat16 is emulated: on a 2-core AMD EPYC with AVX2 only (2026-12-05)
  a 1024² bf16 matmul ran at 0.8 GFLOP/s against 71.6 in fp32, and the paper-size U-ViT forward was 10×
  slower, so ``auto`` never picks it there.
- ``auto`` picks bf16 only where it is native **and** :data:`AUTO_BF16` is on: the quality check on the
  ``small`` generator (``benchmarks/precision_quality.py``) decides that flag, not an assumption.
- ``fp32`` / ``bf16`` force a format (a forced ``bf16`` on a CPU without it works, slowly).

An image depends on (request, seed, model, steps, guidance) *and* on the precision, the torch thread count
and the machine's instruction set: :func:`runtime_record` is what every response and image file records.
"""

from __future__ import annotations

from typing import Literal

import torch

Precision = Literal["fp32", "bf16"]
PrecisionSetting = Literal["auto", "fp32", "bf16"]
PRECISION_SETTINGS: tuple[str, ...] = ("auto", "fp32", "bf16")
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}

#: Whether ``auto`` uses bf16 where the hardware has it. Set by the measured quality check on the ``small``
#: generator (mAUC within 0.01 and domain FID within 5 % of fp32 on the same seeds; docs/DIFFUSION.md,
#: *Precision*): on 400 test reports bf16 scored mAUC 0.8555 vs 0.8548 and domain FID 95.97 vs 94.35 (+1.7 %),
#: benchmarks/results/precision_quality_small_2026-12-05.json.
AUTO_BF16 = True


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """True where bfloat16 matrix multiplication runs in hardware on ``device``."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(setting: str | None, device: str | torch.device = "cpu") -> Precision:
    """The format a generator runs in for ``setting`` (``auto``/None, ``fp32``, ``bf16``) on ``device``."""
    setting = "auto" if setting is None else setting
    if setting not in PRECISION_SETTINGS:
        from diffcxr.errors import ConfigError

        raise ConfigError(f"precision: must be one of {', '.join(PRECISION_SETTINGS)}, got {setting!r}")
    if setting == "auto":
        return "bf16" if AUTO_BF16 and native_bf16(device) else "fp32"
    return setting  # type: ignore[return-value]


def runtime_record(precision: Precision, device: str | torch.device = "cpu") -> dict[str, object]:
    """What an image's exact bytes depend on besides the request and the model: stored with every image."""
    device = torch.device(device)
    isa = torch.cuda.get_device_name(device) if device.type == "cuda" else torch.backends.cpu.get_cpu_capability()
    return {"precision": precision, "threads": torch.get_num_threads(), "isa": isa}
