"""Devices and dtypes: where a model runs, and the dtype ``auto`` picks for that hardware.

>>> resolve_device("cpu"), auto_dtype("cpu", cpu_bf16=True)
(device(type='cpu'), torch.bfloat16)
"""

from __future__ import annotations

import platform

import torch

from aura_core.errors import ModelLoadError

__all__ = [
    "auto_dtype",
    "cpu_has_native_bf16",
    "cuda_has_native_bf16",
    "resolve_auto_dtype",
    "resolve_device",
    "resolve_dtype",
]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ModelLoadError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but no CUDA GPU is visible: use --device cpu")
    return resolved


_DTYPES = {
    "auto": None,
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """The dtype a name stands for; None for ``auto``, which :func:`resolve_auto_dtype` settles per device.

    >>> resolve_dtype("bf16"), resolve_dtype("auto")
    (torch.bfloat16, None)
    """
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}: use one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def auto_dtype(device_type: str, *, cpu_bf16: bool = False, cuda_bf16: bool = False) -> torch.dtype:
    """What ``dtype="auto"`` is on a device with these capabilities: bfloat16 where it runs natively, else float32.

    A function of the capabilities alone, so every case can be checked on any machine;
    :func:`resolve_auto_dtype` asks torch about this one.

    >>> auto_dtype("cpu", cpu_bf16=True), auto_dtype("cpu"), auto_dtype("cuda", cuda_bf16=True), auto_dtype("mps")
    (torch.bfloat16, torch.float32, torch.bfloat16, torch.float32)
    """
    native = {"cpu": cpu_bf16, "cuda": cuda_bf16}.get(device_type, False)
    return torch.bfloat16 if native else torch.float32


_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware: AVX-512-BF16 or AMX on x86, the BF16 extension on Arm.

    oneDNN's own check also passes on plain AVX-512, which only emulates bfloat16 (and is no
    faster for it), so on x86 the instruction sets decide.

    >>> isinstance(cpu_has_native_bf16(), bool)
    True
    """
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        if platform.machine().lower() in _X86:
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # a torch build without these checks
        return False
    return True


def cuda_has_native_bf16() -> bool:
    """Whether the current CUDA GPU computes bfloat16 in hardware (Ampere or newer), not by emulation."""
    if not torch.cuda.is_available():
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # a torch that does not emulate, so has no such argument
        return bool(torch.cuda.is_bf16_supported())


def resolve_auto_dtype(device: str | torch.device | None = "auto") -> torch.dtype:
    """The dtype ``dtype="auto"`` gives a model loaded on ``device`` here.

    >>> resolve_auto_dtype("cpu") in (torch.bfloat16, torch.float32)
    True
    """
    target = resolve_device(device)
    return auto_dtype(
        target.type,
        cpu_bf16=target.type == "cpu" and cpu_has_native_bf16(),
        cuda_bf16=target.type == "cuda" and cuda_has_native_bf16(),
    )
