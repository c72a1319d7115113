"""DeepSeek-V3/R1's FP8 weights: block-scaled float8_e4m3fn, dequantized on the host.

The released checkpoints store most linear weights ``W [O, I]`` as float8 e4m3 (``fmt: e4m3``)
beside a float32 ``<name>_scale_inv [⌈O/bo⌉, ⌈I/bi⌉]``, one scale per ``bo × bi`` block
(``quantization_config.weight_block_size``, ``[128, 128]``); the last block of a row or column
is cut short when O or I is not a multiple. Dequantization is

    W[i, j] = fp8[i, j] · scale_inv[i // bo, j // bi]

(the name says the stored value is the inverse of the scale that quantized). ``quantize_fp8``
is the inverse, ``scale_inv = amax(|block|) / 448`` (448 = e4m3fn's largest value), so tests can
build an FP8 checkpoint without downloading one.

safetensors' numpy reader cannot return float8 tensors (it looks for a numpy float8 type that
numpy lacks), so ``read_safetensors`` memory-maps a file itself, with ml_dtypes' dtypes.
"""
from __future__ import annotations

import json
import math
import mmap
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import ml_dtypes
import numpy as np

FP8_DTYPE = np.dtype(ml_dtypes.float8_e4m3fn)
FP8_MAX = float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)  # 448
DEFAULT_BLOCK_SIZE = (128, 128)
SCALE_SUFFIX = "_scale_inv"

_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}


class FP8Error(ValueError):
    """An FP8 checkpoint whose weights and scales do not fit together."""


def block_size_of(config: Mapping[str, Any]) -> tuple[int, int] | None:
    """The ``(bo, bi)`` block of a ``config.json`` dict's fp8 ``quantization_config``; None
    when the checkpoint is not quantized."""
    quant = config.get("quantization_config")
    if not quant:
        return None
    method, fmt = quant.get("quant_method"), quant.get("fmt", "e4m3")
    if method != "fp8" or fmt != "e4m3":
        raise FP8Error(f"quantization_config {quant}: only quant_method 'fp8' with fmt 'e4m3' "
                       "(DeepSeek-V3/R1's) can be dequantized")
    block = tuple(quant.get("weight_block_size") or ())
    if len(block) != 2 or not all(isinstance(b, int) and b > 0 for b in block):
        raise FP8Error(f"quantization_config.weight_block_size must be two positive integers, "
                       f"got {quant.get('weight_block_size')!r}")
    return block  # type: ignore[return-value]


def _scale_shape(shape: tuple[int, ...], block_size: tuple[int, int]) -> tuple[int, int]:
    return tuple(math.ceil(d / b) for d, b in zip(shape, block_size))  # type: ignore[return-value]


def _check(name: str, w_OxI: np.ndarray, scale_inv: np.ndarray, block_size) -> None:
    if w_OxI.ndim != 2:
        raise FP8Error(f"{name}: block-scaled FP8 weights are matrices, got shape {w_OxI.shape}")
    expected = _scale_shape(w_OxI.shape, block_size)
    if tuple(scale_inv.shape) != expected:
        raise FP8Error(f"{name}{SCALE_SUFFIX} has shape {list(scale_inv.shape)}, but a weight of "
                       f"shape {list(w_OxI.shape)} in {block_size[0]}×{block_size[1]} blocks "
                       f"needs {list(expected)}")


def dequantize_fp8(w_OxI, scale_inv, block_size=DEFAULT_BLOCK_SIZE, dtype=np.float32,
                   name: str = "weight") -> np.ndarray:
    """``W[i, j] = w[i, j] · scale_inv[i // bo, j // bi]`` as ``dtype`` (float32 or bfloat16),
    computed in float32 one row of blocks at a time (no full-size float32 scale map)."""
    w_OxI, scale_inv = np.asarray(w_OxI), np.asarray(scale_inv, np.float32)
    _check(name, w_OxI, scale_inv, block_size)
    (rows, cols), (bo, bi) = w_OxI.shape, block_size
    out = np.empty((rows, cols), np.dtype(dtype))
    for r in range(scale_inv.shape[0]):
        block_rows = slice(r * bo, min(rows, (r + 1) * bo))
        scale_row_I = np.repeat(scale_inv[r], bi)[:cols]
        out[block_rows] = (w_OxI[block_rows].astype(np.float32) * scale_row_I).astype(out.dtype)
    return out


def quantize_fp8(w_OxI, block_size=DEFAULT_BLOCK_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``(fp8 weight, scale_inv)`` with ``scale_inv = amax(|block|) / 448`` per block (1 for an
    all-zero block), rounded to nearest: a round trip is off by at most 2⁻⁴·|W| for values in
    e4m3's normal range and 2⁻¹⁰·scale_inv below it."""
    w_OxI = np.asarray(w_OxI, np.float32)
    if w_OxI.ndim != 2:
        raise FP8Error(f"block-scaled FP8 weights are matrices, got shape {w_OxI.shape}")
    (rows, cols), (bo, bi) = w_OxI.shape, block_size
    nbo, nbi = _scale_shape(w_OxI.shape, block_size)
    padded = np.zeros((nbo * bo, nbi * bi), np.float32)
    padded[:rows, :cols] = w_OxI  # zero padding never raises a block's amax
    blocks = padded.reshape(nbo, bo, nbi, bi)
    amax = np.abs(blocks).max(axis=(1, 3))
    scale_inv = np.where(amax > 0, amax / FP8_MAX, 1.0).astype(np.float32)
    scaled = np.clip(blocks / scale_inv[:, None, :, None], -FP8_MAX, FP8_MAX)
    w_fp8 = scaled.reshape(padded.shape)[:rows, :cols].astype(FP8_DTYPE)
    return w_fp8, scale_inv


def _to_numpy(x) -> np.ndarray:
    """numpy view of a numpy array or a torch tensor (from ``safe_open(framework="pt")``), with
    float8 and bfloat16 as ml_dtypes types (numpy has neither)."""
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.split(".")[0] == "torch":
        torch = sys.modules["torch"]  # already imported, or x could not exist
        x = x.detach().cpu()
        raw = {torch.float8_e4m3fn: (torch.uint8, FP8_DTYPE),
               torch.bfloat16: (torch.int16, np.dtype(ml_dtypes.bfloat16))}.get(x.dtype)
        if raw is not None:
            return x.view(raw[0]).numpy().view(raw[1])
        return x.numpy()
    return np.asarray(x)


def dequantize_tensors(tensors, block_size=DEFAULT_BLOCK_SIZE, dtype=np.float32
                       ) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, array)`` of every tensor of a checkpoint, FP8 weights dequantized to ``dtype`` and
    the ``*_scale_inv`` tensors dropped; other tensors pass through unchanged (lazily read).

    ``tensors`` is a name → array mapping (``read_safetensors``) or a ``safe_open`` handle (its
    ``keys()`` and ``get_tensor``). A float8 tensor without its scale, or a scale without its
    weight, raises ``FP8Error``.
    """
    names = list(tensors.keys())
    get = tensors.get_tensor if hasattr(tensors, "get_tensor") else tensors.__getitem__
    present = set(names)
    for name in names:
        if name.endswith(SCALE_SUFFIX):
            weight_name = name[:-len(SCALE_SUFFIX)]
            if weight_name not in present:
                raise FP8Error(f"{name}: a block scale with no weight {weight_name!r}")
            continue
        value = _to_numpy(get(name))
        scale_name = name + SCALE_SUFFIX
        if scale_name in present:
            yield name, dequantize_fp8(value, _to_numpy(get(scale_name)), block_size, dtype, name)
        elif value.dtype == FP8_DTYPE:
            raise FP8Error(f"{name} is float8_e4m3fn but the checkpoint has no {scale_name!r} "
                           "to dequantize it with")
        else:
            yield name, value


def quantize_tensors(tensors: Mapping[str, np.ndarray], should_quantize,
                     block_size=DEFAULT_BLOCK_SIZE) -> dict[str, np.ndarray]:
    """A checkpoint in DeepSeek's FP8 form: each tensor for which ``should_quantize(name, array)``
    holds becomes float8 with a ``<name>_scale_inv`` beside it; the rest are kept."""
    out: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        if should_quantize(name, value):
            out[name], out[name + SCALE_SUFFIX] = quantize_fp8(value, block_size)
        else:
            out[name] = np.asarray(value)
    return out


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Every tensor of a ``.safetensors`` file as a read-only memory-mapped numpy array (float8
    and bfloat16 as ml_dtypes types); nothing is read until an array is used.

    The format: an 8-byte little-endian header length, a JSON header mapping each name to its
    ``dtype``, ``shape`` and ``data_offsets`` (relative to the end of the header), then the data.
    """
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a safetensors file ({e})") from None
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']}, which r1jax "
                             "does not read")
        begin, end = info["data_offsets"]
        buffer = memoryview(data)[8 + header_len + begin:8 + header_len + end]
        tensors[name] = np.frombuffer(buffer, _SAFETENSORS_DTYPES[info["dtype"]]).reshape(
            info["shape"])
    return tensors
